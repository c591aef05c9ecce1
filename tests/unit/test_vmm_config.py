import pytest

from computed.vmm.config import MAX_VCPUS, parse_args, parse_memory, parse_smp
from computed.vmm.errors import UsageError


def resolve(spec: str) -> str:
    return f"/images/{spec}" if "/" not in spec else spec


def test_full_qemu_style_command_line_parses():
    c = parse_args(
        [
            "-name",
            "instance-0000004a",
            "-uuid",
            "5C0F0000-0000-4000-8000-000000000001",
            "-m",
            "256",
            "-smp",
            "2",
            "-kernel",
            "heartbeat",
            "-append",
            "ticks=10",
            "-serial",
            "file:/d/console.log",
            "-control",
            "unix:/d/control.sock",
            "-pidfile",
            "/d/vmm.pid",
            "-no-kvm-pit-reinjection",
            "-exit-record",
            "/d/exit.json",
        ],
        resolve,
    )
    assert c.name == "instance-0000004a"
    assert c.uuid == "5c0f0000-0000-4000-8000-000000000001"
    assert (c.memory_mib, c.vcpus, c.kernel, c.append) == (256, 2, "/images/heartbeat", "ticks=10")
    assert (c.serial, c.control, c.pidfile) == ("/d/console.log", "/d/control.sock", "/d/vmm.pid")
    assert c.pit_reinjection is False
    assert c.exit_record == "/d/exit.json"


def test_defaults_and_stdio_serial():
    c = parse_args(["-kernel", "/x/img", "-serial", "stdio"], resolve)
    assert (c.memory_mib, c.vcpus, c.serial, c.control, c.pit_reinjection) == (
        128,
        1,
        "-",
        None,
        True,
    )


@pytest.mark.parametrize("text,mib", [("128", 128), ("128M", 128), ("2G", 2048), ("2", 2)])
def test_memory_sizes(text, mib):
    assert parse_memory(text) == mib


@pytest.mark.parametrize("text", ["0", "1", "abc", "-5", "65537", "1T", ""])
def test_bad_memory_is_refused_with_the_flag_named(text):
    with pytest.raises(UsageError, match="-m"):
        parse_memory(text)


@pytest.mark.parametrize("text", ["0", str(MAX_VCPUS + 1), "100000", "two", "-1"])
def test_absurd_smp_is_refused(text):
    with pytest.raises(UsageError, match="-smp"):
        parse_smp(text)


def test_smp_accepts_qemu_cpus_form():
    assert parse_smp("cpus=4") == 4


@pytest.mark.parametrize(
    "argv,match",
    [
        ([], "-kernel"),
        (["-kernel"], "needs a value"),
        (["-kernel", "x", "-bogus"], "unknown option"),
        (["-kernel", "x", "-uuid", "not-a-uuid"], "not a UUID"),
        (["-kernel", "x", "-name", "bad name!"], "-name"),
        (["-kernel", "x", "-serial", "tcp:1.2.3.4"], "file:PATH"),
        (["-kernel", "x", "-control", "/no/prefix"], "unix:PATH"),
        (["-kernel", "x", "-append", "a" * 5000], "longer than"),
        (["-kernel", "x", "-shutdown-timeout", "soon"], "seconds"),
    ],
)
def test_usage_errors_name_what_is_wrong(argv, match):
    with pytest.raises(UsageError, match=match):
        parse_args(argv, resolve)


NET_UUID = "5c0f0000-0000-4000-8000-0000000000ab"


def nic_args(*extra):
    return parse_args(["-kernel", "/x", "-uuid", NET_UUID, *extra], lambda x: x).nics


def test_netdev_and_device_pair_up():
    nics = nic_args(
        "-netdev", "tap,id=a,ifname=tap0,vhost=on", "-device", "virtio-net,netdev=a",
        "-netdev", "tap,id=b,ifname=tap1", "-device", "virtio-net,netdev=b,mac=52:54:00:01:02:03",
    )  # fmt: skip
    assert [(n.ifname, n.vhost, n.mac.hex(":")) for n in nics] == [
        ("tap0", True, "52:54:00:00:00:ab"),
        ("tap1", False, "52:54:00:01:02:03"),
    ]
    assert nic_args() == []
    assert [n.vhost_device for n in nics] == ["/dev/vhost-net"] * 2


def test_vhostdev_names_where_the_kernel_vhost_net_is_looked_for():
    (nic,) = nic_args(
        "-netdev", "tap,id=a,ifname=t,vhost=on,vhostdev=/run/vhost",
        "-device", "virtio-net,netdev=a",
    )  # fmt: skip
    assert (nic.vhost, nic.vhost_device) == (True, "/run/vhost")


@pytest.mark.parametrize(
    "args, message",
    [
        (["-netdev", "user,id=a"], "only tap"),
        (["-netdev", "tap,id=a"], "ifname= are required"),
        (["-netdev", "tap,id=a,ifname=t,vhost=maybe", "-device", "virtio-net,netdev=a"], "vhost"),
        (["-netdev", "tap,id=a,ifname=" + "x" * 16], "1..15"),
        (["-netdev", "tap,id=a,ifname=t,vhostdev=/dev/vhost-net"], "needs vhost=on"),
        (["-netdev", "tap,id=a,ifname=t,vhost=on,vhostdev=vhost-net"], "absolute path"),
        (["-netdev", "tap,id=a,ifname=t,queues=4"], "unknown option 'queues'"),
        (["-netdev", "tap,id=a,ifname=t"], "has no -device"),
        (["-device", "virtio-net,netdev=zz"], "must name a -netdev"),
        (["-device", "e1000,netdev=a"], "only virtio-net"),
        (["-netdev", "tap,id=a,ifname=t", "-device", "virtio-net,netdev=a,mac=01:00:00:00:00:01"],
         "multicast"),
        (["-netdev", "tap,id=a,ifname=t", "-device", "virtio-net,netdev=a,mac=zz"], "six hex"),
        (["-netdev", "tap,id=a,ifname=t", "-device", "virtio-net,netdev=a",
          "-device", "virtio-net,netdev=a"], "used twice"),
    ],
)  # fmt: skip
def test_bad_network_flags_say_what_is_wrong(args, message):
    with pytest.raises(UsageError, match=message):
        nic_args(*args)
