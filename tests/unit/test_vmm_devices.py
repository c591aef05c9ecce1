import os
import struct

import pytest
from computed.vmm._kvm import lib

from computed.vmm.bus import Bus, BusOverlapError
from computed.vmm.devices.console import ConsoleSink
from computed.vmm.devices.console_port import ConsoleWritePort
from computed.vmm.devices.platform import I8042, DebugExitPort, EventPort, PowerOffPort
from computed.vmm.devices.serial import Uart16550
from computed.vmm.log import RateLimitedLog
from computed.vmm.memory import GIB, GuestMemory


class Recorder:
    def __init__(self):
        self.calls = []

    def read(self, offset, size):
        self.calls.append(("read", offset, size))
        return b"\x42" * size

    def write(self, offset, data):
        self.calls.append(("write", offset, bytes(data)))

    def guest_power_off(self):
        self.calls.append("poweroff")

    def guest_debug_exit(self, code):
        self.calls.append(("debug-exit", code))

    def guest_reset(self):
        self.calls.append("reset")


def test_bus_dispatches_with_offsets_and_refuses_overlaps():
    bus = Bus("port", RateLimitedLog("t"))
    dev = Recorder()
    bus.insert(0x3F8, 8, dev)
    bus.write(0x3FB, b"\x80")
    assert bus.read(0x3F9, 1) == b"\x42"
    assert dev.calls == [("write", 3, b"\x80"), ("read", 1, 1)]
    for start, length in [(0x3F8, 1), (0x3F0, 9), (0x3FF, 4), (0x3F0, 0x20)]:
        with pytest.raises(BusOverlapError):
            bus.insert(start, length, Recorder())
    bus.insert(0x3F0, 8, Recorder())
    bus.insert(0x400, 1, Recorder())


def test_unclaimed_reads_float_high_and_are_counted():
    bus = Bus("port", RateLimitedLog("t"))
    assert bus.read(0x1234, 2) == b"\xff\xff"
    bus.write(0x1234, b"\0")
    assert bus.unclaimed == 2


def test_log_rate_limit_counts_what_it_drops(capfd):
    log = RateLimitedLog("t", burst=3, interval=60)
    for i in range(100):
        log.warn(f"m{i}")
    assert log.suppressed == 97
    assert capfd.readouterr().err.count("\n") == 3


def test_uart_transmits_bytes_and_reports_transmitter_empty(tmp_path):
    sink = ConsoleSink(str(tmp_path / "c.log"))
    uart = Uart16550(sink)
    for ch in b"hi":
        uart.write(0, bytes([ch]))
    assert uart.read(5, 1)[0] & 0x60 == 0x60
    assert (tmp_path / "c.log").read_bytes() == b"hi"  # unbuffered: visible at once


def test_uart_divisor_latch_does_not_transmit(tmp_path):
    sink = ConsoleSink(str(tmp_path / "c.log"))
    uart = Uart16550(sink)
    uart.write(3, b"\x80")  # DLAB on
    uart.write(0, b"\x01")
    assert uart.read(0, 1) == b"\x01"
    uart.write(3, b"\x03")
    assert (tmp_path / "c.log").read_bytes() == b""


def _console_write(port, memory, at, gpa, length, reserved=0):
    memory.write(at, struct.pack("<QII", gpa, length, reserved))
    port.write(0, at.to_bytes(4, "little"))


def test_console_port_writes_a_whole_string_from_guest_ram(tmp_path):
    memory = GuestMemory(4 << 20)
    port = ConsoleWritePort(memory, ConsoleSink(str(tmp_path / "c.log")))
    memory.write(0x200000, b"hello, console\n")
    _console_write(port, memory, 0x1000, 0x200000, 15)
    _console_write(port, memory, 0x1000, 0x200000, 0)  # nothing to write is fine
    assert (tmp_path / "c.log").read_bytes() == b"hello, console\n"
    assert port.refused == 0


def test_console_port_reads_bytes_above_4_gib(tmp_path):
    memory = GuestMemory(5 * GIB)  # MAP_NORESERVE: nothing is touched but these pages
    port = ConsoleWritePort(memory, ConsoleSink(str(tmp_path / "c.log")))
    high = memory.top - 4096
    memory.write(high, b"from high RAM")
    _console_write(port, memory, 0x1000, high, 13)
    assert (tmp_path / "c.log").read_bytes() == b"from high RAM"


def test_console_port_refuses_what_it_cannot_honour_and_writes_nothing(tmp_path):
    memory = GuestMemory(4 << 20)
    port = ConsoleWritePort(memory, ConsoleSink(str(tmp_path / "c.log")))
    memory.write(0x200000, b"x" * 8192)
    limit = lib.COMPUTED_CONSOLE_WRITE_MAX
    _console_write(port, memory, 0x1000, 0x200000, limit + 1)  # too long
    _console_write(port, memory, 0x1000, memory.top - 4, 5)  # bytes run off RAM's end
    _console_write(port, memory, 0x1000, 1 << 40, 1)  # bytes nowhere near RAM
    port.write(0, (memory.top - 8).to_bytes(4, "little"))  # descriptor runs off RAM
    port.write(0, 0xFFFFF000.to_bytes(4, "little"))  # descriptor outside RAM
    port.write(0, b"\x00\x10")  # not one 4-byte write
    port.write(1, b"\x00\x10\x00")
    assert port.refused == 7
    assert (tmp_path / "c.log").read_bytes() == b""
    _console_write(port, memory, 0x1000, 0x200000, limit)  # the longest allowed
    assert (tmp_path / "c.log").read_bytes() == b"x" * limit
    assert port.read(0, 4) == b"\0\0\0\0"


def test_console_rotates_at_its_cap(tmp_path):
    path = tmp_path / "console.log"
    sink = ConsoleSink(str(path), max_bytes=100)
    for _ in range(30):
        sink.write(b"0123456789")
    assert os.path.getsize(path) <= 100
    assert os.path.getsize(str(path) + ".0") <= 100


def test_platform_ports_report_to_the_lifecycle():
    life = Recorder()
    PowerOffPort(life).write(0, b"\0")
    DebugExitPort(life).write(0, (7).to_bytes(4, "little"))
    i8042 = I8042(life)
    i8042.write(4, b"\xaa")
    i8042.write(0, b"\xfe")  # 0xFE on the data port is just data
    i8042.write(4, b"\xfe")
    assert life.calls == ["poweroff", ("debug-exit", 7), "reset"]


def test_event_port_pending_bits_and_ack():
    events = EventPort()
    assert events.read(0, 4) == bytes(4)
    events.raise_event(1)
    assert events.read(0, 4) == (1).to_bytes(4, "little")
    events.write(0, (1).to_bytes(4, "little"))
    assert events.read(0, 1) == b"\0"
