"""The soak's verdict, CSV and plot: does every curve level off? Pure apart from the writers.

A curve *plateaus* when its last half no longer climbs: the least-squares
slope of the samples in the last half of the run, carried over the whole
run's length, adds less than `tolerance` of the last half's median (or less
than the curve's absolute floor, for curves near zero). A leak fails this
whatever its size relative to the noise, because a leak's slope does not
fade; a warm-up (caches filling, etcd's history growing until the first
compactions) passes, because it is over by the second half. Latencies are
noisy and not monotonic, so they are judged by their p50 in the first and
last minute instead: the last may be at most 1.5 times the first plus a floor.
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    detail: str


def slope(times: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope (units per second); 0 for fewer than two points."""
    if len(times) < 2:
        return 0.0
    mt, mv = statistics.fmean(times), statistics.fmean(values)
    den = sum((t - mt) ** 2 for t in times)
    if den == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in zip(times, values, strict=True)) / den


def plateau(
    name: str,
    times: Sequence[float],
    values: Sequence[float],
    floor: float,
    tolerance: float = 0.10,
    unit: str = "",
) -> Verdict:
    points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
    if len(points) < 4:
        return Verdict(name, False, "too few samples to judge")
    start, end = points[0][0], points[-1][0]
    last = [(t, v) for t, v in points if t >= (start + end) / 2]
    first = [(t, v) for t, v in points if t < (start + end) / 2]
    s_last = slope([t for t, _ in last], [v for _, v in last])
    s_first = slope([t for t, _ in first], [v for _, v in first])
    level = statistics.median(v for _, v in last)
    growth = s_last * (end - start)
    allowed = max(floor, tolerance * abs(level))
    ok = growth <= allowed
    detail = (
        f"start {points[0][1]:.1f}{unit}, end {points[-1][1]:.1f}{unit}; last-half slope "
        f"{s_last * 60:+.3f}{unit}/min (first half {s_first * 60:+.3f}{unit}/min): "
        f"{growth:+.1f}{unit} over the run, allowed {allowed:.1f}{unit}"
    )
    return Verdict(name, ok, detail)


def latency_steady(
    name: str, first: Sequence[float], last: Sequence[float], floor: float, unit: str = "s"
) -> Verdict:
    if not first or not last:
        return Verdict(name, False, "no samples in the first or last minute")
    p_first, p_last = statistics.median(first), statistics.median(last)
    allowed = 1.5 * p_first + floor
    return Verdict(
        name,
        p_last <= allowed,
        f"p50 first minute {p_first:.3f}{unit} (n={len(first)}), last minute "
        f"{p_last:.3f}{unit} (n={len(last)}), allowed {allowed:.3f}{unit}",
    )


def write_csv(path: str, rows: list[dict[str, object]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_plot(path: str, rows: list[dict[str, object]], creates: list[tuple[float, float]],
               daemons: Sequence[str], title: str) -> str | None:  # fmt: skip
    """The soak as six panels in one PNG; None if matplotlib is missing (pip install .[bench])."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no plot"
    minutes = [float(r["elapsed_s"]) / 60 for r in rows]

    def series(col: str) -> list[float | None]:
        return [None if r.get(col) in (None, "") else float(r[col]) for r in rows]  # type: ignore[arg-type]

    fig, axes = plt.subplots(3, 2, figsize=(13, 11), sharex=True)
    panels = [
        (axes[0][0], "RSS (MiB)", [(d, f"{d}_rss_mb") for d in daemons]),
        (axes[0][1], "open fds", [(d, f"{d}_fds") for d in daemons]),
        (axes[1][0], "etcd DB size (MiB)", [("db", "etcd_db_mb")]),
        (axes[1][1], "etcd revisions/s", [("rev/s", "revisions_per_s")]),
        (axes[2][0], "watch lag (ms)", [("lag", "watch_lag_ms")]),
    ]
    for ax, label, lines in panels:
        for name, col in lines:
            ax.plot(minutes, series(col), label=name, linewidth=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7, ncol=2)
    ax = axes[2][1]
    ax.scatter([t / 60 for t, _ in creates], [v for _, v in creates], s=4)
    ax.set_ylabel("create latency (s), one server")
    ax.grid(alpha=0.3)
    for ax in axes[2]:
        ax.set_xlabel("minutes")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None
