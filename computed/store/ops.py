"""Write operations and how they are split into etcd transactions. Pure.

etcd refuses a transaction with more than --max-txn-ops operations (128 by
default) or a request over --max-request-bytes (1.5 MiB by default), so a
batch of writes (an agent's stats for every instance, each interval) is cut
into chunks under both limits, each written as one transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from computed.store.records import Record

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
MAX_TXN_BYTES = 1 << 20  # under etcd's default --max-request-bytes (1.5 MiB), with room
_OP_OVERHEAD = 16  # protobuf framing per operation, roughly


@dataclasses.dataclass(frozen=True)
class Put:
    key: str
    value: str | bytes | Record
    lease: int | None = None  # None: the batch's lease, if any

    def encoded(self) -> bytes:
        return encode_value(self.value)


@dataclasses.dataclass(frozen=True)
class Delete:
    key: str


Op = Put | Delete


def encode_value(value: str | bytes | Record) -> bytes:
    if isinstance(value, bytes):  # first: the stats path writes a thousand a second
        return value
    if isinstance(value, Record):
        return value.to_json().encode()
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"cannot store a {type(value).__name__}: use str, bytes or a Record")


def prepare(ops: Iterable[Op]) -> list[Op]:
    """Encode values once, and refuse a key written twice.

    Encoding once matters for records: chunking measures every value and
    sending needs it again. A put whose value is bytes already (every stats
    write) is kept as it is, not copied: a thousand of them a second.
    """
    prepared: list[Op] = [
        op
        if not isinstance(op, Put) or isinstance(op.value, bytes)
        else Put(op.key, op.encoded(), op.lease)
        for op in ops
    ]
    check_unique(prepared)
    return prepared


def check_unique(ops: Iterable[Op]) -> None:
    """etcd rejects a transaction that touches a key twice; say which key, before sending."""
    seen: set[str] = set()
    for op in ops:
        if op.key in seen:
            raise ValueError(f"key {op.key!r} appears twice in one batch")
        seen.add(op.key)


def chunked(
    ops: Iterable[Op], max_ops: int = MAX_TXN_OPS, max_bytes: int = MAX_TXN_BYTES
) -> Iterator[list[Op]]:
    """Consecutive chunks of `ops`, each within both limits (an oversized op goes alone)."""
    if max_ops < 1:
        raise ValueError("max_ops must be at least 1")
    chunk: list[Op] = []
    size = 0
    for op in ops:
        op_size = len(op.key) + _OP_OVERHEAD
        if isinstance(op, Put):
            op_size += len(op.encoded())
        if chunk and (len(chunk) == max_ops or size + op_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(op)
        size += op_size
    if chunk:
        yield chunk
