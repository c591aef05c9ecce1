"""The transmit side of a 16550 UART, enough for a guest console.

The UART's register state lives here; where bytes go is the sink's business.
There is no receive path: RBR reads 0, LSR always reports the transmitter
empty so a polling guest never waits.
"""

from __future__ import annotations

from computed.vmm.devices.console import ConsoleSink

PORT_COUNT = 8
_THR, _IER, _IIR_FCR, _LCR, _MCR, _LSR, _MSR, _SCR = range(8)
_LCR_DLAB = 0x80
_LSR_THRE_TEMT = 0x60
_MSR_IDLE = 0xB0  # DCD | DSR | CTS
_IIR_NO_INTERRUPT = 0x01


class Uart16550:
    def __init__(self, sink: ConsoleSink) -> None:
        self.sink = sink
        self.regs = bytearray(PORT_COUNT)
        self.divisor = bytearray(2)

    def read(self, offset: int, size: int) -> bytes:
        return bytes([self._read_reg(offset)]) + b"\0" * (size - 1)

    def _read_reg(self, offset: int) -> int:
        dlab = self.regs[_LCR] & _LCR_DLAB
        if offset in (_THR, _IER) and dlab:
            return self.divisor[offset]
        if offset == _THR:
            return 0
        if offset == _IIR_FCR:
            return _IIR_NO_INTERRUPT
        if offset == _LSR:
            return _LSR_THRE_TEMT
        if offset == _MSR:
            return _MSR_IDLE
        return self.regs[offset]

    def write(self, offset: int, data: bytes) -> None:
        value = data[0]
        dlab = self.regs[_LCR] & _LCR_DLAB
        if offset in (_THR, _IER) and dlab:
            self.divisor[offset] = value
        elif offset == _THR:
            self.sink.write(data[:1])
        elif offset not in (_IIR_FCR, _LSR, _MSR):
            self.regs[offset] = value
