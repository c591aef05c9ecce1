"""Instance cgroups: layout detection, limits and the files written, v1 and v2.

v2 is exercised against a temp dir standing in for /sys/fs/cgroup (the
writes land in plain files there); real cgroups are in the integration test.
"""

import os

import pytest

from agent.cgroups import (
    CPU_PERIOD_US,
    CgroupError,
    CgroupLayout,
    InstanceCgroups,
    detect_layout,
    distinct,
    favordynmods_target,
    instance_dirs,
    limit_writes,
    limits_for,
    own_cgroups,
    parent_dirs,
    subtree_control_writes,
)
from computed.limits import MIB

UUID = "5c0f0000-0000-4000-8000-0000000000ab"

HYBRID = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw
"""


def test_a_hybrid_host_is_v1_per_controller():
    layout = detect_layout(HYBRID)
    assert layout.version == 1
    assert layout.mounts == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory",
        "pids": "/sys/fs/cgroup/pids",
    }


def test_a_unified_host_is_v2():
    layout = detect_layout(UNIFIED)
    assert layout == CgroupLayout(2, dict.fromkeys(("cpu", "memory", "pids"), "/sys/fs/cgroup"))


def test_favordynmods_goes_on_the_cgroup2_mount_once_and_only_where_there_is_one():
    assert favordynmods_target(HYBRID) == "/sys/fs/cgroup/unified"  # it rules v1 moves too
    assert favordynmods_target(UNIFIED) == "/sys/fs/cgroup"
    on = UNIFIED.replace("cgroup2 cgroup2 rw", "cgroup2 cgroup2 rw,nsdelegate,favordynmods")
    assert favordynmods_target(on) is None
    pure_v1 = "\n".join(line for line in HYBRID.splitlines() if "cgroup2" not in line)
    assert favordynmods_target(pure_v1) is None


def test_v1_without_a_pids_hierarchy_or_no_cgroups_at_all_is_refused():
    with pytest.raises(CgroupError, match="lack pids"):
        detect_layout("\n".join(HYBRID.splitlines()[:4]))
    with pytest.raises(CgroupError, match="no cgroup"):
        detect_layout("22 27 0:21 / /proc rw - proc proc rw\n")


def test_the_agents_own_cgroup_is_read_per_controller():
    text = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/a\n0::/\n"
    assert own_cgroups(text, detect_layout(HYBRID)) == {
        "cpu": "/a",
        "memory": "/process_api/abc",
        "pids": "/",
    }
    assert own_cgroups("0::/system.slice/agent.service\n", detect_layout(UNIFIED)) == {
        c: "/system.slice/agent.service" for c in ("cpu", "memory", "pids")
    }


def test_parents_sit_under_the_root_or_under_our_own_cgroup():
    v1 = detect_layout(HYBRID)
    assert parent_dirs(v1, "computed", {})["memory"] == "/sys/fs/cgroup/memory/computed"
    own = {"cpu": "/", "memory": "/process_api/abc", "pids": "/"}
    dirs = parent_dirs(v1, "./t1", own)
    assert dirs["memory"] == "/sys/fs/cgroup/memory/process_api/abc/t1"
    assert dirs["cpu"] == "/sys/fs/cgroup/cpu,cpuacct/t1"
    for bad in ("", "/abs", "../up", "a/../../b", "./"):
        with pytest.raises(CgroupError, match="relative path"):
            parent_dirs(v1, bad, own)


def test_v1_has_one_cgroup_per_hierarchy_and_v2_one():
    v1 = instance_dirs(parent_dirs(detect_layout(HYBRID), "computed", {}), UUID)
    assert distinct(v1) == [
        f"/sys/fs/cgroup/cpu,cpuacct/computed/{UUID}",
        f"/sys/fs/cgroup/memory/computed/{UUID}",
        f"/sys/fs/cgroup/pids/computed/{UUID}",
    ]
    v2 = instance_dirs(parent_dirs(detect_layout(UNIFIED), "machine.slice/computed", {}), UUID)
    assert distinct(v2) == [f"/sys/fs/cgroup/machine.slice/computed/{UUID}"]


def test_limits_follow_the_flavor():
    one, four = limits_for(1, 128), limits_for(4, 4096)
    assert one.cpu_period_us == CPU_PERIOD_US
    assert four.cpu_quota_us - one.cpu_quota_us == 3 * CPU_PERIOD_US
    assert one.cpu_quota_us > CPU_PERIOD_US  # the VMM's own threads get some room
    assert one.memory_bytes > 128 * MIB and four.memory_bytes > 4096 * MIB
    assert four.memory_bytes - 4096 * MIB >= one.memory_bytes - 128 * MIB  # page tables grow
    assert four.pids_max - one.pids_max == 3


def test_v1_writes_per_controller_files():
    dirs = {"cpu": "/c/u", "memory": "/m/u", "pids": "/p/u"}
    limits = limits_for(2, 256)
    assert limit_writes(1, dirs, limits) == [
        ("/c/u/cpu.cfs_period_us", str(CPU_PERIOD_US)),
        ("/c/u/cpu.cfs_quota_us", str(limits.cpu_quota_us)),
        ("/m/u/memory.limit_in_bytes", str(limits.memory_bytes)),
        ("/p/u/pids.max", str(limits.pids_max)),
    ]


def test_v2_enables_controllers_down_to_the_parent():
    assert subtree_control_writes("/sys/fs/cgroup", "/sys/fs/cgroup/a/b") == [
        ("/sys/fs/cgroup/cgroup.subtree_control", "+cpu +memory +pids"),
        ("/sys/fs/cgroup/a/cgroup.subtree_control", "+cpu +memory +pids"),
        ("/sys/fs/cgroup/a/b/cgroup.subtree_control", "+cpu +memory +pids"),
    ]


def test_v2_layout_in_a_stand_in_for_sys_fs_cgroup(tmp_path):
    root = str(tmp_path)
    cgroups = InstanceCgroups("machine.slice/computed", CgroupLayout(2, dict.fromkeys(
        ("cpu", "memory", "pids"), root)))  # fmt: skip
    made = cgroups.create(UUID, vcpus=2, memory_mb=512)
    instance = os.path.join(root, "machine.slice", "computed", UUID)
    assert made == [instance] == cgroups.dirs(UUID)
    limits = limits_for(2, 512)

    def read(*parts: str) -> str:
        return (tmp_path.joinpath(*parts)).read_text()

    assert read("cgroup.subtree_control") == "+cpu +memory +pids"
    assert read("machine.slice", "computed", "cgroup.subtree_control") == "+cpu +memory +pids"
    sub = ("machine.slice", "computed", UUID)
    assert read(*sub, "cpu.max") == f"{limits.cpu_quota_us} {CPU_PERIOD_US}"
    assert read(*sub, "memory.max") == str(limits.memory_bytes)
    assert read(*sub, "pids.max") == str(limits.pids_max)
    assert cgroups.create(UUID, vcpus=2, memory_mb=512) == made  # idempotent (a restart)
