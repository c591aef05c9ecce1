"""The agent's hypervisor seam: a Driver runs, stops and watches instances.

Everything else in the agent (servicer, supervisor, reporter, lease, records)
is shared, so `--driver fake` exercises the real control plane without KVM, as
Nova's fake virt driver and kubemark's hollow nodes do. `make_driver` is the
one place a driver is picked by name.
"""

from __future__ import annotations

from agent.drivers.base import Driver, DriverError, EventHandler, ExitHandler

DRIVERS = ("kvm", "fake")

__all__ = ["DRIVERS", "Driver", "DriverError", "EventHandler", "ExitHandler"]
