"""One uid/gid per instance, from a configured range: a VMM that escapes its guest
meets only its own files and processes, never another instance's.

Firecracker's jailer and libvirt's per-domain dynamic ownership make the same
choice. The ids are numbers only (no /etc/passwd entry: the jail has no user
database, and nothing needs a name). The default range, 200000-209999, sits
above the first /etc/subuid block (100000-165535) and systemd's dynamic users
(61184-65519); an operator whose host uses it otherwise moves it with
`--vmm-uid-range` or `vmm_uid_range` in agent.conf.

The gid is the uid: one number per instance, nothing to keep apart.

The allocation is persisted as `<instance dir>/vmm-ids.json` (outside the
jail), so an agent restart finds every id in use by reading its instance
directories; deleting the instance directory frees it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Iterable

DEFAULT_UID_RANGE = "200000-209999"
IDS_FILE = "vmm-ids.json"


class UidRangeError(ValueError):
    """The configured range is malformed, or every id in it is taken."""


@dataclasses.dataclass(frozen=True)
class IdRange:
    first: int
    last: int

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.first <= uid <= self.last


@dataclasses.dataclass(frozen=True)
class VmmIds:
    uid: int
    gid: int


def parse_id_range(text: str) -> IdRange:
    """`200000-209999` → IdRange; never root's ids, nor the kernel's overflow id 65534
    (nobody), nor (uid_t)-1, which means "unchanged" to setresuid."""
    first_text, dash, last_text = text.strip().partition("-")
    if not dash or not first_text.isdigit() or not last_text.isdigit():
        raise UidRangeError(f"uid range {text!r}: expected FIRST-LAST, e.g. {DEFAULT_UID_RANGE}")
    first, last = int(first_text), int(last_text)
    if not 1000 <= first <= last < (1 << 32) - 1:
        raise UidRangeError(f"uid range {text!r}: expected 1000 <= FIRST <= LAST < 4294967295")
    if first <= 65534 <= last:
        raise UidRangeError(f"uid range {text!r}: must not hold 65534 (nobody)")
    return IdRange(first, last)


def next_free(ids: IdRange, used: Iterable[int]) -> int | None:
    """The lowest id of the range not in use, or None when all are. Pure."""
    taken = {uid for uid in used if uid in ids}
    if len(taken) >= len(ids):
        return None
    uid = ids.first
    while uid in taken:
        uid += 1
    return uid


def read_ids(instance_dir: str) -> VmmIds | None:
    try:
        with open(os.path.join(instance_dir, IDS_FILE)) as f:
            raw = json.load(f)
        return VmmIds(int(raw["uid"]), int(raw["gid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_ids(instance_dir: str, ids: VmmIds) -> None:
    path = os.path.join(instance_dir, IDS_FILE)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(dataclasses.asdict(ids), f)
    os.replace(tmp, path)


class VmmIdAllocator:
    """Hands out ids from `ids`, one per instance directory; thread-safe.

    Built from the instance directories on disk, so it is right after a restart.
    """

    def __init__(self, ids: IdRange, instances_root: str) -> None:
        self.ids = ids
        self.root = instances_root
        self._lock = threading.Lock()
        self._by_uuid: dict[str, int] = {}
        for uuid in sorted(os.listdir(instances_root)) if os.path.isdir(instances_root) else []:
            found = read_ids(os.path.join(instances_root, uuid))
            if found is not None:
                self._by_uuid[uuid] = found.uid

    def claim(self, uuid: str) -> VmmIds:
        """This instance's ids: the persisted ones, or the lowest free (then persisted)."""
        instance_dir = os.path.join(self.root, uuid)
        with self._lock:
            found = read_ids(instance_dir)
            if found is not None:
                self._by_uuid[uuid] = found.uid
                return found
            others = (uid for other, uid in self._by_uuid.items() if other != uuid)
            uid = next_free(self.ids, others)
            if uid is None:
                raise UidRangeError(
                    f"all {len(self.ids)} VMM uids of {self.ids.first}-{self.ids.last} are in use"
                )
            ids = VmmIds(uid, uid)
            write_ids(instance_dir, ids)
            self._by_uuid[uuid] = uid
            return ids

    def release(self, uuid: str) -> None:
        """Free the instance's ids (its directory, with the file, goes with delete)."""
        with self._lock:
            self._by_uuid.pop(uuid, None)
            try:
                os.unlink(os.path.join(self.root, uuid, IDS_FILE))
            except FileNotFoundError:
                pass

    def in_use(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_uuid)
