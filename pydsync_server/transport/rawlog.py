"""`-r PATH`: a raw log of both directions of the dsync stream in one file, as Dovecot writes it.

Format of `doveadm dsync-server -r PATH` 2.3.19 [verified against the installed binary]:
one file at PATH (created 0600, appended to), both directions interleaved, every line of
the stream prefixed with `<unix secs>.<usecs, 6 digits> I: ` (received) or ` O: ` (sent).
A line is held back until its LF arrives; once 8192 bytes are pending without an LF they
are written with the marker `I> ` / `O> ` instead (the line continues in the next record).
Unlike Dovecot, bytes still pending at close are written (with `>`), not dropped.
`LoggedStream` puts a RawLog on any `ByteStream` (`tcp:`/`tcps:`: the dsync bytes after
the doveadm preamble, without the multiplex framing).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from .stream import ByteStream

MAX_LINE = 8192  # longest line held back before it is written unfinished


class RawLog:
    """Thread-safe: the reader thread logs input while the caller's thread logs output."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o600)
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = {b"I": bytearray(), b"O": bytearray()}

    def received(self, data: bytes | memoryview) -> None:
        self._log(b"I", bytes(data))

    def sent(self, data: bytes | memoryview) -> None:
        self._log(b"O", bytes(data))

    def close(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            now = self._clock()
            tail = b"".join(
                self._stamp(now, direction, b">") + pending
                for direction, pending in self._pending.items()
                if pending
            )
            _write_all(self._fd, tail)
            os.close(self._fd)
            self._fd = -1

    def _log(self, direction: bytes, data: bytes) -> None:
        with self._lock:
            if self._fd < 0 or not data:
                return
            now = self._clock()  # one time per transfer, as Dovecot
            pending = self._pending[direction]
            records: list[bytes] = []
            start = 0
            while start < len(data):
                newline = data.find(b"\n", start)
                if newline >= 0:
                    end, marker = newline + 1, b":"
                elif len(pending) + len(data) - start < MAX_LINE:
                    pending += data[start:]
                    break
                else:
                    end, marker = len(data), b">"
                records += (self._stamp(now, direction, marker), bytes(pending), data[start:end])
                pending.clear()
                start = end
            _write_all(self._fd, b"".join(records))

    @staticmethod
    def _stamp(now: float, direction: bytes, marker: bytes) -> bytes:
        usecs = int(now * 1_000_000)
        return b"%d.%06d %s%s " % (usecs // 1_000_000, usecs % 1_000_000, direction, marker)


class LoggedStream:
    """A `ByteStream` that logs what is read from and written to `inner`; `close()`
    closes `inner` (through `close_inner`) and then the log."""

    def __init__(
        self, inner: ByteStream, rawlog: RawLog, close_inner: Callable[[], object]
    ) -> None:
        self._inner = inner
        self._rawlog = rawlog
        self._close_inner = close_inner

    def read(self, n: int = 65536) -> bytes:
        data = self._inner.read(n)
        self._rawlog.received(data)
        return data

    def write(self, data: bytes | memoryview) -> None:
        self._inner.write(data)
        self._rawlog.sent(data)

    def close_write(self) -> None:
        self._inner.close_write()

    def close(self) -> None:
        try:
            self._close_inner()
        finally:
            self._rawlog.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
