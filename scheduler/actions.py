"""The instance action log's rules: what an entry is, how a log grows and stays bounded,
and which change of an instance record is a crash. Pure; scheduler/action_log.py does
the etcd side.

Like Nova's instance actions, each entry says what was done, when, by whom, and
how it ended. Unlike Nova, the log is bounded (ACTION_LOG_BOUND entries, the first
one, usually `create`, always kept) because it lives in one etcd value.
"""

from __future__ import annotations

import dataclasses

from computed import status
from computed.store.records import ActionEntry, ActionLogRecord, InstanceRecord

ACTION_LOG_BOUND = 50  # entries per instance; the oldest after the first are dropped
ACTIONS = ("create", "start", "stop", "reboot", "pause", "resume", "delete", "evacuate", "crash")
SUCCESS = "success"
ERROR = "error"
SYSTEM = "system"  # the requester of what nobody asked for (a crash)


def entry(
    action: str, at: float, requester: str, error: str | None, host: str = "", ref: str = "",
    note: str = "",
) -> ActionEntry:  # fmt: skip
    """An entry for `action`; `error` is None when it succeeded (the message is then
    `note`), else what went wrong."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    result, message = (SUCCESS, note) if error is None else (ERROR, error)
    return ActionEntry(action, at, requester, result, message, host, ref)


def appended(
    log: ActionLogRecord | None,
    record: InstanceRecord | None,
    new: ActionEntry,
    uuid: str,
    bound: int = ACTION_LOG_BOUND,
) -> ActionLogRecord | None:
    """The log with `new` in time order, cut to `bound`; None when nothing changes
    (an entry with the same ref is there: another scheduler recorded that crash)."""
    current = log or ActionLogRecord(uuid=uuid)
    if new.ref and any(e.ref == new.ref for e in current.entries):
        return None
    entries = sorted([*current.entries, new], key=lambda e: e.at)
    if len(entries) > bound:
        entries = entries[:1] + entries[len(entries) - bound + 1 :]
    names = {}
    if record is not None:
        names = {"name": record.display_name or record.spec.name, "instance_name": record.spec.name}
    deleted = current.deleted or (new.action == "delete" and new.result == SUCCESS)
    return dataclasses.replace(current, entries=tuple(entries), deleted=deleted, **names)


def is_crash(record: InstanceRecord) -> bool:
    """The agent reported its VMM ended without being asked to (killed from outside,
    the guest crashed, the VMM failed): ERROR with power state CRASHED."""
    return record.status == status.ERROR and record.power_state == status.CRASHED


def crash_ref(record: InstanceRecord) -> str:
    """Names one crash the same way for every scheduler, however late it starts: the
    agent's time of the crashed state, which rewrites of the same state keep."""
    return f"crash@{record.updated_at!r}"


def new_crashes(instances: dict[str, InstanceRecord], seen: dict[str, str]) -> list[InstanceRecord]:
    """Instances showing a crash not in `seen` (uuid -> ref of the crash last handled).
    Updates `seen`, and forgets instances that are gone or no longer crashed."""
    found = []
    for uuid, record in instances.items():
        if not is_crash(record):
            seen.pop(uuid, None)
            continue
        ref = crash_ref(record)
        if seen.get(uuid) != ref:
            seen[uuid] = ref
            found.append(record)
    for uuid in [u for u in seen if u not in instances]:
        del seen[uuid]
    return found
