"""Dot-stuffed streams (mail bodies, attribute values): encoder and incremental decoder.

Both work chunk by chunk with bounded memory (dsync-protocol.md §4). Line starts are
found with `bytes.find` (decoding: the native `find_lf_dot`, the hot loop of a body
received by a dsync-server), so a body costs a few passes over its bytes, not a loop
per byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .. import _native

STREAM_END = b"\r\n.\r\n"
_CR = 0x0D
_LF = 0x0A
_DOT = 0x2E


def dot_stuff(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Encode a value as a dsync stream (§4.1): double every `.` at a line start.

    Offset 0 counts as a line start (the CVE-2026-33606 fix that Dovecot 2.3.19.1+deb12u7
    and 2.4 have); a `.` after a bare CR does not. Ends with `\\r\\n.\\r\\n` always.
    """
    at_line_start = True
    for chunk in chunks:
        if not chunk:
            continue
        stuffed = chunk.replace(b"\n.", b"\n..")
        if at_line_start and chunk[0] == _DOT:
            stuffed = b"." + stuffed
        at_line_start = chunk[-1] == _LF
        yield stuffed
    yield STREAM_END


class DotUnstuffer:
    """Incremental §4.2 decoder consuming from a shared input buffer.

    A line terminator is held back until the next line shows whether it is the
    final `.` line (whose preceding `\\n` or `\\r\\n` is not part of the value).
    """

    def __init__(self) -> None:
        self._at_line_start = True  # offset 0 is a line start
        self._held = b""  # the previous line's terminator, not yet known to be data

    def step(self, buf: bytearray) -> tuple[bytes, bool]:
        """Consume what can be decided from `buf`: (value bytes, stream finished)."""
        out: list[bytes] = []
        while buf:
            if self._at_line_start:
                verdict = self._line_start(buf)
                if verdict is None:
                    break  # need more bytes to tell a `.` line from a stuffed dot
                if verdict:
                    return b"".join(out), True
                out.append(self._held)
                self._held = b""
                self._at_line_start = False
            else:
                out.append(self._middle(buf))
                if not self._at_line_start:
                    break
        return b"".join(out), False

    def _line_start(self, buf: bytearray) -> bool | None:
        """At a line start: True = end line consumed, False = data, None = undecided."""
        if buf[0] != _DOT:
            return False
        if len(buf) < 2:
            return None
        if buf[1] == _LF:
            del buf[:2]
            return True
        if buf[1] == _CR:
            if len(buf) < 3:
                return None
            if buf[2] == _LF:
                del buf[:3]
                return True
        del buf[:1]  # a stuffed dot: drop it, the rest of the line is data
        return False

    def _middle(self, buf: bytearray) -> bytes:
        """Inside a line: take data up to the next LF that is followed by a `.`."""
        index = _native.find_lf_dot(buf)
        if index >= 0:
            start = index - 1 if index > 0 and buf[index - 1] == _CR else index
            data = _take(buf, start)
            self._held = _take(buf, index + 1 - start)
            self._at_line_start = True
            return data
        # Keep back a tail that may still become part of "\r\n." / "\n.".
        keep = 2 if buf.endswith(b"\r\n") else 1 if buf[-1] in (_CR, _LF) else 0
        return _take(buf, len(buf) - keep)


def _take(buf: bytearray, n: int) -> bytes:
    """The first `n` bytes of `buf`, removed from it (one copy, not two)."""
    with memoryview(buf) as view:
        data = bytes(view[:n])
    del buf[:n]
    return data
