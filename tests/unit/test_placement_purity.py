"""The placement core imports numpy, the stdlib and record types, and nothing that does I/O.

Checked in a fresh interpreter: in this one, other tests have long since
imported grpc and the etcd client, which would hide a regression.
"""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

CORE = (
    "scheduler.decide",
    "scheduler.placement",
    "scheduler.host_table",
    "scheduler.cluster_view",
    "scheduler.instance_reports",
    "scheduler.filters",
    "scheduler.weighers",
)
# Packages whose modules, one plugin each, are all part of the core.
PLUGIN_PACKAGES = ("scheduler.filters", "scheduler.weighers")
FORBIDDEN = (
    "grpc",
    "pyetcd",
    "computed.store.client",
    "computed.api",
    "google.protobuf",
    "agent",
    "psutil",
)

_PROBE = """
import importlib, json, pkgutil, sys
for name in {core!r}:
    importlib.import_module(name)
for package in {plugin_packages!r}:
    for info in pkgutil.iter_modules(sys.modules[package].__path__, package + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def loaded_by_the_core() -> list[str]:
    probe = _PROBE.format(core=CORE, plugin_packages=PLUGIN_PACKAGES)
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_placement_core_loads_no_io_modules():
    loaded = loaded_by_the_core()
    assert "scheduler.filters.ram" in loaded and "scheduler.weighers.ram" in loaded
    assert [m for m in loaded if any(_within(m, bad) for bad in FORBIDDEN)] == []
    outside_core = [
        m
        for m in loaded
        if _within(m, "scheduler") and m != "scheduler" and not any(_within(m, c) for c in CORE)
    ]
    assert outside_core == []
