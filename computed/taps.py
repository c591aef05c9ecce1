"""Tap devices: the agent plugs one per networked instance into the host's bridge (as
nova-compute's VIF plugging does for a Linux bridge) and opens it for the VMM; the VMM
opens one itself only when run by hand with `-netdev tap,ifname=`.

Done with ioctls (TUNSETPERSIST, SIOCBRADDIF, SIOCSIFFLAGS) in the cffi module
`computed._host` (computed/host_build.py)
rather than by running `ip` three times per instance: a launch burst of
instances spends its CPU on the VMMs, not on forks.
"""

from __future__ import annotations

import os

from computed._host import lib

# struct virtio_net_hdr_v1: what VIRTIO_F_VERSION_1 devices put before every frame.
VNET_HDR_SIZE = 12


class TapError(RuntimeError):
    pass


def tap_name(uuid: str) -> str:
    """tap + the first 11 hex digits of the uuid: unique enough, and within IFNAMSIZ (15)."""
    return "tap" + uuid.replace("-", "")[:11]


def ensure_tap(name: str, bridge: str) -> None:
    """Create the tap if it is missing, put it on `bridge`, bring it up. Idempotent."""
    err = lib.host_tap_plug(name.encode(), bridge.encode())
    if err < 0:
        raise TapError(f"tap {name} on bridge {bridge}: {os.strerror(-err)}")


def open_tap(name: str, vnet_hdr_size: int = VNET_HDR_SIZE) -> int:
    """A non-blocking fd on tap `name` (created if absent) carrying virtio-net headers."""
    fd = lib.host_tap_open(name.encode(), vnet_hdr_size)
    if fd < 0:
        raise TapError(f"tap {name}: {os.strerror(-fd)}")
    return fd


def remove_tap(name: str) -> None:
    """Delete the tap; a tap that is already gone is fine."""
    lib.host_tap_remove(name.encode())
