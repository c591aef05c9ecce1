"""When the schedulers compact etcd's history, and how far (computed/store/maintenance.py)."""

from __future__ import annotations

import pytest

from computed.store.maintenance import CompactionMark, Round, check_interval, next_round

RETENTION = 300.0


def test_the_first_round_only_records_where_kept_history_starts():
    assert next_round(None, 500, 1000.0, RETENTION) == Round(CompactionMark(500, 1000.0), None)


def test_no_round_is_due_before_the_retention_has_passed():
    assert next_round(CompactionMark(500, 1000.0), 900, 1000.0 + RETENTION - 1, RETENTION) is None


def test_a_due_round_compacts_to_the_revision_the_previous_round_saw():
    due = next_round(CompactionMark(500, 1000.0), 900, 1000.0 + RETENTION, RETENTION)
    assert due == Round(CompactionMark(900, 1000.0 + RETENTION), 500)


def test_history_kept_is_between_one_and_two_retentions():
    # Rounds every RETENTION seconds, each compacting to the head of the round before:
    # right after a round, what is kept started one round ago; just before the next, two.
    mark, head = None, 0
    compacted_at = []
    for minute in range(0, 60):
        now, head = minute * 60.0, head + 100
        due = next_round(mark, head, now, RETENTION)
        if due is not None:
            mark = due.mark
            if due.compact_to is not None:
                compacted_at.append((now, due.compact_to))
    for now, revision in compacted_at:
        kept_since = (revision // 100 - 1) * 60.0  # the minute that revision was the head
        assert RETENTION <= now - kept_since < 2 * RETENTION


def test_a_clock_far_behind_the_mark_does_not_stop_compaction_for_good():
    assert next_round(CompactionMark(500, 10_000.0), 900, 10_000.0 - 2 * RETENTION) is not None
    assert next_round(CompactionMark(500, 10_000.0), 900, 10_000.0 - 10.0) is None


def test_nothing_below_revision_two_is_compacted():
    assert next_round(CompactionMark(1, 0.0), 1, RETENTION, RETENTION).compact_to is None


def test_retention_must_be_positive():
    with pytest.raises(ValueError, match="retention"):
        next_round(None, 1, 0.0, 0)


def test_rounds_are_checked_often_enough_but_not_more_than_every_second():
    assert check_interval(300) == 30.0
    assert check_interval(5) == 1.0
    assert check_interval(86400) == 30.0
