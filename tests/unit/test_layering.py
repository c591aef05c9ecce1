"""The dependency rules of docs/architecture.md, checked against every import in the tree.

Read statically (ast), so a rule holds for code paths the tests never run:
a lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("computed", "agent", "scheduler")

# The placement core: decisions over numpy columns and record types, no I/O.
PLACEMENT_CORE = (
    "scheduler.placement",
    "scheduler.decide",
    "scheduler.host_table",
    "scheduler.cluster_view",
    "scheduler.instance_reports",
    "scheduler.filters",
    "scheduler.weighers",
)
# What the VMM may import beyond the stdlib and itself: one process per instance pays
# for every import, and a guest that takes the VMM over should find no network client.
VMM_MAY_IMPORT = (
    "computed.vmm",
    "computed.limits",
    "computed.exit_codes",
    "computed.status",
    "computed.taps",
    "computed._host",  # the host calls it shares with the agent: taps, madvise
    "computed.procfs",
    "computed.guests.bundled",
    "computed.guest_image",  # the image rules, shared with the scheduler and the SDK
    "cffi",  # the build scripts only
)
# (package, imports it must not make), as docs/architecture.md lists them.
FORBIDDEN = (
    ("computed.vmm", ("grpc", "pyetcd", "etcd3", "google.protobuf", "agent", "scheduler",
                      "computed.store", "computed.api", "psutil", "numpy")),
    ("agent", ("scheduler",)),
    ("scheduler", ("agent", "computed.vmm", "psutil")),
    ("computed.cli", ("computed.store", "computed.vmm", "scheduler", "agent", "pyetcd")),
    ("computed.store", ("agent", "scheduler", "computed.vmm", "grpc_health")),
)  # fmt: skip


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, absolute, with `from x import y` also naming x.y."""
    tree = ast.parse(path.read_text(), str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _sources() -> dict[str, set[str]]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "_pb2" not in path.name:
                modules[_module_name(path)] = _imports(path)
    return modules


SOURCES = _sources()


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize(("package", "forbidden"), FORBIDDEN, ids=[p for p, _ in FORBIDDEN])
def test_packages_keep_to_their_layer(package, forbidden):
    broken = sorted(
        f"{module} imports {name}"
        for module, names in SOURCES.items()
        if _within(module, package)
        for name in names
        if any(_within(name, bad) for bad in forbidden)
    )
    assert not broken, "\n".join(broken)


def test_the_vmm_imports_only_the_stdlib_and_its_shared_modules():
    ours = ("computed", "agent", "scheduler", "grpc", "pyetcd", "psutil", "numpy", "google")
    broken = sorted(
        f"{module} imports {name}"
        for module, names in SOURCES.items()
        if _within(module, "computed.vmm")
        for name in names
        if any(_within(name, top) for top in ours)
        and not any(_within(name, ok) for ok in VMM_MAY_IMPORT)
        and name not in ("computed", "computed.guests")
    )
    assert not broken, "\n".join(broken)


def test_the_placement_core_does_no_io():
    allowed = (*PLACEMENT_CORE, "numpy", "computed.store.records", "computed.store.keys",
               "computed.store.errors", "computed.store.ops", "computed.capacity",
               "computed.errors", "computed.status")  # fmt: skip
    broken = sorted(
        f"{module} imports {name}"
        for module, names in SOURCES.items()
        if any(_within(module, core) for core in PLACEMENT_CORE)
        for name in names
        if name.split(".")[0] in ("computed", "scheduler", "agent", "grpc", "pyetcd", "psutil")
        and not any(_within(name, ok) for ok in allowed)
        and name not in ("computed", "computed.store", "scheduler")
    )
    assert not broken, "\n".join(broken)


def test_no_package_imports_another_packages_private_modules():
    """A module whose name starts with `_` (a cffi extension, say) is its package's alone."""
    broken = []
    for module, names in SOURCES.items():
        for name in names:
            parts = name.split(".")
            private = [i for i, p in enumerate(parts) if p.startswith("_") and p != "__future__"]
            if not private or parts[0] not in PACKAGES:
                continue
            owner = ".".join(parts[: private[0]])
            if not _within(module, owner):
                broken.append(f"{module} imports {name}")
    assert not broken, "\n".join(sorted(broken))


def test_starting_a_vmm_loads_no_rpc_or_etcd_client():
    """The import graph at run time, not only the text: the VMM's entry point as it starts."""
    probe = (
        "import sys, computed.vmm.main\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('grpc', 'pyetcd', 'google', 'psutil', 'numpy', 'agent', 'scheduler')"
        " or m.startswith(('computed.store', 'computed.api'))]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert out == ""
