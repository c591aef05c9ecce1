"""virtio-net over a tap device: the device model, and the choice of its data path.

The device model is what every NIC has whoever moves its frames: the device
ID, the features offered, the config space (the MAC), the tap, and the calls
the virtio-mmio transport makes (activate at DRIVER_OK, kick, reset), which it
hands on to its data path (`net_path.py` says what one is):

- `vhost=on`: kicks arrive on ioeventfds and interrupts leave through an
  irqfd. The kernel's vhost-net serves the queues where /dev/vhost-net (or
  `vhostdev=`) accepts us (`net_path_kernel.py`; query-vm says `"vhost":
  "kernel"`); elsewhere (these hosts) a `vhost-<pid>` thread of ours serves
  them from the same eventfds (`"vhost": "userspace"`, with the reason).
- `vhost=off`: kicks come as vCPU exits, a `net-rx` thread serves the
  receive side (`net_path_userspace.py`).

The tap carries a 12-byte virtio_net_hdr_v1 before each frame (IFF_VNET_HDR).
"""

from __future__ import annotations

import os

from computed.vmm._kvm import lib
from computed.vmm.devices.net_path import HDR_SIZE
from computed.vmm.devices.net_path_kernel import KernelVhostPath
from computed.vmm.devices.net_path_userspace import UserspaceVhostPath, VcpuExitPath
from computed.vmm.devices.vhost_kernel import VhostNet, VhostUnavailable
from computed.vmm.devices.virtio_mmio import F_VERSION_1
from computed.vmm.errors import UsageError
from computed.vmm.memory import GuestMemory

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from collections.abc import Callable

    from computed.vmm.devices.net_path import NetDataPath
    from computed.vmm.devices.virtio_mmio import VirtioMmio
    from computed.vmm.devices.virtqueue import Virtqueue

F_MAC = 1 << 5
DEVICE_ID = 1  # virtio 1.x, 5: network card


def open_tap(ifname: str) -> int:
    """The tap's fd, carrying a virtio_net_hdr_v1 before each frame. Only a VMM run by
    hand opens its tap (the agent hands its VMMs theirs): the helper loads then."""
    from computed.taps import TapError
    from computed.taps import open_tap as open_named_tap

    try:
        return open_named_tap(ifname, HDR_SIZE)
    except TapError as e:
        raise UsageError(f"-netdev tap,ifname={ifname}: {e}") from None


def choose_data_path(
    ifname: str,
    tap: int,
    vhost: bool,
    vhost_device: str,
    memory: GuestMemory,
    log: Callable[[str], None],
    vhost_fd: int | None = None,
) -> tuple[NetDataPath, str]:
    """The data path that serves this NIC, and why not the kernel's vhost-net ("" if
    it serves or was not asked for): the kernel's where it accepts us, else ours."""
    if not vhost:
        return VcpuExitPath(tap), ""
    try:
        return KernelVhostPath(VhostNet(vhost_device, memory, tap, vhost_fd)), ""
    except VhostUnavailable as e:
        if vhost_fd is not None or os.path.exists(vhost_device):  # refused: worth a line
            log(f"{ifname}: kernel vhost-net refused ({e}); the userspace worker serves")
        return UserspaceVhostPath(tap), str(e)


class VirtioNet:
    device_id = DEVICE_ID
    features = F_VERSION_1 | F_MAC
    queue_max = lib.COMPUTED_VIRTIO_QUEUE_MAX

    def __init__(
        self,
        ifname: str,
        mac: bytes,
        vhost: bool,
        vhost_device: str,
        memory: GuestMemory,
        log: Callable[[str], None],
        tap: int | None = None,
        vhost_fd: int | None = None,
    ) -> None:
        """`tap`, `vhost_fd`: fds handed in (`-netdev tap,fd=N,vhostfd=M`, as the agent
        does); else the VMM opens `ifname` and `vhost_device` itself (run by hand, as root)."""
        self.ifname, self.mac = ifname, mac
        self.tap = open_tap(ifname) if tap is None else tap
        self.path, self.vhost_note = choose_data_path(
            ifname, self.tap, vhost, vhost_device, memory, log, vhost_fd
        )
        self.transport: VirtioMmio | None = None

    # --- wiring into the VM --------------------------------------------------------
    def attach(self, vm_fd: int, transport: VirtioMmio, mmio_gpa: int, irq: int) -> None:
        self.transport = transport
        self.path.attach(vm_fd, transport, mmio_gpa, irq)

    def start(self) -> None:
        self.path.start()

    def close(self) -> None:
        self.path.close()
        os.close(self.tap)

    def signal_guest(self) -> None:
        """The vhost paths' interrupt, by irqfd: machine.py routes only theirs here (a
        `VhostDataPath`); the vcpu-exits path's goes through KVM_IRQ_LINE."""
        self.path.signal_guest()

    # --- the transport's calls -----------------------------------------------------
    def config(self) -> bytes:
        return self.mac

    def activate(self, queues: list[Virtqueue]) -> None:
        self.path.activate(queues)

    def kick(self, queue: int) -> None:
        self.path.kick(queue)

    def reset(self) -> None:
        self.path.reset()

    def describe(self) -> dict[str, object]:
        t = self.transport
        return {
            "ifname": self.ifname,
            "mac": ":".join(f"{b:02x}" for b in self.mac),
            "data_path": self.path.name,
            "vhost": self.path.kind,
            "vhost_note": self.vhost_note,
            "broken": t.broken if t is not None else "",
            "notify_exits": t.notify_exits if t is not None else 0,
            **self.path.counters(),
        }
