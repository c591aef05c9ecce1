"""When to compact etcd's history, and how far. Pure.

Every stats interval each agent re-puts each of its instances' stats keys, so
etcd's history (every old value of every key) grows for as long as the
cluster runs, until the backend quota raises NOSPACE and etcd refuses every
write. The schedulers therefore compact it themselves, the way kube-apiserver
does (`storage/etcd3/compact.go`): in rounds, each round compacting to the
head revision the previous round saw.

How much is kept, and why: a round is due `retention` seconds after the
previous one, and it compacts to the revision that round recorded, so etcd
always holds between `retention` and twice `retention` of history (5 to 10
minutes by default). That is what a watcher needs to *resume* instead of
re-reading everything: a scheduler that reads the whole keyspace at revision
R and then watches from R + 1, a watch stream that pyetcd or etcd re-creates
after a blip, a watcher that fell behind while its process was starved or
paused: all of them continue from a revision that is seconds to a minute
old. A watcher further behind than that gets `WatchCompacted` and re-reads
(scheduler/host_cache.py); that is correct, only dearer. A revision-count
bound would not do: one revision can be a batch of 128 stats puts, so the
space a revision costs varies by two orders of magnitude.

Several schedulers may run. A round is claimed by a compare-and-swap on one
mark key (the revision and time the round saw), so of all the schedulers that
find the round due, exactly one compacts; and a compaction to a revision
already compacted is refused by etcd and harmless, so even a lost race or a
retry does no damage.
"""

from __future__ import annotations

import dataclasses

from computed.store import keys
from computed.store.records import Record

# The round mark. Its prefix is for the keyspace owner (computed/store/keys.py) to adopt.
COMPACTION_MARK = keys.COMPACTION_MARK

DEFAULT_RETENTION = 300.0  # seconds


@dataclasses.dataclass(frozen=True)
class CompactionMark(Record):
    """What the last round saw: etcd's head revision and the (wall-clock) time."""

    revision: int
    at: float


@dataclasses.dataclass(frozen=True)
class Round:
    """A round to claim: write `mark`, then compact to `compact_to` (None: nothing yet)."""

    mark: CompactionMark
    compact_to: int | None


def next_round(
    last: CompactionMark | None, head: int, now: float, retention: float = DEFAULT_RETENTION
) -> Round | None:
    """The round due now, or None while the last one is younger than `retention`.

    The first round only records where history starts being kept. A clock that
    went backwards by more than `retention` (another scheduler's, or ours)
    counts as due, so a skewed clock cannot stop compaction for good.
    """
    if retention <= 0:
        raise ValueError(f"retention {retention!r}: must be > 0 seconds")
    mark = CompactionMark(revision=head, at=now)
    if last is None:
        return Round(mark, None)
    age = now - last.at
    if 0 <= age < retention or -retention < age < 0:
        return None
    target = min(last.revision, head)
    return Round(mark, target if target > 1 else None)


def check_interval(retention: float) -> float:
    """How often a scheduler looks whether a round is due: often enough that rounds
    start within a tenth of the retention, never more than every second."""
    return max(1.0, min(retention / 10, 30.0))
