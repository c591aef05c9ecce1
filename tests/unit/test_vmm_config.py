import pytest

from computed.vmm.config import parse_args, parse_memory
from computed.vmm.errors import UsageError
from tests.unit.test_vmm_cpu_model import PENRYN


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


@pytest.mark.parametrize(
    "text,mib", [("128", 128), ("128M", 128), ("2G", 2048), ("2", 2), ("size=2G", 2048)]
)
def test_memory_sizes(text, mib):
    assert parse_memory(text) == mib


@pytest.mark.parametrize("text", ["0", "1", "abc", "-5", "65537", "1T", ""])
def test_bad_memory_is_refused_with_the_flag_named(text):
    with pytest.raises(UsageError, match="-m"):
        parse_memory(text)


@pytest.mark.parametrize(
    "argv,match",
    [
        ([], "-kernel"),
        (["-kernel"], "needs a value"),
        (["-kernel", "x", "-bogus"], "-bogus: unknown option"),
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
        (["-device", "e1000,netdev=a"], "-device e1000: not supported: the only NIC is virtio-net"),
        (["-netdev", "tap,id=a,ifname=t", "-device", "virtio-net-pci,netdev=a,bus=pci.0"],
         "bus=: not supported: there is no PCI bus"),
        (["-netdev", "tap,id=a,ifname=t,script=/etc/qemu-ifup", "-device", "virtio-net,netdev=a"],
         "script=/etc/qemu-ifup: not supported: the VMM runs no scripts"),
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


def test_qemu_nic_names_all_mean_our_virtio_mmio_nic():
    for driver in ("virtio-net-pci", "virtio-net-device", "virtio-net"):
        (nic,) = nic_args(
            "-netdev", "tap,id=a,fd=7,vhost=on,vhostfd=8,script=no,downscript=no,vnet_hdr=on",
            "-device", f"{driver},netdev=a,id=net0,mac=fa:16:3e:00:00:01",
        )  # fmt: skip
        assert (nic.tap_fd, nic.vhost_fd, nic.mac.hex(":")) == (7, 8, "fa:16:3e:00:00:01")


# --- the seed's command line, and what we refuse of qemu's -----------------------------

SEED_UUID = "3f6a1e2c-5b1d-4c7e-9a0b-000000000074"


def seed_argv(d: str = "/var/lib/nova/instances/x") -> list[str]:
    """A Nova host's libvirt line for instance-00000074, less what we do not model."""
    return [
        "-name", "guest=instance-00000074,debug-threads=on", "-S",
        "-machine", "microvm,accel=kvm,usb=off", "-cpu", PENRYN, "-m", "2048",
        "-smp", "2,sockets=2,cores=1,threads=1", "-uuid", SEED_UUID,
        "-no-user-config", "-nodefaults",
        "-chardev", f"socket,id=charmonitor,path={d}/monitor.sock,server,nowait",
        "-mon", "chardev=charmonitor,id=monitor,mode=control",
        "-rtc", "base=utc,driftfix=slew", "-global", "kvm-pit.lost_tick_policy=discard",
        "-no-hpet", "-no-shutdown", "-enable-kvm",
        "-netdev", "tap,fd=25,id=hostnet0,vhost=on,vhostfd=26",
        "-device", "virtio-net-pci,netdev=hostnet0,id=net0,mac=fa:16:3e:2b:9c:01",
        "-chardev", f"file,id=charserial0,path={d}/console.log",
        "-device", "isa-serial,chardev=charserial0,id=serial0",
        "-display", "none", "-vga", "none", "-kernel", "heartbeat",
    ]  # fmt: skip


def test_the_seed_command_line_parses_into_what_it_asks_for():
    c = parse_args(seed_argv(), resolve)
    assert (c.name, c.uuid, c.memory_mib, c.vcpus) == ("instance-00000074", SEED_UUID, 2048, 2)
    t = c.topology
    assert (t.sockets, t.dies, t.cores, t.threads) == (2, 1, 1, 1)
    assert c.cpu.name == "Penryn" and c.cpu.check and not c.cpu.enforce
    assert c.control == "/var/lib/nova/instances/x/monitor.sock"
    assert c.serial == "/var/lib/nova/instances/x/console.log"
    assert (c.start_paused, c.no_shutdown, c.pit_reinjection) == (True, True, False)
    assert [(n.tap_fd, n.vhost_fd) for n in c.nics] == [(25, 26)]


@pytest.mark.parametrize(
    "args",
    [
        ["-vnc", "127.0.0.1:1"], ["-spice", "port=5900"], ["-k", "en-us"], ["-usb"],
        ["-usbdevice", "tablet"], ["-soundhw", "ac97"], ["-audiodev", "none,id=a"],
        ["-drive", "file=/x.qcow2,if=none,id=drive-virtio-disk0"], ["-hda", "/x.img"],
        ["-cdrom", "/x.iso"], ["-blockdev", "driver=file,filename=/x"], ["-boot", "strict=on"],
        ["-bios", "/bios.bin"], ["-initrd", "/initrd"], ["-smbios", "type=1,serial=x"],
        ["-monitor", "stdio"], ["-daemonize"], ["-incoming", "defer"], ["-numa", "node"],
        ["-object", "memory-backend-ram,id=m"], ["-net", "nic"], ["-no-reboot"],
        ["-watchdog", "i6300esb"], ["-balloon", "virtio"], ["-parallel", "none"],
    ],
)  # fmt: skip
def test_each_qemu_option_we_do_not_model_is_refused_by_name(args):
    with pytest.raises(UsageError, match=f"^{args[0]}: not supported: ") as e:
        parse_args(["-kernel", "x", *args], resolve)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "driver",
    [
        "usb-tablet", "piix3-usb-uhci", "qemu-xhci", "virtio-balloon-pci", "ide-hd",
        "virtio-blk-pci", "scsi-hd", "cirrus-vga", "VGA", "qxl-vga", "e1000", "rtl8139",
        "intel-hda", "i6300esb", "virtio-serial-pci", "virtio-rng-pci", "pvpanic",
    ],
)  # fmt: skip
def test_each_device_we_do_not_model_is_refused_by_name(driver):
    with pytest.raises(UsageError, match=f"^-device {driver}: not supported: "):
        parse_args(["-kernel", "x", "-device", f"{driver},id=d0"], resolve)


@pytest.mark.parametrize(
    "args, words",
    [
        (["-machine", "pc-i440fx-trusty,accel=kvm"], "-machine pc-i440fx-trusty: not supported"),
        (["-M", "q35"], "-machine q35: not supported"),
        (["-machine", "accel=tcg"], "-machine accel=tcg: not supported: computed-vmm runs"),
        (["-machine", "usb=on"], "-machine usb=on: not supported: no USB"),
        (["-accel", "tcg"], "-accel accel=tcg: not supported"),
        (["-rtc", "base=localtime"], "-rtc base=localtime: not supported: no RTC"),
        (["-display", "gtk"], "-display gtk: not supported"),
        (["-vga", "std"], "-vga std: not supported"),
        (["-global", "isa-fdc.driveA=x"], "-global isa-fdc.driveA=x: not supported"),
        (["-name", "guest=x,debug-threads=off"], "debug-threads=off: not supported"),
        (["-name", "x,process=y"], "-name: unknown option 'process'"),
        (["-m", "size=2G,maxmem=8G"], "-m: unknown option 'maxmem'"),
        (["disk.img"], "disk.img: not an option"),
        (["-frobnicate"], "-frobnicate: unknown option"),
    ],
)  # fmt: skip
def test_platform_options_are_accepted_only_where_they_ask_for_what_we_are(args, words):
    with pytest.raises(UsageError, match=words.replace("(", r"\(")):
        parse_args(["-kernel", "x", *args], resolve)


def test_no_op_options_are_accepted():
    c = parse_args(
        ["-kernel", "x", "-nodefaults", "-no-user-config", "-enable-kvm", "--enable-kvm",
         "-display", "none", "-vga", "none", "-no-hpet", "-no-acpi", "-accel", "kvm",
         "-M", "microvm,accel=kvm,acpi=off,hpet=off,kernel-irqchip=on",
         "-rtc", "base=utc,clock=host,driftfix=none"],
        resolve,
    )  # fmt: skip
    assert (c.serial, c.control, c.start_paused, c.no_shutdown) == (None, None, False, False)


# --- chardevs: the control socket and the console ----------------------------------------


def test_control_socket_by_chardev_and_mon_qmp_or_our_control_alias():
    mon = ["-mon", "chardev=m,mode=control"]
    for args in (
        ["-chardev", "socket,id=m,path=/d/c.sock,server=on,wait=off", *mon],
        ["-chardev", "socket,id=m,path=/d/c.sock,server,nowait", *mon],
        ["-qmp", "unix:/d/c.sock,server=on,wait=off"],
        ["-control", "unix:/d/c.sock"],
    ):
        assert parse_args(["-kernel", "x", *args], resolve).control == "/d/c.sock"


def test_control_socket_handed_in_listening_by_fd_as_libvirt_hands_qemu_its_own():
    mon = ["-mon", "chardev=m,mode=control"]
    c = parse_args(
        ["-kernel", "x", "-chardev", "socket,id=m,fd=5,server=on,wait=off", *mon], resolve
    )
    assert (c.control, c.control_fd, c.sources["control"]) == (None, 5, "-chardev socket,fd=")
    for chardev, words in (
        ("socket,id=m,fd=5,path=/d/c.sock,server=on,wait=off", "path= or fd= is required"),
        ("socket,id=m,server=on,wait=off", "path= or fd= is required"),
        ("socket,id=m,fd=two,server=on,wait=off", "fd=two: expected an open fd number"),
        ("socket,id=m,fd=1,server=on,wait=off", "fd=1: expected an open fd number, 3 or more"),
    ):
        with pytest.raises(UsageError, match=words):
            parse_args(["-kernel", "x", "-chardev", chardev, *mon], resolve)
    with pytest.raises(UsageError, match="-qmp: unknown option 'fd'"):
        parse_args(["-kernel", "x", "-qmp", "unix:/d/c.sock,fd=5,server=on,wait=off"], resolve)


def test_console_by_chardev_and_isa_serial_or_serial():
    cases = {
        ("-chardev", "file,id=s,path=/d/con.log", "-device", "isa-serial,chardev=s"): "/d/con.log",
        ("-chardev", "file,id=s,path=/d/a,,b,append=on", "-serial", "chardev:s"): "/d/a,b",
        ("-chardev", "stdio,id=s", "-device", "isa-serial,chardev=s,id=serial0"): "-",
        ("-chardev", "null,id=s", "-device", "isa-serial,chardev=s"): None,
        ("-serial", "file:/d/con.log"): "/d/con.log",
        ("-serial", "null"): None,
        ("-serial", "none"): None,
        ("-nographic",): "-",  # qemu puts COM1 on stdio...
        ("-nographic", "-nodefaults"): None,  # ...unless told to add nothing
    }
    for args, serial in cases.items():
        assert parse_args(["-kernel", "x", *args], resolve).serial == serial, args


@pytest.mark.parametrize(
    "args, words",
    [
        (["-chardev", "pty,id=s"], "-chardev pty: not supported"),
        (["-chardev", "socket,id=m,host=127.0.0.1,port=4444,server=on,wait=off"], "path="),
        (["-chardev", "socket,id=m,path=/c,server=on,wait=off"], "'m': nothing uses it"),
        (["-chardev", "socket,id=m,path=/c,wait=off", "-mon", "chardev=m,mode=control"],
         "server=on is required"),
        (["-chardev", "socket,id=m,path=/c,server=on", "-mon", "chardev=m,mode=control"],
         "wait=off is required"),
        (["-chardev", "socket,id=m,path=/c,server,nowait", "-mon", "chardev=m"],
         "-mon chardev=m: not supported: only QMP"),
        (["-mon", "chardev=zz,mode=control"], "no -chardev has that id"),
        (["-qmp", "tcp:localhost:4444,server,nowait"], "-qmp tcp:localhost:4444,server,nowait"),
        (["-qmp", "unix:/a,server,nowait", "-control", "unix:/b"],
         "-control unix:: only one control monitor"),
        (["-chardev", "file,id=s,path=/a", "-device", "isa-serial,chardev=s",
          "-serial", "file:/b"], "-serial file:: only one serial port"),
        (["-chardev", "file,id=s,path=/a,append=off", "-serial", "chardev:s"], "append=off"),
        (["-chardev", "file,id=s,path=/a", "-chardev", "file,id=s,path=/b"], "id= of its own"),
        (["-chardev", "file,id=s,path=/a", "-serial", "chardev:s",
          "-device", "isa-serial,chardev=s"], "chardev 's' is already in use"),
        (["-chardev", "file,id=s,path=/a", "-mon", "chardev=s,mode=control"],
         "the monitor's chardev must be a socket"),
    ],
)  # fmt: skip
def test_bad_chardevs_name_the_option(args, words):
    with pytest.raises(UsageError, match=words):
        parse_args(["-kernel", "x", *args], resolve)


def test_a_sandboxed_chardev_path_outside_the_jail_names_its_option():
    with pytest.raises(UsageError, match="-chardev socket,path=/elsewhere/c: must be inside"):
        parse_args(
            ["-kernel", "x", "-sandbox", "on", "-run-with", "user=5:5,chroot=/j",
             "-chardev", "socket,id=m,path=/elsewhere/c,server=on,wait=off",
             "-mon", "chardev=m,mode=control"],
            resolve,
        )  # fmt: skip


# --- -S and -no-shutdown -------------------------------------------------------------------


def test_start_paused_and_no_shutdown_are_switches():
    c = parse_args(["-kernel", "x", "-S", "--no-shutdown"], resolve)
    assert (c.start_paused, c.no_shutdown) == (True, True)
