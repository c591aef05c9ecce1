"""Command lines taken from our systemd units, so the dev cluster runs what production runs.

The unit's ExecStart= gives the program and its flags; the dev cluster only
swaps the installed path for this checkout's (same program name) and
overrides the values of flags that differ per host (config file, addresses).
Type=notify units are started the way systemd starts them: with
$NOTIFY_SOCKET set, and counted as up only on READY=1 (processes.py).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping

UNIT_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "systemd")


class UnitError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Unit:
    name: str
    argv: tuple[str, ...]  # ExecStart, split as systemd does (no shell)
    notify: bool  # Type=notify


def parse_unit(name: str, text: str) -> Unit:
    """ExecStart and Type from a unit file's [Service] section. Pure."""
    section, exec_start, kind = "", None, "simple"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]" and key.strip() == "ExecStart":
            exec_start = value.strip().lstrip("-@:+!")
        elif section == "[Service]" and key.strip() == "Type":
            kind = value.strip()
    if not exec_start:
        raise UnitError(f"{name}: no ExecStart= in [Service]")
    return Unit(name, tuple(shlex.split(exec_start)), kind == "notify")


def load_unit(name: str, unit_dir: str = UNIT_DIR) -> Unit:
    path = os.path.join(unit_dir, name)
    try:
        with open(path) as f:
            return parse_unit(name, f.read())
    except OSError as e:
        raise UnitError(f"cannot read unit {path}: {e.strerror}") from None


def command(unit: Unit, bin_dir: str, flags: Mapping[str, str]) -> list[str]:
    """The unit's ExecStart with the program taken from `bin_dir` and `flags` (e.g.
    {"--listen": "127.0.0.1:9000"}) replacing the unit's values or appended. Pure."""
    argv = [os.path.join(bin_dir, os.path.basename(unit.argv[0]))]
    rest = list(unit.argv[1:])
    pending = dict(flags)
    i = 0
    while i < len(rest):
        arg = rest[i]
        name, eq, value = arg.partition("=")
        if name in pending and eq:
            argv.append(f"{name}={pending.pop(name)}")
        elif arg in pending and i + 1 < len(rest):
            argv += [arg, pending.pop(arg)]
            i += 1
        else:
            argv.append(arg)
        i += 1
    for name, value in pending.items():
        argv += [name, value]
    return argv


def without_flags(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """argv without the flags `names` and their values (`--x v` or `--x=v`). Pure."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif arg.partition("=")[0] not in names:
            out.append(arg)
    return out
