"""Drive the warm VMM parent (agent/warm_parent.py) from a subprocess that is a
subreaper, as the agent is: a test writes the driver's body (its WarmParent in
`parent`, and a `run()` that fills `out` and puts its VMM pids in `started`) and
gets `out` back. The prologue gives it `state` (its directory), `log` (an fd for
the VMMs' stdout and stderr), UUID, wait_until and the usual modules.

The subreaper runs in its own process, not in pytest's: a subreaper inherits
every orphan below it, and pytest must not collect other tests' orphans.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

UUID = "5c0f0000-0000-4000-8000-0000000000{:02x}"

# Every driver starts alike: a subreaper, with what the module docstring lists.
PROLOGUE = textwrap.dedent(
    """
    import json, os, signal, sys
    from computed.subreaper import become_subreaper
    from agent.warm_parent import WarmParent
    from tests.waiting import wait_until

    become_subreaper()
    state = sys.argv[1]
    out = {}
    started = []  # every VMM, killed at the end whatever happens
    log = os.open(os.path.join(state, "vmm.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    """
)

# Every driver ends alike: run(), then every VMM it started killed and the warm parent
# stopped whatever happened, then what it saw printed as one JSON line.
EPILOGUE = textwrap.dedent(
    """
    try:
        run()
    finally:
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.stop()
    print(json.dumps(out))
    """
)


def drive(driver: str, state_dir: str, timeout: float) -> dict:
    """Run a driver script in a subreaper process of its own; what it saw."""
    done = subprocess.run(
        [sys.executable, "-c", f"UUID = {UUID!r}\n{PROLOGUE}{driver}{EPILOGUE}", state_dir],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
