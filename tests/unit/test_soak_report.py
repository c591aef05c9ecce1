"""The soak's plateau verdicts (bench/soak_report.py): a leak fails, a warm-up passes."""

from __future__ import annotations

from bench.soak_report import latency_steady, plateau, slope

TIMES = [float(t) for t in range(0, 1800, 5)]


def test_slope_of_a_line():
    assert abs(slope([0, 1, 2, 3], [1, 3, 5, 7]) - 2.0) < 1e-9


def test_a_steady_leak_fails_however_small_against_its_level():
    leaking = [100 + 0.02 * t for t in TIMES]  # 36 MiB over 30 min on a 100 MiB daemon
    assert not plateau("rss", TIMES, leaking, floor=8).ok


def test_a_warm_up_that_levels_off_passes():
    warming = [100 + min(t, 600) * 0.05 for t in TIMES]  # +30 in 10 min, then flat
    assert plateau("rss", TIMES, warming, floor=8).ok


def test_noise_around_a_level_passes():
    noisy = [50 + (3 if i % 2 else -3) for i in range(len(TIMES))]
    assert plateau("fds", TIMES, noisy, floor=8).ok


def test_too_few_samples_are_not_a_pass():
    assert not plateau("db", [0, 1], [1, 1], floor=1).ok


def test_latency_judged_by_first_and_last_minute_p50():
    assert latency_steady("create", [0.1, 0.2, 0.1], [0.2, 0.3, 0.2], floor=0.5).ok
    assert not latency_steady("create", [0.1, 0.1, 0.1], [2.0, 2.5, 1.9], floor=0.5).ok
    assert not latency_steady("create", [], [0.1], floor=0.5).ok
