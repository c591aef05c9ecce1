"""Turn on the host's same-page merging (KSM) for the VMMs' interpreter memory.

Warm-forked VMMs hold mostly identical copies of their warm parent's pages
(computed/vmm/page_merging.py says why and which pages they offer). KSM merges
them only while the kernel's ksmd runs, which is off on a stock kernel. A host
that runs qemu usually has it on already (ksmtuned); the agent turns it on
where it is off, unless configured not to (`ksm = false`). It never turns it
off: VMMs outlive the agent, and other users of the host may rely on it.

ksmd's own cost is set by the host's pages_to_scan and sleep_millisecs (by
default about 1 % of a core here, whatever the number of VMMs); the agent
leaves those to the operator.
"""

from __future__ import annotations

KSM_RUN = "/sys/kernel/mm/ksm/run"
RUNNING = "1"  # 0: stopped, merged pages kept; 2: stopped, everything unmerged


def run_state(run_path: str = KSM_RUN) -> str:
    """ksmd's state: "0", "1" or "2" (RUNNING above). OSError where there is no KSM."""
    with open(run_path) as f:
        return f.read().strip()


def set_run_state(state: str, run_path: str = KSM_RUN) -> None:
    """Set ksmd's state ("0", "1" or "2"); OSError where /sys is read-only or has no KSM."""
    with open(run_path, "w") as f:
        f.write(state)


def start_merging(run_path: str = KSM_RUN) -> bool:
    """Start ksmd if it is not running; whether this call started it. OSError where the
    kernel has no KSM or the file cannot be written (a container's read-only /sys)."""
    if run_state(run_path) == RUNNING:
        return False
    set_run_state(RUNNING, run_path)
    return True
