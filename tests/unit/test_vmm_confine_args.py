"""The confinement options, both ends: the VMM's parser and the agent's command line."""

import pytest

from agent.vmm_process import Confinement, InstancePaths, vmm_command
from computed.store.records import InstanceSpec
from computed.vmm.config import parse_args
from computed.vmm.confine import SECUREBITS
from computed.vmm.errors import UsageError

J = "/s/i/u/jail"
FILES = [
    "-serial", f"file:{J}/console.log", "-control", f"unix:{J}/control.sock",
    "-pidfile", f"{J}/vmm.pid", "-exit-record", f"{J}/exit.json",
]  # fmt: skip
UUID = "5c0f0000-0000-4000-8000-0000000000ab"


def parse(*args: str):
    return parse_args(["-kernel", "/img", "-uuid", UUID, *args], lambda x: x)


def test_sandbox_with_run_with_and_cgroups_parses():
    c = parse(
        "-sandbox", "on", "-run-with", f"user=200001:200001,chroot={J}/",
        "-cgroup", "/sys/fs/cgroup/cpu/computed/u", "-cgroup", "/sys/fs/cgroup/memory/computed/u",
        *FILES,
    )  # fmt: skip
    assert (c.sandbox, c.run_as, c.chroot) == (True, (200001, 200001), J)
    assert c.cgroups == ["/sys/fs/cgroup/cpu/computed/u", "/sys/fs/cgroup/memory/computed/u"]


def test_sandbox_is_off_by_default_and_cgroups_need_no_sandbox():
    c = parse("-cgroup", "/sys/fs/cgroup/computed/u")
    assert (c.sandbox, c.run_as, c.chroot, c.cgroups) == (False, None, None, [c.cgroups[0]])
    assert parse("-sandbox", "off").sandbox is False


