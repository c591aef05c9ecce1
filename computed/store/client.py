"""A thin wrapper over etcd-sdk-python (`pyetcd`): the only module that imports it.

It exists so the rest of computed sees three things only: records in, records
out; StoreUnavailable when etcd cannot be reached (whatever pyetcd or gRPC
raised); and writes batched the way etcd's limits require. Swapping the
client library means rewriting this file and lease.py, nothing else.

Three pyetcd behaviours are worked around here:
- `pyetcd.client()` marks its endpoint failed for 300 s after one UNAVAILABLE
  and then raises ValueError("Trying to use a failed node") for every call,
  long after etcd is back. Endpoints are built with a short retry time.
- gRPC backs off reconnects up to 120 s by default; capped at 2 s here so a
  restarted etcd is used again within seconds.
- pyetcd's `transaction()` makes Python objects per operation and copies
  every reply: a batch write cost about 30 µs of CPU per key through it, and
  an agent writes a thousand stats keys a second. Transactions are built here
  as protobuf messages (`_txn`: 10-13 µs a key), their errors still handed to
  pyetcd so that it fails over as for its own calls.

With TLS files (`tls=`), every endpoint is reached over TLS and the client
presents its certificate: etcd started with --client-cert-auth takes the
certificate's CN as the user name, so the roles granted to that user
(computed/store/etcd_auth.py) decide what this client may read and write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Literal, TypeVar

import grpc
import pyetcd
from pyetcd import etcdrpc
from pyetcd import exceptions as etcd_exc
from pyetcd.etcdrpc import auth_pb2 as authpb
from pyetcd.events import DeleteEvent

from computed.store.errors import (
    LeaseNotFound,
    PermissionDenied,
    StoreError,
    StoreFull,
    StoreUnavailable,
)
from computed.store.keys import prefix_end
from computed.store.ops import (
    MAX_TXN_BYTES,
    MAX_TXN_OPS,
    Op,
    Put,
    chunked,
    encode_value,
    prepare,
)
from computed.store.records import Record
from computed.tls_files import TlsFiles

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Record)
T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Notice a server that vanished without closing the connection (host
    # down, network cut): watch streams would otherwise wait forever. etcd
    # accepts pings every 5 s or slower (--grpc-keepalive-min-time).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]
_UNAVAILABLE_CODES = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
)
_UNAVAILABLE_ERRORS = (
    etcd_exc.ConnectionFailedError,
    etcd_exc.ConnectionTimeoutError,
    etcd_exc.NoServerAvailableError,
    etcd_exc.WatchTimedOut,
    etcd_exc.InternalServerError,  # pyetcd treats INTERNAL as a failed endpoint too
)


@dataclasses.dataclass(frozen=True)
class StoreStatus:
    db_size: int  # bytes of the answering member's backend file (free pages included)
    revision: int


# etcd's AlarmType enum (NONE = 0, NOSPACE = 1, CORRUPT = 2), named as etcdctl prints them.
_ALARM_NAMES = {1: "NOSPACE", 2: "CORRUPT"}


class WatchCompacted(StoreError):
    """The watch's start revision was compacted away: re-read the prefix, watch again."""

    def __init__(self, compacted_revision: int) -> None:
        super().__init__(f"revision compacted (oldest kept: {compacted_revision})")
        self.compacted_revision = compacted_revision


