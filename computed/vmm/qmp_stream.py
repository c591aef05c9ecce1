"""Cut a QMP client's byte stream into requests, as qemu's JSON streamer does.

QMP is not line-based: qemu.qmp sends `{"execute":"stop"}` with no newline,
and a request may span lines. A request ends where its outermost `{…}` or
`[…]` closes, counting brackets outside strings. Around that:

- Stray bytes between requests (`nope`, `5`) run to the end of their line and
  are handed on as one request, which then fails to parse.
- A byte that can never be JSON here (a control character other than tab, CR
  and LF, or 0xFF) abandons the request being read: qmp-spec's way for a
  client to force the parser back into a known-good state.
- Nesting deeper than `max_depth` is refused before anything is parsed, so a
  line of 1,100 `[` costs a counter, never a recursion; the rest of that
  request is skipped, unbuffered, until its brackets balance.
- A request longer than `max_size` cannot be resynchronised: `overflowed`
  tells the caller to drop the client.

Pure (no I/O), and cheap to import: `re` is loaded at the first byte.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    import re

_OPEN, _CLOSE, _QUOTE, _BACKSLASH = b"{[", b"}]", ord('"'), ord("\\")
_patterns: tuple[re.Pattern[bytes], re.Pattern[bytes], re.Pattern[bytes]] | None = None


def _compiled() -> tuple[re.Pattern[bytes], re.Pattern[bytes], re.Pattern[bytes]]:
    global _patterns
    if _patterns is None:
        import re

        _patterns = (
            re.compile(rb"[^ \t\r\n]"),  # where the next request starts
            re.compile(rb'[\[\]{}"\x00-\x08\x0b\x0c\x0e-\x1f\xff]'),  # inside brackets
            re.compile(rb'["\\\x00-\x1f\xff]'),  # inside a string
        )
    return _patterns


def _find(pattern: re.Pattern[bytes], buf: bytearray, start: int) -> int:
    """Where `pattern` next matches in `buf`, or len(buf)."""
    m = pattern.search(buf, start)
    return len(buf) if m is None else m.start()


class Request:
    """One item cut from the stream: request bytes to parse, or an error to answer."""

    __slots__ = ("error", "text")

    def __init__(self, text: bytes = b"", error: str = "") -> None:
        self.text, self.error = text, error


class MessageSplitter:
    def __init__(self, max_size: int, max_depth: int) -> None:
        self.max_size, self.max_depth = max_size, max_depth
        self.overflowed = False
        self._buf = bytearray()  # the request being read, then bytes not yet scanned
        self._pos = 0  # next byte of _buf to scan
        self._depth = 0
        self._in_string = False
        self._stray = False  # reading stray bytes up to a newline
        self._skipping = False  # past max_depth: discarding until the brackets balance

    def feed(self, data: bytes) -> list[Request]:
        """Take bytes as they arrive; return the requests (and errors) they complete."""
        between, structural, in_string = _compiled()
        out: list[Request] = []
        buf = self._buf
        buf += data
        i = self._pos
        while i < len(buf):
            if self._in_string:
                i = _find(in_string, buf, i)
                if i == len(buf):
                    break
                c = buf[i]
                if c == _QUOTE:
                    self._in_string = False
                    i += 1
                elif c == _BACKSLASH:
                    if i + 1 == len(buf):
                        break  # the escaped byte has not arrived yet
                    i += 2
                else:
                    i = self._abandon(out, i)
            elif self._stray:
                nl = buf.find(b"\n", i)
                if nl < 0:
                    i = len(buf)
                    break
                out.append(Request(bytes(buf[:nl])))
                del buf[: nl + 1]
                self._stray, i = False, 0
            elif self._depth == 0:
                del buf[: _find(between, buf, i)]
                i = 0
                if not buf:
                    break
                if buf[0] in _OPEN:
                    self._depth, i = 1, 1
                else:
                    self._stray, i = True, 0
            else:
                i = _find(structural, buf, i)
                if i == len(buf):
                    break
                c = buf[i]
                if c == _QUOTE:
                    self._in_string = True
                    i += 1
                elif c in _OPEN:
                    self._depth += 1
                    i += 1
                    if self._depth > self.max_depth and not self._skipping:
                        out.append(Request(error="JSON nesting depth limit exceeded"))
                        self._skipping = True
                elif c in _CLOSE:
                    self._depth -= 1
                    i += 1
                    if self._depth == 0:
                        if not self._skipping:
                            out.append(Request(bytes(buf[:i])))
                        self._skipping = False
                        del buf[:i]
                        i = 0
                else:
                    i = self._abandon(out, i)
            if self._skipping and i:
                del buf[:i]  # nothing skipped is kept
                i = 0
        self._pos = i
        if len(buf) > self.max_size:
            self.overflowed = True
        return out

    def _abandon(self, out: list[Request], i: int) -> int:
        out.append(Request(error=f"JSON parse error, stray '\\x{self._buf[i]:02x}'"))
        del self._buf[: i + 1]
        self._depth, self._in_string, self._skipping = 0, False, False
        return 0
