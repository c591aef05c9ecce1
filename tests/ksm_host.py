"""The host's same-page merging settings (/sys/kernel/mm/ksm), for the tests and the
benches that change them. They are host-wide: whatever changes them puts them back."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from agent.ksm import KSM_RUN

KSM_DIR = os.path.dirname(KSM_RUN)


def available() -> bool:
    return os.path.exists(KSM_RUN)


def read(name: str) -> str:
    with open(os.path.join(KSM_DIR, name)) as f:
        return f.read().strip()


def write(name: str, value: str) -> None:
    with open(os.path.join(KSM_DIR, name), "w") as f:
        f.write(value)


@contextlib.contextmanager
def ksm_settings(**values: str) -> Iterator[None]:
    """Set /sys/kernel/mm/ksm/<name> for the block (none: only keep `run` as found, for
    code inside that may start KSM); put back as found after. Nothing where the kernel
    has no KSM."""
    if not available():
        yield
        return
    found = {name: read(name) for name in [*values, "run"]}
    try:
        for name, value in values.items():
            write(name, value)
        yield
    finally:
        for name, value in found.items():
            write(name, value)
