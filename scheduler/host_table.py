"""The placement table: every host as one row of numpy columns, for vectorised decisions.

Built once from the ClusterView, then kept current row by row: the view
marks each host whose records change (watch events, our own claims) and
`sync` rewrites only those rows. A decision is then a handful of array
operations over all hosts instead of a Python loop over them, which is what
lets one scheduler decide thousands of placements a second among 10,000 hosts.
"""

from __future__ import annotations

import logging

import numpy as np

from computed.capacity import host_capacity
from scheduler.cluster_view import ClusterView

log = logging.getLogger("computed.scheduler.table")

MAX_TRAITS = 64  # one bit each in a uint64 column
_INITIAL_ROWS = 64


def host_traits(kvm_vhost: str, kvm_module: str) -> tuple[str, ...]:
    """The traits a host offers images (ImageRecord.required_traits names these)."""
    return (f"vhost:{kvm_vhost}", f"kvm:{kvm_module}")


class HostTable:
    """Rows are never removed: a host whose record is deleted keeps its row with known=False
    (and gets it back if it returns), so row indices stay valid for the table's lifetime."""

    _COLUMNS: tuple[tuple[str, type], ...] = (
        ("known", np.bool_),  # a HostRecord exists
        ("up", np.bool_),  # its liveness lease is alive
        ("enabled", np.bool_),
        ("zone", np.int32),  # code in self.zone_codes
        ("traits", np.uint64),  # bits in self.trait_bits
        ("usable_vcpus", np.int64),  # physical x allocation ratio
        ("usable_memory_mb", np.int64),  # (physical - reserved) x allocation ratio
        ("used_vcpus", np.int64),  # claimed
        ("used_memory_mb", np.int64),
        ("instances", np.int32),  # claims on the host
        ("failures", np.int32),  # builds failed there since the last success
        # Held by this scheduler's decisions whose claims are still in flight, so
        # concurrent requests in this process do not all pick the same best host.
        ("held_vcpus", np.int64),
        ("held_memory_mb", np.int64),
        ("held_instances", np.int32),
    )

    def __init__(self) -> None:
        # host id -> [vcpus, memory_mb, instances] held; outlives rebuilds of the rows.
        self._held: dict[str, list[int]] = {}
        self._reset(None)

    def _reset(self, view: ClusterView | None) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.zone_codes: dict[str, int] = {}
        self.trait_bits: dict[str, int] = {}
        self._view = view
        self._rows = 0
        self._alloc(_INITIAL_ROWS)

    def __len__(self) -> int:
        return self._rows

    def column(self, name: str) -> np.ndarray:
        """The live rows of one column (a view: do not write to it)."""
        return self._data[name][: self._rows]

    def sync(self, view: ClusterView) -> None:
        """Bring the rows up to date with `view` (call with the cache lock held)."""
        changed = sorted(view.dirty)  # sorted: new rows, and so ties, do not depend on hashing
        if view is not self._view:  # first use, or the cache resynced into a new view
            self._reset(view)
            changed = [*view.hosts, *changed]  # the view's order first
        for host_id in changed:
            self._set_row(view, host_id)
        view.dirty.clear()

    def hold(self, host_ids: list[str], vcpus: int, memory_mb: int, sign: int = 1) -> None:
        """Count (sign=1) or stop counting (sign=-1) one in-flight instance per host id."""
        for host_id in host_ids:
            held = self._held.setdefault(host_id, [0, 0, 0])
            held[0] += sign * vcpus
            held[1] += sign * memory_mb
            held[2] += sign
            if not any(held):
                del self._held[host_id]
            i = self.index.get(host_id)
            if i is not None:
                self._write_held(i, host_id)

    def _write_held(self, i: int, host_id: str) -> None:
        d = self._data
        d["held_vcpus"][i], d["held_memory_mb"][i], d["held_instances"][i] = self._held.get(
            host_id, (0, 0, 0)
        )

    def _set_row(self, view: ClusterView, host_id: str) -> None:
        i = self.index.get(host_id)
        record = view.hosts.get(host_id)
        if i is None:
            if record is None:
                return  # an allocation or failure record for a host we never saw
            i = self._append(host_id)
        d = self._data
        d["known"][i] = record is not None
        d["up"][i] = host_id in view.live
        admin = view.admin.get(host_id)
        d["enabled"][i] = admin is None or admin.enabled
        alloc = view.allocations.get(host_id)
        d["used_vcpus"][i] = alloc.vcpus if alloc else 0
        d["used_memory_mb"][i] = alloc.memory_mb if alloc else 0
        d["instances"][i] = len(alloc.claims) if alloc else 0
        failures = view.build_failures.get(host_id)
        d["failures"][i] = failures.count if failures else 0
        self._write_held(i, host_id)
        if record is None:
            d["usable_vcpus"][i] = d["usable_memory_mb"][i] = 0
            return
        cap = host_capacity(record)
        d["usable_vcpus"][i] = cap.usable_vcpus
        d["usable_memory_mb"][i] = cap.usable_memory_mb
        d["zone"][i] = self.zone_codes.setdefault(record.availability_zone, len(self.zone_codes))
        bits = 0
        for trait in host_traits(record.kvm.vhost, record.kvm.vendor_module):
            bit = self._trait_bit(trait)
            if bit is not None:
                bits |= 1 << bit
        d["traits"][i] = bits

    def _trait_bit(self, trait: str) -> int | None:
        bit = self.trait_bits.get(trait)
        if bit is None and len(self.trait_bits) < MAX_TRAITS:
            bit = self.trait_bits[trait] = len(self.trait_bits)
        elif bit is None:
            log.warning("more than %d distinct host traits: ignoring %s", MAX_TRAITS, trait)
        return bit

    def _alloc(self, rows: int) -> None:
        old = getattr(self, "_data", None)
        self._data: dict[str, np.ndarray] = {}
        for name, dtype in self._COLUMNS:
            column = np.zeros(rows, dtype=dtype)
            if old is not None:
                column[: self._rows] = old[name][: self._rows]
            self._data[name] = column

    def _append(self, host_id: str) -> int:
        if self._rows == len(self._data["known"]):
            self._alloc(2 * self._rows)
        i = self._rows
        self._rows += 1
        self.ids.append(host_id)
        self.index[host_id] = i
        return i