@pytest.mark.parametrize(
    "args, message",
    [
        (["-sandbox", "yes"], "expected on or off"),
        (["-sandbox", "on", *FILES], "needs -run-with user=UID:GID,chroot=DIR"),
        (["-sandbox", "on", "-run-with", "user=5:5", *FILES], "needs -run-with"),
        (["-sandbox", "on", "-run-with", f"chroot={J}", *FILES], "needs -run-with"),
        (["-run-with", f"user=5:5,chroot={J}"], "-run-with needs -sandbox on"),
        (["-sandbox", "on", "-run-with", f"user=0:5,chroot={J}"], "not root"),
        (["-sandbox", "on", "-run-with", f"user=5:0,chroot={J}"], "not root"),
        (["-sandbox", "on", "-run-with", f"user=nova,chroot={J}"], "numeric UID:GID"),
        (["-sandbox", "on", "-run-with", f"user=5:4294967295,chroot={J}"], "below"),
        (["-sandbox", "on", "-run-with", "user=5:5,chroot=jail"], "absolute directory"),
        (["-sandbox", "on", "-run-with", "user=5:5,chroot=/"], "not /"),
        (["-sandbox", "on", "-run-with", "user=5:5,chroot=/a/../"], "not /"),
        (["-run-with", "async-teardown=on"], "unknown option 'async-teardown'"),
        (["-run-with", "user=5:5,user=6:6"], "expected user=UID:GID,chroot=DIR"),
        (["-sandbox", "on", "-run-with", f"user=5:5,chroot={J}", "-pidfile", "/s/i/u/vmm.pid"],
         "-pidfile /s/i/u/vmm.pid: must be inside the -run-with chroot"),
        (["-sandbox", "on", "-run-with", f"user=5:5,chroot={J}",
          "-serial", f"file:{J}/../console.log"], "-serial file:"),
        (["-sandbox", "on", "-run-with", f"user=5:5,chroot={J}", "-control", f"unix:{J}x/c"],
         "-control unix:"),
        (["-cgroup", "sys/fs/cgroup/x"], "absolute cgroup directory"),
    ],
)  # fmt: skip
def test_inconsistent_confinement_is_refused_in_one_line(args, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")) as e:
        parse(*args)
    assert "\n" not in str(e.value)


def test_serial_stdio_is_fine_in_a_sandbox():
    c = parse("-sandbox", "on", "-run-with", f"user=5:5,chroot={J}", "-serial", "stdio")
    assert c.serial == "-"


def nics(*netdev: str):
    return parse(
        *[a for n in netdev for a in ("-netdev", n)], "-device", "virtio-net,netdev=a"
    ).nics


def test_a_tap_fd_is_handed_in_instead_of_a_name():
    (nic,) = nics("tap,id=a,fd=7,vhost=on,vhostfd=8")
    assert (nic.ifname, nic.tap_fd, nic.vhost, nic.vhost_fd) == (None, 7, True, 8)
    (nic,) = nics("tap,id=a,ifname=tap0")
    assert (nic.ifname, nic.tap_fd, nic.vhost_fd) == ("tap0", None, None)


@pytest.mark.parametrize(
    "netdev, message",
    [
        ("tap,id=a,fd=7,ifname=tap0", "either fd= or ifname="),
        ("tap,id=a", "either fd= or ifname="),
        ("tap,id=a,fd=2", "3 or more"),
        ("tap,id=a,fd=x", "file descriptor"),
        ("tap,id=a,fd=7,vhostfd=8", "vhostfd= needs vhost=on"),
        ("tap,id=a,fd=7,vhost=on,vhostfd=7", "handed in twice"),
        ("tap,id=a,fd=7,vhost=on,vhostfd=8,vhostdev=/dev/vhost-net", "not both"),
    ],
)
def test_bad_handed_in_fds_are_refused(netdev, message):
    with pytest.raises(UsageError, match=message):
        nics(netdev)


def test_securebits_lock_root_and_ambient_out_and_keep_setuid_fixup_on():
    from computed.vmm._confine import lib

    for bit in ("NOROOT", "NO_CAP_AMBIENT_RAISE"):
        assert SECUREBITS & getattr(lib, f"SECBIT_{bit}")
    for bit in ("NO_SETUID_FIXUP", "KEEP_CAPS"):
        assert not SECUREBITS & getattr(lib, f"SECBIT_{bit}")
    for bit in ("NOROOT", "NO_CAP_AMBIENT_RAISE", "NO_SETUID_FIXUP", "KEEP_CAPS"):
        assert SECUREBITS & getattr(lib, f"SECBIT_{bit}_LOCKED")


SPEC = InstanceSpec(
    uuid=UUID, name="instance-0000004a", image="heartbeat", vcpus=2, memory_mb=64,
    cmdline="", ip="10.213.0.100/24", gateway="10.213.0.1", mac="52:54:00:d5:00:64",
)  # fmt: skip


def test_a_confined_vmm_command_parses_back_into_its_own_confinement():
    paths = InstancePaths("/s/i/u")
    cgroups = ("/sys/fs/cgroup/cpu/computed/u", "/sys/fs/cgroup/memory/computed/u")
    argv = vmm_command(SPEC, paths, "vmm", Confinement(200007, 200007, cgroups), tap_fd=9)
    assert argv[argv.index("-netdev") + 1] == "tap,id=net0,fd=9,vhost=on"
    c = parse_args(argv[1:], lambda x: x)
    assert (c.sandbox, c.run_as, c.chroot) == (True, (200007, 200007), paths.jail)
    assert c.cgroups == list(cgroups)
    assert (c.serial, c.control) == (paths.console, paths.control)
    assert c.nics[0].tap_fd == 9


def test_an_unconfined_vmm_command_is_unchanged():
    argv = vmm_command(SPEC, InstancePaths("/s/i/u"), "vmm")
    assert "-sandbox" not in argv and "-run-with" not in argv and "-cgroup" not in argv
    assert argv[argv.index("-netdev") + 1].startswith("tap,id=net0,ifname=tap")
