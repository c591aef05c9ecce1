"""One tap device per networked instance, on the host's bridge (as nova-compute's VIF
plugging does for a Linux bridge). The VMM attaches to the tap by name."""

from __future__ import annotations

import subprocess


class TapError(RuntimeError):
    pass


def tap_name(uuid: str) -> str:
    """tap + the first 11 hex digits of the uuid: unique enough, and within IFNAMSIZ (15)."""
    return "tap" + uuid.replace("-", "")[:11]


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def ensure_tap(name: str, bridge: str) -> None:
    """Create the tap if it is missing, put it on `bridge`, bring it up. Idempotent."""
    if _ip("link", "show", "dev", name).returncode != 0:
        done = _ip("tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr")
        if done.returncode != 0:
            raise TapError(f"cannot create tap {name}: {done.stderr.strip()}")
    for args in (
        ("link", "set", "dev", name, "master", bridge),
        ("link", "set", "dev", name, "up"),
    ):
        done = _ip(*args)
        if done.returncode != 0:
            raise TapError(f"tap {name} on bridge {bridge}: {done.stderr.strip()}")


def remove_tap(name: str) -> None:
    """Delete the tap; a tap that is already gone is fine."""
    _ip("link", "delete", "dev", name)
