"""computed-vmm benchmarks. Prints figures; asserts nothing. Run: make bench, or
    .venv/bin/python bench/vmm_bench.py [startup|pss|launch|burn] ...

- startup: exec → first console byte of `hello`, over N launches (p50/p90).
- pss:     PSS of an idle heartbeat VMM after 10 s, alone and as one of 20.
- launch:  N heartbeat VMMs started at once → all ready and ticking; instances/s.
- burn:    guest user-mode loop rate at duty 100 vs the same loop natively.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMM = os.path.join(os.path.dirname(sys.executable), "computed-vmm")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def summary(values: list[float], unit: str) -> str:
    return (
        f"p50 {statistics.median(values):.1f} {unit}, p90 {pct(values, 90):.1f} {unit}, "
        f"min {min(values):.1f}, max {max(values):.1f} (n={len(values)})"
    )


def vmm_args(workdir: str, kernel: str, *extra: str, console: str | None = None) -> list[str]:
    return [
        VMM,
        "-name",
        f"instance-{os.path.basename(workdir)}",
        "-uuid",
        str(uuid.uuid4()),
        "-m",
        "64",
        "-kernel",
        kernel,
        "-serial",
        console or f"file:{workdir}/console.log",
        "-control",
        f"unix:{workdir}/control.sock",
        "-pidfile",
        f"{workdir}/vmm.pid",
        *extra,
    ]


def bench_startup(n: int) -> None:
    """Time from exec to the first byte the guest writes to its serial port."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(n):
            start = time.perf_counter()
            proc = subprocess.Popen(vmm_args(tmp, "hello", console="stdio"), stdout=subprocess.PIPE)
            assert proc.stdout is not None
            first = proc.stdout.read(1)
            times.append((time.perf_counter() - start) * 1000)
            proc.stdout.read()
            if proc.wait() != 0 or not first:
                raise SystemExit("hello did not run")
    print(f"startup exec→first console byte: {summary(times, 'ms')}  (target ≤ 30 ms)")


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def wait_ticking(workdir: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    path = f"{workdir}/console.log"
    while time.monotonic() < deadline:
        if os.path.exists(path) and "tick 1" in read(path):
            return
        time.sleep(0.05)
    raise SystemExit(f"{workdir}: not ticking")


def start_many(tmp: str, n: int, kernel: str = "heartbeat") -> list[tuple[str, subprocess.Popen]]:
    vms = []
    for i in range(n):
        d = os.path.join(tmp, f"{i:08x}")
        os.mkdir(d)
        vms.append((d, subprocess.Popen(vmm_args(d, kernel), stderr=subprocess.DEVNULL)))
    return vms


def stop_all(vms: list[tuple[str, subprocess.Popen]]) -> None:
    for _, p in vms:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for _, p in vms:
        p.wait()


def bench_pss(settle: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for count in (1, 20):
            vms = start_many(tmp if count == 1 else tempfile.mkdtemp(dir=tmp), count)
            try:
                time.sleep(settle)
                pss = [psutil.Process(p.pid).memory_full_info().pss / 2**20 for _, p in vms]
                uss = [psutil.Process(p.pid).memory_full_info().uss / 2**20 for _, p in vms]
                rss = [psutil.Process(p.pid).memory_info().rss / 2**20 for _, p in vms]
                print(
                    f"idle heartbeat after {settle:g}s, {count} running: "
                    f"PSS {summary(pss, 'MiB')}; "
                    f"USS p50 {statistics.median(uss):.1f} MiB; RSS p50 "
                    f"{statistics.median(rss):.1f} MiB  (target PSS ≤ 5 MiB)"
                )
            finally:
                stop_all(vms)


def bench_launch(n: int, rounds: int) -> None:
    rates = []
    for _ in range(rounds):
        tmp = tempfile.mkdtemp(prefix="computed-bench-")
        try:
            start = time.perf_counter()
            vms = start_many(tmp, n)
            for d, p in vms:
                while not os.path.exists(f"{d}/vmm.pid"):
                    if p.poll() is not None:
                        raise SystemExit(f"VMM exited {p.returncode}")
                    time.sleep(0.005)
            ready = time.perf_counter() - start
            for d, _ in vms:
                wait_ticking(d)
            rates.append(n / ready)
            stop_all(vms)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"launch {n} heartbeat VMMs at once → all ready (then verified ticking): "
        f"{summary(rates, 'instances/s')}  (target ≥ 100/s)"
    )


def loop_rates(text: str, pattern: str) -> list[float]:
    return [float(x) for x in re.findall(pattern, text)]


def bench_burn(seconds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        native_bin = os.path.join(tmp, "burn_native")
        # -O2, as the guest Makefile builds burn.c: the same loop, the same code.
        subprocess.run(
            [
                "gcc",
                "-O2",
                "-I",
                os.path.join(ROOT, "computed/guests"),
                "-o",
                native_bin,
                os.path.join(ROOT, "bench/burn_native.c"),
            ],
            check=True,
        )
        native = subprocess.run(
            [native_bin, str(seconds)], capture_output=True, text=True, check=True
        ).stdout
        guest = subprocess.run(
            vmm_args(tmp, "burn", "-append", f"duty=100 seconds={seconds}", console="stdio"),
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        ).stdout
    n = loop_rates(native, r"native: (\d+) loops/s")[1:]
    g = loop_rates(guest, r"burn: (\d+) loops/s")[1:]
    if not n or not g:
        raise SystemExit(f"no rates: native={native!r} guest={guest!r}")
    ratio = statistics.median(g) / statistics.median(n)
    print(
        f"burn duty=100: guest {statistics.median(g):,.0f} loops/s (spread {min(g):,.0f}-"
        f"{max(g):,.0f}), native {statistics.median(n):,.0f} loops/s (spread {min(n):,.0f}-"
        f"{max(n):,.0f}); ratio {ratio:.3f}  (target ≥ 0.97)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="*", default=["startup", "pss", "launch", "burn"])
    ap.add_argument("--launches", type=int, default=50)
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--seconds", type=int, default=8)
    a = ap.parse_args()
    for which in a.which:
        {
            "startup": lambda: bench_startup(a.launches),
            "pss": lambda: bench_pss(a.settle),
            "launch": lambda: bench_launch(a.instances, a.rounds),
            "burn": lambda: bench_burn(a.seconds),
        }[which]()


if __name__ == "__main__":
    main()