@dataclasses.dataclass(frozen=True)
class Entry:
    """One key as etcd holds it."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int  # 0: not on a lease

    def record(self, cls: type[R]) -> R:
        return cls.from_json(self.value)


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    key: str
    value: bytes  # b"" for deletes
    mod_revision: int


class PrefixWatch:
    """A running watch; cancel() stops it. No callback runs after cancel() returns."""

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._cancel = cancel

    def cancel(self) -> None:
        self._cancel()


def parse_endpoint(text: str, tls: bool = False) -> tuple[str, int]:
    """'host:port', 'http://host:port' or (with TLS) 'https://host:port' -> (host, port)."""
    if text.startswith("https://") and not tls:
        raise ValueError(f"etcd endpoint {text!r}: https needs TLS files (CA, cert, key)")
    if text.startswith("http://") and tls:
        raise ValueError(f"etcd endpoint {text!r}: plain http, but TLS files were given")
    rest = text.removeprefix("https://").removeprefix("http://").rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {text!r}: expected host:port")
    return host, int(port)


class Store:
    """computed's view of etcd: JSON records, leases, batched and guarded writes, watches.

    Thread-safe as far as gRPC is: share one Store per process.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = "127.0.0.1:2379",
        timeout: float = DEFAULT_TIMEOUT,
        max_txn_ops: int = MAX_TXN_OPS,
        max_txn_bytes: int = MAX_TXN_BYTES,
        tls: TlsFiles | None = None,
    ) -> None:
        names = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not names:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = tuple(names)
        self.tls = tls
        creds = None
        if tls is not None:
            ca, cert, key = tls.read()  # OSError names the missing file
            creds = grpc.ssl_channel_credentials(ca, key, cert)
        self.max_txn_ops = max_txn_ops
        self.max_txn_bytes = max_txn_bytes
        self.timeout = timeout
        # With one endpoint there is nothing to fail over to, so never mark it
        # failed; with several, skip a failed one for a second and try the next.
        retry = 0.0 if len(names) == 1 else 1.0
        eps = [
            pyetcd.Endpoint(
                *parse_endpoint(n, tls is not None),
                secure=creds is not None,
                creds=creds,
                time_retry=retry,
                opts=_CHANNEL_OPTIONS,
            )
            for n in names
        ]
        self._client = pyetcd.MultiEndpointEtcd3Client(
            endpoints=eps, timeout=timeout, failover=len(eps) > 1
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads ----------------------------------------------------------------
    def get(self, key: str) -> Entry | None:
        resp = self._read(f"get {key}", lambda: self._client.get_response(key))
        return _entry(resp.kvs[0]) if resp.kvs else None

    def get_record(self, key: str, cls: type[R]) -> tuple[R, int] | None:
        """The record at `key` and its mod_revision (for a later compare_and_swap)."""
        entry = self.get(key)
        return None if entry is None else (entry.record(cls), entry.mod_revision)

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """Several keys read at one revision per request (a read-only transaction, which
        etcd serves without a raft round): what a caller deciding on many keys at once
        would otherwise ask one request per key. None for an absent key."""
        found: list[Entry | None] = []
        t = self._client.transactions
        for start in range(0, len(keys), self.max_txn_ops):
            chunk = keys[start : start + self.max_txn_ops]
            _, responses = self._read(
                f"get {len(chunk)} keys",
                lambda chunk=chunk: self._client.transaction([], [t.get(k) for k in chunk], []),
            )
            found += [_entry_of(kvs[0]) if kvs else None for kvs in responses]
        return found

    def get_prefix(self, prefix: str) -> tuple[list[Entry], int]:
        """Every key under `prefix`, sorted by key, and the store revision they were read at.

        Watch from that revision + 1 to miss nothing and see nothing twice.
        """
        return self.get_range(prefix, prefix_end(prefix))

    def get_range(self, start: str, end: str) -> tuple[list[Entry], int]:
        """Every key in [start, end), sorted by key, and the revision they were read at."""
        resp = self._read(
            f"get range [{start}, {end})",
            lambda: self._client.get_range_response(start, end, sort_order="ascend"),
        )
        return [_entry(kv) for kv in resp.kvs], resp.header.revision

    def scan(self, start: str, end: str, page: int = 1000) -> Iterator[Entry]:
        """Every key in [start, end), sorted, read `page` keys per request at one revision:
        a range too large for one reply (gRPC's 4 MiB) is read in pieces."""
        revision = None
        while True:
            resp = self._read(
                f"scan [{start}, {end})",
                functools.partial(
                    self._client.get_range_response,
                    start,
                    end,
                    sort_order="ascend",
                    limit=page,
                    revision=revision,
                ),
            )
            revision = resp.header.revision
            yield from (_entry(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return
            start = resp.kvs[-1].key.decode() + "\0"

    # --- writes ---------------------------------------------------------------
    def put(self, key: str, value: str | bytes | Record, lease: int | None = None) -> int:
        """Write one key; returns the store revision of the write."""
        data = encode_value(value)
        with self._errors(f"put {key}"):
            resp = self._client.put(key, data, lease=lease)
        return resp.header.revision

    def delete(self, key: str) -> bool:
        """True if the key existed. Deleting a missing key is not an error."""
        with self._errors(f"delete {key}"):
            return bool(self._client.delete(key))

    def delete_prefix(self, prefix: str) -> int:
        with self._errors(f"delete prefix {prefix}"):
            return self._client.delete_prefix(prefix).deleted

    def put_many(self, ops: Iterable[Op], lease: int | None = None) -> list[int]:
        """Apply `ops` (Put/Delete) in as few transactions as etcd's limits allow.

        Each chunk (at most max_txn_ops operations and about max_txn_bytes) is
        one transaction, so it lands whole at one revision; returns those
        revisions. Chunks are not atomic together: on StoreUnavailable some
        may have landed, and the caller writes the whole batch again later
        (puts are idempotent). Puts without a lease of their own get `lease`.
        """
        revisions = []
        for chunk in chunked(prepare(ops), self.max_txn_ops, self.max_txn_bytes):
            revision = self._txn({}, chunk, f"batch of {len(chunk)} ops", lease)
            assert revision is not None  # no comparisons: cannot fail
            revisions.append(revision)
        return revisions

    def transaction(self, expect: Mapping[str, int], ops: Sequence[Op]) -> int | None:
        """Apply `ops` atomically if every key in `expect` has that mod_revision (0: absent).

        Returns the revision of the write, or None when a comparison failed
        (someone else wrote first: re-read and decide again). This is how
        claims are made: compare each chosen host's allocation record.
        """
        if not ops:
            raise ValueError("a transaction needs at least one operation")
        ops = prepare(ops)
        if len(ops) > self.max_txn_ops or len(expect) > self.max_txn_ops:
            raise ValueError(
                f"a transaction takes at most {self.max_txn_ops} comparisons and "
                f"{self.max_txn_ops} operations (got {len(expect)} and {len(ops)})"
            )
        return self._txn(expect, ops, f"transaction on {len(expect)} keys")

    def compare_and_swap(
        self, key: str, value: str | bytes | Record, mod_revision: int, lease: int | None = None
    ) -> bool:
        """Write `key` only if its mod_revision is still `mod_revision` (0: only if absent)."""
        return self.transaction({key: mod_revision}, [Put(key, value, lease)]) is not None

    # --- leases ---------------------------------------------------------------
    def grant_lease(self, ttl: int) -> int:
        """A new lease id. etcd raises TTLs below its minimum (about 2 s) to that minimum."""
        with self._errors("grant lease"):
            return self._client.lease(ttl).id

    def refresh_lease(self, lease_id: int) -> int:
        """Keep a lease alive once; returns its TTL. LeaseNotFound once it has expired."""
        with self._errors("refresh lease"):
            responses = list(self._client.refresh_lease(lease_id))
        if not responses:
            raise StoreUnavailable("etcd closed the lease keep-alive stream without answering")
        if responses[0].TTL <= 0:
            raise LeaseNotFound(f"lease {lease_id:x} expired or was revoked")
        return responses[0].TTL

    def revoke_lease(self, lease_id: int) -> None:
        """Revoke a lease, deleting its keys now. Revoking a lease that is gone is fine."""
        with contextlib.suppress(LeaseNotFound), self._errors("revoke lease"):
            self._client.revoke_lease(lease_id)

    # --- watches --------------------------------------------------------------
    def watch_prefix(
        self,
        prefix: str,
        on_events: Callable[[list[WatchEvent], int], None],
        on_error: Callable[[StoreError], None],
        start_revision: int | None = None,
    ) -> PrefixWatch:
        """Call on_events(events, revision) for each change under `prefix` (see watch_range)."""
        return self.watch_range(prefix, prefix_end(prefix), on_events, on_error, start_revision)

    def watch_range(
        self,
        start: str,
        end: str,
        on_events: Callable[[list[WatchEvent], int], None],
        on_error: Callable[[StoreError], None],
        start_revision: int | None = None,
    ) -> PrefixWatch:
        """Call on_events(events, revision) for each change of a key in [start, end).

        Callbacks run on the client's watch thread: keep them short. When the
        watch ends for any reason but cancel() (etcd unreachable, revision
        compacted), on_error is called once and nothing more arrives: re-read
        with get_prefix and watch again from its revision + 1.
        """
        done = threading.Event()
        lock = threading.RLock()  # cancel() from inside a callback must not deadlock

        def callback(response: object) -> None:
            with lock:
                if done.is_set():
                    return
                events = getattr(response, "events", None)
                if events is not None:
                    revision = response.header.revision  # type: ignore[attr-defined]
                    on_events([_event(e) for e in events], revision)
                    return
                done.set()
                on_error(_watch_error(response))

        with self._errors(f"watch [{start}, {end})"):
            watch_id = self._client.add_watch_callback(
                start, callback, range_end=end, start_revision=start_revision
            )

        def cancel() -> None:
            with lock:
                done.set()
            with contextlib.suppress(StoreError), self._errors("cancel watch"):
                self._client.cancel_watch(watch_id)

        return PrefixWatch(cancel)

    # --- auth (provisioning: computed/store/etcd_auth.py) -----------------------
    def auth_admin(self) -> AuthAdmin:
        """etcd's user and role administration over this client's connection."""
        return AuthAdmin(self)

    # --- maintenance (compaction, quota alarms, defragmentation) --------------
    def status(self) -> StoreStatus:
        """The answering member's backend size and the store's current revision."""
        with self._errors("status"):
            reply = self._client.maintenancestub.Status(
                etcdrpc.StatusRequest(), self._client.timeout, **self._call_auth()
            )
        return StoreStatus(db_size=reply.dbSize, revision=reply.header.revision)

    def compact(self, revision: int) -> bool:
        """Drop history older than `revision`. False if it was already compacted that far
        (so several callers may compact the same revision: only the first does it)."""
        try:
            with self._errors(f"compact to {revision}"):
                self._client.compact(revision)
        except StoreError as e:
            if "compacted" in str(e):
                return False
            raise
        return True

    def alarms(self) -> list[str]:
        """The alarms raised in the cluster, as 'NOSPACE on member <id>' (empty: none)."""
        with self._errors("list alarms"):
            found = list(self._client.list_alarms())
        return [f"{_ALARM_NAMES.get(a.alarm_type, a.alarm_type)} on member {a.member_id:x}"
                for a in found]  # fmt: skip

    def disarm_alarms(self) -> int:
        """Clear every raised alarm (the operator's step after compaction and defrag)."""
        with self._errors("list alarms"):
            found = list(self._client.list_alarms())
        for alarm in found:
            with self._errors("disarm alarm"):
                self._client.disarm_alarm(alarm.member_id)
        return len(found)

    def defragment(self) -> None:
        """Give the answering member's free pages back to the file system. It blocks
        that member's reads and writes meanwhile: one member at a time, off-peak."""
        with self._errors("defragment"):
            deadline = max(self._client.timeout or 0, 60)
            self._client.maintenancestub.Defragment(
                etcdrpc.DefragmentRequest(), deadline, **self._call_auth()
            )

    def _call_auth(self) -> dict[str, object]:
        """What pyetcd passes on each call when etcd authentication is on (as its own calls do)."""
        return {"credentials": self._client.call_credentials, "metadata": self._client.metadata}

    # --- internals ------------------------------------------------------------
    def _txn(
        self, expect: Mapping[str, int], ops: Sequence[Op], what: str, lease: int | None = None
    ) -> int | None:
        """One etcd transaction, built here as protobuf messages (the module's docstring
        says why); puts without a lease of their own get `lease`."""
        request = etcdrpc.TxnRequest()
        for key, revision in expect.items():
            compare = request.compare.add()
            compare.key, compare.mod_revision = key.encode(), revision
            compare.target, compare.result = etcdrpc.Compare.MOD, etcdrpc.Compare.EQUAL
        add = request.success.add
        for op in ops:
            if isinstance(op, Put):
                put = add().request_put
                put.key, put.value = op.key.encode(), op.encoded()
                put.lease = op.lease or lease or 0
            else:
                add().request_delete_range.key = op.key.encode()
        client = self._client
        with self._errors(what):
            try:
                reply = client.kvstub.Txn(request, client.timeout, **self._call_auth())
            except grpc.RpcError as e:
                client._manage_grpc_errors(e)  # re-raises, as pyetcd's exception
        return reply.header.revision if reply.succeeded else None

    def _read(self, what: str, read: Callable[[], T]) -> T:
        """A read, asked again while a member has gone away, for up to the store's timeout.

        pyetcd marks a member that refuses the connection as failed and moves on to
        the next, but fails the call it was making; and while the survivors elect a
        new leader (a second or two) they answer reads UNAVAILABLE too. With one of
        three members killed, an API request failed although the cluster was about to
        serve again. Reads are safe to repeat; writes are not retried here (one may
        have landed). With a single endpoint there is nobody else to ask."""
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while len(self.endpoints) > 1 and time.monotonic() + delay < deadline:
            try:
                with self._errors(what):
                    return read()
            except StoreUnavailable as e:
                if not isinstance(e.__cause__, etcd_exc.ConnectionFailedError):
                    raise  # a timeout: asking again would only add to the wait
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        with self._errors(what):
            return read()

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn what pyetcd or gRPC raised into StoreUnavailable / LeaseNotFound / StoreError."""
        try:
            yield
        except _UNAVAILABLE_ERRORS as e:
            raise StoreUnavailable(f"{what}: etcd at {self._where()} unavailable ({e})") from e
        except grpc.RpcError as e:
            raise _from_rpc_error(e, f"{what} (etcd at {self._where()})") from e
        except etcd_exc.Etcd3Exception as e:
            raise StoreError(f"{what}: {type(e).__name__}: {e}") from e

    def _where(self) -> str:
        return ",".join(self.endpoints)


def _from_rpc_error(e: grpc.RpcError, what: str) -> StoreError:
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "space" in (details or ""):
        return StoreFull(f"{what}: {details}: {StoreFull.ADVICE}")
    if code in _UNAVAILABLE_CODES:
        return StoreUnavailable(f"{what}: {details}")
    if code == grpc.StatusCode.NOT_FOUND and "lease" in (details or ""):
        return LeaseNotFound(f"{what}: {details}")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionDenied(f"{what}: {details}")
    return StoreError(f"{what}: {details}")


def _watch_error(response: object) -> StoreError:
    if isinstance(response, etcd_exc.RevisionCompactedError):
        return WatchCompacted(response.compacted_revision)
    if isinstance(response, grpc.RpcError):
        return _from_rpc_error(response, "watch")
    if response is None:  # pyetcd closed the stream (after another call failed)
        return StoreUnavailable("watch: the stream to etcd ended")
    return StoreError(f"watch: {response!r}")


def _entry(kv: object) -> Entry:
    return Entry(
        key=kv.key.decode(),  # type: ignore[attr-defined]
        value=bytes(kv.value),  # type: ignore[attr-defined]
        mod_revision=kv.mod_revision,  # type: ignore[attr-defined]
        create_revision=kv.create_revision,  # type: ignore[attr-defined]
        version=kv.version,  # type: ignore[attr-defined]
        lease=kv.lease,  # type: ignore[attr-defined]
    )


def _entry_of(found: tuple[bytes, object]) -> Entry:
    """An Entry from what pyetcd makes of a key read inside a transaction."""
    value, meta = found
    return Entry(
        key=meta.key.decode(),  # type: ignore[attr-defined]
        value=bytes(value),
        mod_revision=meta.mod_revision,  # type: ignore[attr-defined]
        create_revision=meta.create_revision,  # type: ignore[attr-defined]
        version=meta.version,  # type: ignore[attr-defined]
        lease=meta.lease_id,  # type: ignore[attr-defined]
    )


def _event(event: object) -> WatchEvent:
    kind: Literal["put", "delete"] = "delete" if isinstance(event, DeleteEvent) else "put"
    return WatchEvent(
        kind,
        event.key.decode(),  # type: ignore[attr-defined]
        bytes(event.value),  # type: ignore[attr-defined]
        event.mod_revision,  # type: ignore[attr-defined]
    )


# UserAddOptions{no_password: true} as field 3 of AuthUserAddRequest (etcd 3.4+). pyetcd's
# generated messages predate the field; protobuf keeps it as an unknown field on the wire.
_NO_PASSWORD = b"\x1a\x02\x08\x01"
_PERMISSION_TYPES = {"read": 0, "write": 1, "readwrite": 2}


class AuthAdmin:
    """etcd's Auth service, idempotent: adding what exists already is not an error.

    Users get no password: they can only be assumed by a client certificate
    whose CN names them (etcd --client-cert-auth), never through Authenticate.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._client = store._client

    def add_user(self, name: str) -> None:
        request = etcdrpc.AuthUserAddRequest()
        request.MergeFromString(etcdrpc.AuthUserAddRequest(name=name).SerializeToString()
                                + _NO_PASSWORD)  # fmt: skip
        self._call("UserAdd", request, f"add user {name}", exists_ok=True)

    def add_role(self, name: str) -> None:
        self._call("RoleAdd", etcdrpc.AuthRoleAddRequest(name=name), f"add role {name}",
                   exists_ok=True)  # fmt: skip

    def grant_permission(self, role: str, key: str, range_end: str, perm: str) -> None:
        """Let `role` `perm` ("read", "write", "readwrite") the key, or [key, range_end)."""
        permission = authpb.Permission(
            permType=_PERMISSION_TYPES[perm], key=key.encode(), range_end=range_end.encode()
        )
        self._call(
            "RoleGrantPermission",
            etcdrpc.AuthRoleGrantPermissionRequest(name=role, perm=permission),
            f"grant {perm} on {key} to {role}",
        )

    def grant_role(self, user: str, role: str) -> None:
        self._call("UserGrantRole", etcdrpc.AuthUserGrantRoleRequest(user=user, role=role),
                   f"grant role {role} to {user}")  # fmt: skip

    def enable(self) -> None:
        self._call("AuthEnable", etcdrpc.AuthEnableRequest(), "enable auth")

    def _call(self, method: str, request: object, what: str, exists_ok: bool = False) -> None:
        try:
            with self._store._errors(what):
                getattr(self._client.authstub, method)(request, self._client.timeout)
        except StoreError as e:
            if exists_ok and "already exists" in str(e):
                return
            raise
