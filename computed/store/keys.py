"""Every etcd key computed uses, built in one place. Pure.

Prefixes end in "/" so a prefix scan or watch of `/computed/hosts/` never
picks up `/computed/hosts-something/`. Ids become one path segment each and
are checked, because an id containing "/" would silently move a record into
another prefix. docs/keyspace.md describes each key's owner, value and lease.
"""

from __future__ import annotations

import re

ROOT = "/computed/"

HOSTS = ROOT + "hosts/"
HOST_ADMIN = ROOT + "host-admin/"
LIVENESS = ROOT + "liveness/"
INSTANCES = ROOT + "instances/"
REPORTS = ROOT + "reports/"
STATS = ROOT + "stats/"
ALLOCATIONS = ROOT + "allocations/"
BUILD_FAILURES = ROOT + "build-failures/"
IPS = ROOT + "ips/"
COUNTERS = ROOT + "counters/"
FLAVORS = ROOT + "flavors/"
IMAGES = ROOT + "images/"
SERVER_GROUPS = ROOT + "server-groups/"

# What a scheduler watches: the half-open key range [WATCHED_START, WATCHED_END), every
# prefix it caches and none of the stats, which every agent rewrites every interval.
# "stats/" sorts after every other prefix, so one ordered watch covers the rest; a
# unit test (tests/unit/test_store_keys.py) keeps it so.
WATCHED_START = ROOT
WATCHED_END = STATS

# The counter instance names ("instance-%08x") are drawn from.
INSTANCE_NAME_COUNTER = "instance-name"

# Hostnames (RFC 1123 labels and dots), uuids, counter names: no "/", no spaces.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,252}")


def segment(value: str, what: str = "id") -> str:
    """`value` if it is safe as one key segment, else ValueError naming `what`."""
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} cannot be used in an etcd key: use 1..253 letters, digits, "
            "'.', '_', ':' or '-', starting with a letter or digit"
        )
    return value


def host(host_id: str) -> str:
    return HOSTS + segment(host_id, "host id")


def host_admin(host_id: str) -> str:
    return HOST_ADMIN + segment(host_id, "host id")


def liveness(host_id: str) -> str:
    return LIVENESS + segment(host_id, "host id")


def instance(uuid: str) -> str:
    return INSTANCES + segment(uuid, "instance uuid")


def reports(host_id: str) -> str:
    """The prefix under which one host's agent reports its instances (only it writes there)."""
    return REPORTS + segment(host_id, "host id") + "/"


def report(host_id: str, uuid: str) -> str:
    """What `host_id`'s agent observes of instance `uuid` (InstanceReport)."""
    return reports(host_id) + segment(uuid, "instance uuid")


def host_stats_prefix(host_id: str) -> str:
    """Everything one host's agent writes on its lease each interval (only it writes there)."""
    return STATS + segment(host_id, "host id") + "/"


def host_stats(host_id: str) -> str:
    return host_stats_prefix(host_id) + "host"


def instance_stats_prefix(host_id: str) -> str:
    return host_stats_prefix(host_id) + "instances/"


def instance_stats(host_id: str, uuid: str) -> str:
    """Stats of instance `uuid`, under the host that runs it (and writes them)."""
    return instance_stats_prefix(host_id) + segment(uuid, "instance uuid")


def allocation(host_id: str) -> str:
    return ALLOCATIONS + segment(host_id, "host id")


def build_failures(host_id: str) -> str:
    return BUILD_FAILURES + segment(host_id, "host id")


def ip(address: str) -> str:
    return IPS + segment(address, "address")


def counter(name: str) -> str:
    return COUNTERS + segment(name, "counter name")


def flavor(name: str) -> str:
    return FLAVORS + segment(name, "flavor name")


def image(name: str) -> str:
    return IMAGES + segment(name, "image name")


def server_group(group_id: str) -> str:
    return SERVER_GROUPS + segment(group_id, "server group id")


def report_key_ids(key: str | bytes) -> tuple[str, str]:
    """(host id, uuid) of a key under REPORTS; ValueError for any other key."""
    text = key.decode() if isinstance(key, bytes) else key
    if not text.startswith(REPORTS):
        raise ValueError(f"key {text!r} is not under {REPORTS!r}")
    host_id, sep, uuid = text[len(REPORTS) :].partition("/")
    if not sep:
        raise ValueError(f"key {text!r}: expected {REPORTS}<host-id>/<uuid>")
    return segment(host_id, f"key {text!r}: host id"), segment(uuid, f"key {text!r}: uuid")


def prefix_end(prefix: str) -> str:
    """The end of the range of keys that start with `prefix` (etcd's "prefix + 1").

    A watch or an RBAC permission on [prefix, prefix_end(prefix)) covers exactly
    the keys under the prefix.
    """
    if not prefix:
        raise ValueError("an empty prefix would be the whole keyspace")
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def last_segment(prefix: str, key: str | bytes) -> str:
    """The id at the end of `key`, which must sit directly under `prefix`.

    Watch events and prefix scans hand back keys; this turns them back into
    ids and refuses keys that belong elsewhere (deeper paths included).
    """
    text = key.decode() if isinstance(key, bytes) else key
    if not text.startswith(prefix):
        raise ValueError(f"key {text!r} is not under {prefix!r}")
    return segment(text[len(prefix) :], f"key {text!r}: id")


# --- the instance action log (scheduler/action_log.py) ---------------------------------

ACTIONS = ROOT + "actions/"


def actions(uuid: str) -> str:
    """/computed/actions/<uuid>: one instance's bounded action log (ActionLogRecord)."""
    return ACTIONS + segment(uuid, "instance uuid")


DELETED_SERVERS = ROOT + "deleted-servers/"


def deleted_server(name: str) -> str:
    """/computed/deleted-servers/<name>: the uuid of the last deleted server of that display
    or instance name, on the same lease as its action log, so the log is found by name."""
    return DELETED_SERVERS + segment(name, "server name")


# --- image bytes (the image store; docs/images.md) ------------------------------
IMAGE_BLOBS = ROOT + "image-blobs/"  # one manifest per digest
# The bytes, in chunks, per digest and upload. Outside ROOT on purpose: schedulers read
# and watch all of ROOT (scheduler/host_cache.py), and megabytes of image chunks there
# would ride every watch and overflow a resync's single read (gRPC's 4 MiB limit).
IMAGE_CHUNKS = "/computed-image-chunks/"

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def digest_hex(digest: str) -> str:
    """The hex of a "sha256:<hex>" digest, checked (it becomes a key segment)."""
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or not _HEX_DIGEST.fullmatch(hexpart):
        raise ValueError(f"digest {digest!r}: expected sha256:<64 lower-case hex digits>")
    return hexpart


def image_blob(digest: str) -> str:
    return IMAGE_BLOBS + digest_hex(digest)


def image_chunks(digest: str, upload: str) -> str:
    """The prefix holding one upload's chunks of an image (ends in "/")."""
    return f"{IMAGE_CHUNKS}{digest_hex(digest)}/{segment(upload, 'upload id')}/"


def image_chunk(digest: str, upload: str, index: int) -> str:
    return f"{image_chunks(digest, upload)}{index:06d}"


# --- maintenance (scheduler/compactor.py) ---------------------------------------------
# The last compaction round: {"revision": R, "at": T}; a scheduler claims the next round
# by compare-and-swap on it (computed/store/maintenance.py).
COMPACTION_MARK = ROOT + "maintenance/compaction"
