"""`computectl top`: the cluster live, in the manner of virt-top, drawn with rich.

Fed by the scheduler's WatchTop stream (a snapshot per interval). On a terminal
it takes the whole screen and redraws on every snapshot and keypress; keys are
read in cbreak mode (works over ssh in any terminal rich supports). When stdout
is not a terminal, or with -n, it prints N snapshots (one by default) as a table
or as JSON and exits. What is shown (rates, sorting, filters, keys) is
computed/cli/top_model.py's; this module only talks to the scheduler and draws.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import grpc
from rich.bar import Bar
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from computed.api import compute_pb2
from computed.cli import format as fmt
from computed.cli import top_model as model
from computed.cli.errors import CliError, rpc_message

_RECONNECT = 2.0  # seconds between attempts when the stream breaks
_REDRAW = 1.0  # redraw at least this often, even without news (the clock, stale marks)
_FIRST_SNAPSHOT_DEADLINE = 30.0


def _fields(message: Any, cls: type, **overrides: Any) -> Any:
    """A model row from a message with the same field names."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in overrides]
    return cls(**{n: getattr(message, n) for n in names}, **overrides)


def samples_from(snapshot: Any) -> list[model.Sample]:
    return [
        _fields(i, model.Sample, cpu_percent=i.cpu_percent if i.has_cpu_percent else None)
        for i in snapshot.instances
    ]


def hosts_from(snapshot: Any) -> list[model.HostRow]:
    return [
        _fields(h, model.HostRow, cpu_percent=h.cpu_percent if h.sampled_at else None)
        for h in snapshot.hosts
    ]


# --- drawing ----------------------------------------------------------------------


def _bar(value: float | None) -> Bar | str:
    if value is None:
        return "-"
    color = "green" if value < 70 else "yellow" if value < 90 else "red"
    return Bar(100, 0, min(100.0, value), width=12, color=color)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _secs(ns: int) -> str:
    return fmt.human_seconds(round(ns / 1e9, 2))


def hosts_table(hosts: list[model.HostRow]) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold reverse", expand=False)
    for heading in ("HOST", "STATE", "CPU", "CPU%", "MEMORY", "MEM%", "VCPUS", "MEM MB", "INST",
                    "LOAD"):  # fmt: skip
        t.add_column(heading, no_wrap=True, width=12 if heading in ("CPU", "MEMORY") else None)
    for h in hosts:
        state = Text("up" if h.up else "DOWN", style="green" if h.up else "bold red")
        if not h.enabled:
            state.append(" disabled", style="yellow")
        t.add_row(
            h.host_id, state, _bar(h.cpu_percent), _pct(h.cpu_percent),
            _bar(h.memory_percent), _pct(h.memory_percent),
            f"{h.allocated_vcpus}/{h.vcpus}", f"{h.allocated_memory_mb}/{h.memory_mb}",
            str(h.instances), f"{h.load1:.2f}" if h.up else "-",
        )  # fmt: skip
    return t


_STATUS_STYLE = {"ACTIVE": "green", "ERROR": "bold red", "PAUSED": "yellow", "BUILD": "cyan"}


def instances_table(rows: list[model.InstanceRow], state: model.ViewState, limit: int) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold reverse", expand=False)
    for key, heading in model.COLUMNS:
        mark = (" v" if state.descending else " ^") if key == state.sort else ""
        t.add_column(heading + mark, no_wrap=True, justify="left" if key in
                     ("name", "host", "status") else "right")  # fmt: skip
    for r in rows[:limit]:
        t.add_row(
            r.name, r.host, Text(r.status, style=_STATUS_STYLE.get(r.status, "")), str(r.vcpus),
            _pct(r.cpu_percent), _secs(r.vcpu_time_ns), _pct(r.vcpu_percent),
            _secs(r.kvm_pit_time_ns), _pct(r.kvm_pit_percent),
            _secs(r.vhost_time_ns) + (f" {r.vhost_kind[:4]}" if r.vhost_kind else ""),
            _pct(r.vhost_percent), fmt.human_bytes(r.memory_rss) if r.memory_rss else "-",
        )  # fmt: skip
    return t


