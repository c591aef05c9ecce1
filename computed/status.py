"""The words for an instance's status and power state, shared by the agent, the scheduler
and the records they write to etcd.

Names follow Nova: a status (vm_state: what the user asked for and got) and a
power state (power_state: what the hypervisor sees). They are plain strings
because they are stored as such in etcd and compared across processes.
"""

from __future__ import annotations

# Statuses (Nova's vm_state names).
BUILD = "BUILD"
ACTIVE = "ACTIVE"
PAUSED = "PAUSED"
SHUTOFF = "SHUTOFF"
ERROR = "ERROR"
DELETED = "DELETED"

# Power states (Nova's power_state names).
RUNNING = "RUNNING"
POWER_PAUSED = "PAUSED"
SHUTDOWN = "SHUTDOWN"
CRASHED = "CRASHED"
NOSTATE = "NOSTATE"
