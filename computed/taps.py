"""One tap device per networked instance, on the host's bridge (as nova-compute's VIF
plugging does for a Linux bridge). The VMM attaches to the tap by name.

Done with ioctls (TUNSETPERSIST, SIOCBRADDIF, SIOCSIFFLAGS) in the cffi module
rather than by running `ip` three times per instance: a launch burst of
instances spends its CPU on the VMMs, not on forks.
"""

from __future__ import annotations

import os

from computed.vmm._kvm import lib


class TapError(RuntimeError):
    pass


def tap_name(uuid: str) -> str:
    """tap + the first 11 hex digits of the uuid: unique enough, and within IFNAMSIZ (15)."""
    return "tap" + uuid.replace("-", "")[:11]


def ensure_tap(name: str, bridge: str) -> None:
    """Create the tap if it is missing, put it on `bridge`, bring it up. Idempotent."""
    err = lib.vmm_tap_plug(name.encode(), bridge.encode())
    if err < 0:
        raise TapError(f"tap {name} on bridge {bridge}: {os.strerror(-err)}")


def remove_tap(name: str) -> None:
    """Delete the tap; a tap that is already gone is fine."""
    lib.vmm_tap_remove(name.encode())
