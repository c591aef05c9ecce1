"""Typed records stored as JSON values in etcd. Pure.

Every record is a frozen dataclass with to_json/from_json. Decoding checks
types and names the offending field, because a value in etcd may have been
written by another version of another process (or by hand with etcdctl).
Unknown keys are ignored and new fields get defaults, so a newer writer and
an older reader can share the keyspace during a rolling upgrade. Status and
power-state values are Nova's names as plain strings ("ACTIVE", "RUNNING");
the rules about them live with the agent, not here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any, Self

from computed.store.errors import RecordError


class Record:
    """JSON encoding for the dataclasses below (nested records, tuples, dicts, optionals)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        # Sorted and compact: equal records give equal bytes, which keeps
        # "did anything change?" checks and etcd history honest.
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        return decode(cls, data, cls.__name__)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Self:
        try:
            data = json.loads(raw)
        except ValueError as e:  # includes UnicodeDecodeError
            raise RecordError(f"{cls.__name__}: value is not JSON ({e})") from None
        return cls.from_dict(data)


def decode(tp: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) as type `tp`, or RecordError naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(tp)):
            return None
        if len(options) != 1:
            raise TypeError(f"{where}: only `X | None` unions are supported")
        return decode(options[0], value, where)
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, where)
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        _expect(isinstance(value, list), where, "a list", value)
        return tuple(decode(item_type, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, item_type = typing.get_args(tp)
        _expect(isinstance(value, dict), where, "an object", value)
        return {str(k): decode(item_type, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        _expect(isinstance(value, bool), where, "true or false", value)
        return value
    if tp is int:
        _expect(isinstance(value, int) and not isinstance(value, bool), where, "an integer", value)
        return value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _expect(ok, where, "a number", value)
        return float(value)
    if tp is str:
        _expect(isinstance(value, str), where, "a string", value)
        return value
    raise TypeError(f"{where}: no JSON decoding for {tp!r}")


def _decode_dataclass(cls: Any, value: Any, where: str) -> Any:
    _expect(isinstance(value, dict), where, "an object", value)
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = decode(hints[f.name], value[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(f"{where}.{f.name}: missing")
    return cls(**kwargs)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _expect(ok: bool, where: str, wanted: str, value: Any) -> None:
    if not ok:
        raise RecordError(f"{where}: expected {wanted}, got {json.dumps(value)[:60]}")


# --- instances ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InstanceSpec(Record):
    """What to run; mirrors computed.v1.InstanceSpec."""

    uuid: str
    name: str
    image: str
    vcpus: int
    memory_mb: int
    cmdline: str = ""
    ip: str = ""  # with prefix length; empty: no network
    gateway: str = ""
    mac: str = ""
    image_digest: str = ""  # "sha256:<hex>": an uploaded image, fetched by digest


@dataclasses.dataclass(frozen=True)
class InstanceRecord(Record):
    """/computed/instances/<uuid>: what the scheduler decided: spec, placement, build outcome.

    Only schedulers write it (compare-and-swap on its mod_revision, since
    several may run). What the hosting agent observes is an InstanceReport
    under that host's own prefix; the scheduler's views merge the two
    (scheduler/instance_reports.py), so the status fields here are the
    scheduler's last word until the host reports.
    """

    spec: InstanceSpec
    status: str
    power_state: str = "NOSTATE"
    host: str = ""  # "" until the scheduler has placed it
    fault: str = ""
    pid: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    # Written by the scheduler at create; the agent leaves them as they are.
    display_name: str = ""  # what the user called it; spec.name is instance-%08x
    flavor: str = ""
    availability_zone: str = ""
    group: str = ""
    # The down host an evacuation moved it from; with status BUILD, an evacuation that
    # stopped before its build (etcd lost, the scheduler killed) and is to be resumed.
    evacuated_from: str = ""


@dataclasses.dataclass(frozen=True)
class InstanceReport(Record):
    """/computed/reports/<host-id>/<uuid>: what that host's agent observes of the instance.

    Only that host's agent writes under its prefix (etcd RBAC can enforce it),
    and only while the instance record it decided on is unchanged (a
    transaction compares the record's mod_revision), so a late report can
    never outlive the record's move or delete.
    """

    status: str
    power_state: str = "NOSTATE"
    fault: str = ""
    pid: int | None = None
    updated_at: float = 0.0


# --- hosts --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KvmFacts(Record):
    """Mirrors computed.v1.KvmFacts."""

    api_version: int
    vendor_module: str  # "kvm_intel", "kvm_amd", or "" when neither is loaded
    vhost: str  # "kernel" or "userspace"
    guest_kernel_emulated: bool


@dataclasses.dataclass(frozen=True)
class HostRecord(Record):
    """/computed/hosts/<host-id>: what a host is and offers; written by its agent at start.

    Not on a lease: a host that is down stays known (and shows as down,
    because its liveness key is gone). Whether it is enabled is the
    operator's business and lives in HostAdminRecord, so an agent restart
    never re-enables a disabled host.
    """

    host_id: str
    address: str  # where its Agent gRPC service listens, host:port
    availability_zone: str
    vcpus: int  # physical size advertised, before allocation ratios
    memory_mb: int
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    kvm: KvmFacts
    started_at: float = 0.0


@dataclasses.dataclass(frozen=True)
class LivenessRecord(Record):
    """/computed/liveness/<host-id>: present while the agent keeps its lease alive."""

    host_id: str
    started_at: float  # changes when the agent restarts


@dataclasses.dataclass(frozen=True)
class HostAdminRecord(Record):
    """/computed/host-admin/<host-id>: the operator's enable/disable; absent means enabled."""

    enabled: bool = True
    reason: str = ""
    updated_at: float = 0.0


# --- placement ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Claim(Record):
    vcpus: int
    memory_mb: int


@dataclasses.dataclass(frozen=True)
class AllocationRecord(Record):
    """/computed/allocations/<host-id>: the scheduler's claims against one host.

    Placement's "generation" idea: a claim is written in a transaction that
    compares this key's mod_revision, so two schedulers racing for the last
    slot on a host cannot both win.
    """

    host_id: str
    claims: dict[str, Claim] = dataclasses.field(default_factory=dict)

    @property
    def vcpus(self) -> int:
        return sum(c.vcpus for c in self.claims.values())

    @property
    def memory_mb(self) -> int:
        return sum(c.memory_mb for c in self.claims.values())

    def with_claim(self, uuid: str, claim: Claim) -> AllocationRecord:
        return dataclasses.replace(self, claims={**self.claims, uuid: claim})

    def without(self, uuid: str) -> AllocationRecord:
        return dataclasses.replace(self, claims={k: v for k, v in self.claims.items() if k != uuid})


@dataclasses.dataclass(frozen=True)
class BuildFailuresRecord(Record):
    """/computed/build-failures/<host-id>: builds that failed there since its last success.

    Written by any scheduler whose spawn failed on the host and deleted by the
    next successful one (Nova's `failed_builds`), so every scheduler's
    BuildFailureWeigher steers away from a host that keeps failing.
    """

    count: int
    last_at: float
    last_fault: str = ""


@dataclasses.dataclass(frozen=True)
class AddressRecord(Record):
    """/computed/ips/<ip>: which instance holds this fixed address."""

    uuid: str


# --- catalog ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FlavorRecord(Record):
    """/computed/flavors/<name>: an instance size, as Nova's flavors."""

    name: str
    vcpus: int
    memory_mb: int


@dataclasses.dataclass(frozen=True)
class ImageRecord(Record):
    """/computed/images/<name>: an uploaded image (or a file at the same path on every host).

    Bundled guests are not stored. An uploaded image is content-addressed: `digest`
    ("sha256:<hex>") names its bytes in the image store (ImageBlobRecord), and agents
    fetch it by that digest.
    """

    name: str
    path: str = ""  # the same path on every host; "" for uploaded (and bundled) images
    min_memory_mb: int = 0
    required_traits: tuple[str, ...] = ()
    digest: str = ""  # "sha256:<hex>" of the bytes; "" for a path or a bundled guest
    size: int = 0  # bytes
    properties: dict[str, str] = dataclasses.field(default_factory=dict)
    created_at: float = 0.0


@dataclasses.dataclass(frozen=True)
class ImageBlobRecord(Record):
    """/computed/image-blobs/<hex>: where one image's bytes are and which images use them.

    The bytes are chunks under /computed-image-chunks/<hex>/<upload>/; `upload` names
    the upload whose chunks these are, so a later upload of the same bytes (or a
    delete racing with one) never touches chunks another manifest points at.
    """

    digest: str  # "sha256:<hex>"
    size: int
    chunk_bytes: int
    chunks: int
    upload: str
    images: tuple[str, ...] = ()  # names of the ImageRecords with this digest


@dataclasses.dataclass(frozen=True)
class ServerGroupRecord(Record):
    """/computed/server-groups/<id>: an affinity or anti-affinity group and its members."""

    id: str
    name: str
    policy: str  # "affinity" | "anti-affinity"
    soft: bool = False
    members: tuple[str, ...] = ()  # instance uuids


# --- the instance action log ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ActionEntry(Record):
    """One thing done to (or seen happening to) an instance: Nova's instance action."""

    action: str  # create, start, stop, reboot, pause, resume, delete, evacuate, crash
    at: float  # Unix seconds: when it was asked for (crash: when the scheduler saw it)
    requester: str  # the caller's certificate identity; "system" for a crash
    result: str  # success or error
    message: str = ""
    host: str = ""
    ref: str = ""  # names an event that several schedulers may all see (crash@<revision>)


@dataclasses.dataclass(frozen=True)
class ActionLogRecord(Record):
    """/computed/actions/<uuid>: an instance's action log, oldest first, bounded.

    Written by any scheduler with compare-and-swap. When the instance is deleted the
    key moves onto a lease, so a deleted server's log stays readable for a while.
    """

    uuid: str
    name: str = ""  # display name at the last write, to find a deleted server by name
    instance_name: str = ""  # instance-%08x
    deleted: bool = False
    entries: tuple[ActionEntry, ...] = ()
