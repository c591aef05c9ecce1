"""Render command results as a bordered table, JSON or bare values. Pure: no I/O.

Every command returns a Result of plain dicts; one renderer for all of them keeps
the output formats (and -c column selection) consistent across verbs.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("table", "json", "value")
WRAP = 96  # a show table's Value column wraps here: faults and cmdlines can be long


class FormatError(ValueError):
    """A bad -c column: the user's mistake, reported as a usage error."""


@dataclass(frozen=True)
class Result:
    """What a command shows: rows of fields, its default columns, and how to humanize them.

    single: a `show` (one object, a Field/Value table, a JSON object) rather than a list.
    human: per-field renderers used in tables only; JSON and value output stay raw for scripts.
    """

    rows: list[dict[str, Any]]
    columns: tuple[str, ...]
    single: bool = False
    human: Mapping[str, Callable[[Any], str]] = field(default_factory=dict)


def normalize(name: str) -> str:
    """-c accepts `Cpu Time`, `cpu-time` and `cpu_time` alike."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def select_columns(requested: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    """The -c columns in the user's order, mapped onto known field names; unknown ones refused."""
    by_norm = {normalize(k): k for k in known}
    chosen = []
    for name in requested:
        key = by_norm.get(normalize(name))
        if key is None:
            raise FormatError(f"unknown column {name!r} (choose from: {', '.join(known)})")
        if key not in chosen:
            chosen.append(key)
    return tuple(chosen)


def plain(value: Any) -> str:
    """A value as one line of text for value output and unhumanized table cells."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ",".join(plain(v) for v in value)
    return str(value)


def render(result: Result, fmt: str = "table", columns: Sequence[str] = ()) -> str:
    """The whole output as text (without the final newline for tables; empty for no rows)."""
    known = list(result.rows[0]) if result.rows else list(result.columns)
    for extra in result.columns:
        if extra not in known:
            known.append(extra)
    cols = select_columns(columns, known) if columns else result.columns
    rows = [{c: row.get(c) for c in cols} for row in result.rows]
    if fmt == "json":
        data: Any = rows[0] if result.single and rows else rows
        return json.dumps(data, indent=2, default=str)
    if fmt == "value":
        return "\n".join(" ".join(plain(r[c]) for c in cols) for r in rows)
    if fmt != "table":
        raise FormatError(f"unknown format {fmt!r} (choose from: {', '.join(FORMATS)})")
    cell = _cell_renderer(result.human)
    if result.single:
        body = [[c, wrap(cell(c, rows[0][c]))] for c in cols] if rows else []
        return table(["Field", "Value"], body)
    return table(list(cols), [[cell(c, r[c]) for c in cols] for r in rows])


def _cell_renderer(human: Mapping[str, Callable[[Any], str]]) -> Callable[[str, Any], str]:
    def cell(column: str, value: Any) -> str:
        fn = human.get(column)
        return fn(value) if fn is not None and value is not None else plain(value)

    return cell


def wrap(text: str, width: int = WRAP) -> str:
    """Each line of a cell folded at `width` (on spaces where it can) so tables stay readable."""
    return "\n".join(
        "\n".join(textwrap.wrap(line, width, break_on_hyphens=False)) or line
        for line in text.splitlines()
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An openstack-style +----+ bordered table; cells may hold several lines."""
    split = [[cell.splitlines() or [""] for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in split:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(line) for line in lines))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [rule, line(headers), rule]
    for row in split:
        height = max(len(lines) for lines in row)
        for n in range(height):
            out.append(line([lines[n] if n < len(lines) else "" for lines in row]))
    out.append(rule)
    return "\n".join(out)


def human_bytes(n: Any) -> str:
    """1536 → '1.5 KiB': RSS as an operator reads it."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_seconds(s: Any) -> str:
    """CPU time in seconds → '0.012s' or '1h02m03s'."""
    value = float(s)
    if value < 60:
        return f"{value:.3f}s"
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def human_percent(p: Any) -> str:
    return f"{float(p):.1f}%"


def human_helpers(helpers: Any) -> str:
    """{'kvm-pit/123': 0.5} → 'kvm-pit/123: 0.500s', one helper thread per line."""
    return "\n".join(f"{name}: {human_seconds(t)}" for name, t in helpers.items())


def human_lines(values: Any) -> str:
    return "\n".join(plain(v) for v in values)


def human_mapping(values: Any) -> str:
    """{'load': 0.5} → 'load=0.5', one entry per line."""
    return "\n".join(f"{k}={plain(v)}" for k, v in values.items())
