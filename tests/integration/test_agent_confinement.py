"""What an operator gets from the real agent by default: every VMM forked by the warm
parent, confined (own uid, no capabilities, seccomp on every thread, its jail, its
cgroup), and nothing of it left once the instance is deleted."""

from __future__ import annotations

import os

import pytest

from agent.cgroups import (
    InstanceCgroups,
    cgroup2_mount,
    favor_dynamic_changes,
    stop_favoring_dynamic_changes,
)
from agent.vmm_process import InstancePaths
from computed.api import agent_pb2
from tests.agent_harness import AgentProcess
from tests.integration.test_agent_process import alive, ref, spec
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

# What a confined VMM may hold open that is not in its jail: KVM's anonymous inodes
# (VM, vCPUs, eventfds), its sockets and pipes, /dev/kvm, the tap, stdin.
FDS_OUTSIDE_THE_JAIL = (
    "anon_inode:", "socket:", "pipe:", "/dev/kvm", "/dev/net/tun", "/dev/vhost-net", "/dev/null",
)  # fmt: skip


def proc_status(pid: int, tid: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    with open(path) as f:
        return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)


def test_a_vmm_the_agent_starts_is_forked_warm_confined_and_fully_removed(agent):
    a, b = spec(vcpus=2), spec()
    first = agent.stub.Spawn(agent_pb2.SpawnRequest(spec=a), timeout=30)
    second = agent.stub.Spawn(agent_pb2.SpawnRequest(spec=b), timeout=30)
    agent_pid = agent.proc.pid
    uids = set()
    for inst, s in ((first, a), (second, b)):
        pid = inst.pid
        paths = InstancePaths.of(agent.state_dir, s.uuid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:  # ps reads like qemu's line
            assert f"-name {s.name} -uuid {s.uuid}".encode() in f.read().replace(b"\0", b" ")
        status = proc_status(pid)
        assert int(status["PPid"]) == agent_pid  # forked warm, re-parented to the agent
        uid, gid = int(status["Uid"].split()[0]), int(status["Gid"].split()[0])
        assert uid != 0 and gid != 0 and set(status["Uid"].split()) == {str(uid)}
        uids.add(uid)
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[cap], 16) == 0, cap
        assert status["NoNewPrivs"].strip() == "1"
        for tid in os.listdir(f"/proc/{pid}/task"):
            assert proc_status(pid, int(tid))["Seccomp"].strip() == "2", tid
        for fd in os.listdir(f"/proc/{pid}/fd"):  # nothing open outside its jail but these
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            assert target.startswith((paths.jail + "/", *FDS_OUTSIDE_THE_JAIL)), (fd, target)
        root, jail = os.stat(f"/proc/{pid}/root"), os.stat(paths.jail)
        assert (root.st_dev, root.st_ino) == (jail.st_dev, jail.st_ino)  # pivoted into it
        cgroups = InstanceCgroups(agent.cgroup_parent)
        assert pid in cgroups.tasks(s.uuid)
    assert len(uids) == 2  # one uid per instance

    agent.stub.Delete(ref(a.uuid), timeout=30)
    wait_until(lambda: not alive(first.pid), what="the VMM gone after delete")
    assert not os.path.exists(InstancePaths.of(agent.state_dir, a.uuid).root)
    assert a.uuid not in InstanceCgroups(agent.cgroup_parent).instances()
    gone_uid = uids - {int(proc_status(second.pid)["Uid"].split()[0])}
    assert gone_uid.isdisjoint(uids_in_use())  # the deleted instance's uid is free again


def uids_in_use() -> set[int]:
    found = set()
    for p in os.listdir("/proc"):
        try:
            found.add(int(proc_status(int(p))["Uid"].split()[0]))
        except (ValueError, OSError):
            continue
    return found


def _cgroup2_favors_dynamic_changes() -> bool | None:
    """None where no cgroup2 is mounted (the option is then out of reach)."""
    with open("/proc/self/mountinfo") as f:
        mount = cgroup2_mount(f.read())
    return None if mount is None else "favordynmods" in mount[2]


def test_a_confining_agent_makes_cgroup_joins_cheap_unless_told_not_to(etcd, short_tmp):
    """favordynmods is host-wide: a VMM joining its new cgroup then skips an RCU grace
    period (4-20 ms at each launch here). The option is put back as it was found."""
    if _cgroup2_favors_dynamic_changes() is None:
        pytest.skip("no cgroup2 mount on this host")
    was_on = _cgroup2_favors_dynamic_changes()
    agents = []
    try:
        stop_favoring_dynamic_changes()
        told_not_to = AgentProcess(f"{short_tmp}/a", etcd.endpoint, "fdm-a",
                                   "--no-cgroup-favordynmods")  # fmt: skip
        agents.append(told_not_to)
        told_not_to.start()
        assert _cgroup2_favors_dynamic_changes() is False
        default = AgentProcess(f"{short_tmp}/b", etcd.endpoint, "fdm-b")
        agents.append(default)
        default.start()  # serving means its driver, and so the remount, is done
        assert _cgroup2_favors_dynamic_changes() is True
        assert "with favordynmods" in default.log()
    finally:
        for agent in agents:
            agent.cleanup()
        (favor_dynamic_changes if was_on else stop_favoring_dynamic_changes)()
