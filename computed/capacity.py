"""What a host offers and what its instances take. Pure.

Allocation ratios as in Nova (cpu_allocation_ratio 16.0, ram_allocation_ratio
1.5, reserved_host_memory_mb 512 by default): a host advertises its physical
size, and placement may over-commit by the ratio.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # only read for its fields: capacity stays a leaf module
    from computed.store.records import HostRecord

DEFAULT_CPU_RATIO = 16.0
DEFAULT_RAM_RATIO = 1.5
RESERVED_HOST_MEMORY_MB = 512


@dataclasses.dataclass(frozen=True)
class Capacity:
    vcpus: int
    memory_mb: int
    cpu_ratio: float = DEFAULT_CPU_RATIO
    ram_ratio: float = DEFAULT_RAM_RATIO

    @property
    def usable_vcpus(self) -> int:
        return int(self.vcpus * self.cpu_ratio)

    @property
    def usable_memory_mb(self) -> int:
        return int(self.memory_mb * self.ram_ratio)


class Sized(Protocol):
    vcpus: int
    memory_mb: int


@dataclasses.dataclass(frozen=True)
class Usage:
    vcpus: int = 0
    memory_mb: int = 0
    instances: int = 0

    def plus(self, vcpus: int, memory_mb: int) -> Usage:
        return Usage(self.vcpus + vcpus, self.memory_mb + memory_mb, self.instances + 1)

    @classmethod
    def of(cls, specs: Iterable[Sized]) -> Usage:
        """What instances of these specs (anything with vcpus and memory_mb) take."""
        vcpus = memory_mb = count = 0
        for spec in specs:
            vcpus, memory_mb, count = vcpus + spec.vcpus, memory_mb + spec.memory_mb, count + 1
        return cls(vcpus, memory_mb, count)


def host_capacity(host: HostRecord) -> Capacity:
    """What a host advertised, at the allocation ratios it advertised with."""
    return Capacity(
        host.vcpus, host.memory_mb, host.cpu_allocation_ratio, host.ram_allocation_ratio
    )


def machine_capacity(vcpus: int | None = None, memory_mb: int | None = None) -> Capacity:
    """This machine's size, unless the operator says otherwise."""
    if memory_mb is None:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20
        memory_mb = max(0, total - RESERVED_HOST_MEMORY_MB)
    return Capacity(vcpus or os.cpu_count() or 1, memory_mb)


def shortfall(capacity: Capacity, used: Usage, vcpus: int, memory_mb: int) -> str | None:
    """Why a new instance of this size does not fit, or None if it does."""
    after = used.plus(vcpus, memory_mb)
    if after.vcpus > capacity.usable_vcpus:
        return (
            f"not enough vCPUs: {used.vcpus} of {capacity.usable_vcpus} allocated, "
            f"{vcpus} more requested"
        )
    if after.memory_mb > capacity.usable_memory_mb:
        return (
            f"not enough memory: {used.memory_mb} of {capacity.usable_memory_mb} MiB "
            f"allocated, {memory_mb} more requested"
        )
    return None