def screen(
    at: float,
    hosts: list[model.HostRow],
    rows: list[model.InstanceRow],
    state: model.ViewState,
    height: int,
    where: str,
    problem: str = "",
) -> Group:
    counts = model.summary(hosts, rows)
    by_status = " ".join(f"{s} {counts[s]}" for s in sorted(counts) if s not in ("hosts", "up"))
    head = Text.assemble(
        ("computectl top ", "bold"),
        f"{where}  ",
        datetime.fromtimestamp(at).strftime("%H:%M:%S") if at else "--:--:--",
        f"   hosts {counts['up']}/{counts['hosts']} up   instances {len(rows)}: {by_status}",
    )
    shown = state.select(rows)
    host_limit = max(3, height // 3) if height else len(hosts)
    some_hosts = model.busiest_hosts(hosts, host_limit)
    limit = max(1, height - len(some_hosts) - 8) if height else len(shown)
    parts: list[Any] = [head, Text(state.describe(), style="dim"), hosts_table(some_hosts)]
    if len(hosts) > len(some_hosts):
        parts.append(Text(f"… {len(hosts) - len(some_hosts)} more hosts (down and busiest shown)",
                          style="dim"))  # fmt: skip
    parts += [Text(""), instances_table(shown, state, limit)]
    if len(shown) > limit:
        parts.append(Text(f"… {len(shown) - limit} more", style="dim"))
    if problem:
        parts.append(Text(problem, style="bold red"))
    parts.append(Text(model.KEYS_HELP, style="dim"))
    return Group(*parts)


# --- the stream -------------------------------------------------------------------


def _stream(api: Any, interval: float) -> Iterator[Any]:
    return api.stub.WatchTop(compute_pb2.WatchTopRequest(interval=interval))


class Feed:
    """Reads the WatchTop stream on a thread, reconnecting when it breaks; the UI takes
    snapshots from `updates` and shows `problem` while the stream is down."""

    def __init__(self, api: Any, interval: float) -> None:
        self.api = api
        self.interval = interval
        self.updates: queue.Queue = queue.Queue()
        self.problem = ""
        self._call: Any = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="top-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._call = _stream(self.api, self.interval)
                for snapshot in self._call:
                    self.problem = ""
                    self.updates.put(snapshot)
            except grpc.RpcError as e:
                if self._stopped.is_set():
                    return
                self.problem = rpc_message(e, self.api.address, 0) + " (retrying)"
                self.updates.put(None)
            self._stopped.wait(_RECONNECT)

    def close(self) -> None:
        self._stopped.set()
        if self._call is not None:
            self._call.cancel()


def _keys(text: str) -> Iterator[str]:
    """Split what one read returned into keys (arrow keys are three bytes)."""
    i = 0
    while i < len(text):
        if text.startswith("\x1b[", i) and i + 2 < len(text):
            yield text[i : i + 3]
            i += 3
        else:
            yield text[i]
            i += 1


def interactive(api: Any, interval: float, state: model.ViewState) -> None:
    console = Console()
    feed = Feed(api, interval)
    rates = model.Rates()
    hosts: list[model.HostRow] = []
    rows: list[model.InstanceRow] = []
    at = 0.0
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        with Live(console=console, screen=True, auto_refresh=False) as live:
            drawn = 0.0
            while not state.quit:
                changed = False
                try:
                    snapshot = feed.updates.get_nowait()
                    if snapshot is not None:
                        at, hosts = snapshot.at, hosts_from(snapshot)
                        rows = rates.rows(samples_from(snapshot))
                    changed = True
                except queue.Empty:
                    pass
                ready, _, _ = select.select([fd], [], [], 0.05)
                if ready:
                    for key in _keys(os.read(fd, 32).decode(errors="replace")):
                        state = model.on_key(
                            state, key, [h.host_id for h in hosts], {r.status for r in rows}
                        )
                    changed = True
                if changed or time.monotonic() - drawn >= _REDRAW:
                    view = screen(at, hosts, rows, state, console.size.height,
                                  api.address, feed.problem)  # fmt: skip
                    live.update(view, refresh=True)
                    drawn = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        feed.close()


def snapshots(api: Any, count: int, interval: float, output: str, state: model.ViewState) -> None:
    """Print `count` snapshots and return: JSON (one object per line) or the table."""
    rates = model.Rates()
    console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False)
    call = _stream(api, interval)
    try:
        for n, snapshot in enumerate(call, start=1):
            hosts = hosts_from(snapshot)
            rows = state.select(rates.rows(samples_from(snapshot)))
            if output == "json":
                print(json.dumps(model.snapshot_json(snapshot.at, hosts, rows)), flush=True)
            else:
                console.print(screen(snapshot.at, hosts, rows, state, 0, api.address))
            if n >= count:
                break
    except grpc.RpcError as e:
        raise CliError(rpc_message(e, api.address, _FIRST_SNAPSHOT_DEADLINE)) from None
    finally:
        call.cancel()


def run(api: Any, args: argparse.Namespace) -> str:
    state = model.ViewState(
        sort=args.sort, descending=args.sort not in ("name", "host", "status"),
        host=args.host, status=args.status,
    )  # fmt: skip
    on_terminal = sys.stdout.isatty() and sys.stdin.isatty()
    if args.iterations is None and on_terminal and args.format == "table":
        interactive(api, args.delay, state)
    else:
        snapshots(api, args.iterations or 1, args.delay, args.format, state)
    return ""
