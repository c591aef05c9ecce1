"""`make bench`: every benchmark in turn, with its default settings. Prints figures only."""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = (
    "vmm_bench.py",
    "agent_bench.py",
    "scheduler_bench.py",
    "cluster_bench.py",
    "net_bench.py",
    "launch_bench.py",
    "density_bench.py",
)

if __name__ == "__main__":
    failed = []
    for name in BENCHES:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, os.path.join(HERE, name)]).returncode != 0:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")
