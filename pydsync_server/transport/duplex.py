"""A full-duplex byte stream over a read fd and a write fd, with stall timeout and rawlog.

Both dsync sides stream at once (dsync-protocol.md §10.1), so a background thread always
drains the peer into a `SpillBuffer` while the caller's thread writes; writes are
non-blocking and polled, so a peer that neither reads nor sends for `timeout` seconds
raises `IOStalledError` instead of hanging (§10.2, `-T`, default 600 s). `rawlog` is the
`-r PATH` file (see `rawlog.py`).
"""

from __future__ import annotations

import math
import os
import select
import socket
import stat
import threading
import time
from types import TracebackType

from ..errors import IOStalledError
from . import DEFAULT_TIMEOUT
from .rawlog import RawLog
from .spill import SpillBuffer

READ_SIZE = 64 * 1024
MAX_WRITE = 1024 * 1024


def _is_socket(fd: int) -> bool:
    return stat.S_ISSOCK(os.fstat(fd).st_mode)


class DuplexStream:
    """Blocking `read`/`write` over two fds (or one socket fd given twice).

    The stream owns the fds and closes them. `read` returns b"" at EOF and raises the
    reader's `OSError`, if any; `write` raises `OSError` (e.g. `BrokenPipeError`) when the
    peer is gone. Both raise `IOStalledError` once neither input arrived nor output made
    progress for `timeout` seconds. One thread may read while another writes.
    A `rawlog` given as a `RawLog` is owned (closed) by the stream too.
    """

    def __init__(
        self,
        read_fd: int,
        write_fd: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        rawlog: str | RawLog | None = None,
        spill_threshold: int = 4 * 1024 * 1024,
    ) -> None:
        self._read_fd = read_fd
        self._write_fd = write_fd
        self._timeout = timeout
        self._rawlog = RawLog(rawlog) if isinstance(rawlog, str) else rawlog
        self._buffer = SpillBuffer(spill_threshold)
        self._cond = threading.Condition()
        self._eof = False
        self._read_error: Exception | None = None
        self._closed = False
        self._write_closed = False
        self._last_activity = time.monotonic()
        self._write_was_blocking = os.get_blocking(write_fd)
        os.set_blocking(write_fd, False)
        self._write_poll = select.poll()
        self._write_poll.register(write_fd, select.POLLOUT)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._reader, name="dsync-reader", daemon=True)
        self._thread.start()

    @property
    def timeout(self) -> float:
        return self._timeout

    def __enter__(self) -> DuplexStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------

    def read(self, n: int = READ_SIZE) -> bytes:
        """Up to `n` bytes, blocking until at least one arrives; b"" at EOF."""
        with self._cond:
            while True:
                data = self._buffer.take(n)
                if data:
                    return data
                if self._read_error is not None:
                    raise self._read_error
                if self._eof:
                    return b""
                if self._closed:
                    raise ValueError("read from a closed DuplexStream")
                remaining = self._last_activity + self._timeout - time.monotonic()
                if remaining <= 0:
                    raise self._stalled()
                self._cond.wait(remaining)

    def _reader(self) -> None:
        """Thread body: move everything the peer sends into the buffer until EOF/close."""
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while True:
                events = poller.poll()
                if any(fd == self._wake_r for fd, _ in events):
                    return
                try:
                    data = os.read(self._read_fd, READ_SIZE)
                except BlockingIOError:
                    continue
                if self._rawlog is not None and data:
                    self._rawlog.received(data)
                with self._cond:
                    if data:
                        self._buffer.append(data)
                        self._last_activity = time.monotonic()
                    else:
                        self._eof = True
                    self._cond.notify_all()
                if not data:
                    return
        except Exception as exc:  # handed to the reading thread, which reports it
            with self._cond:
                self._read_error = exc
                self._cond.notify_all()

    # -- writing ---------------------------------------------------------------------

    def write(self, data: bytes | memoryview) -> None:
        """Write everything, waiting for the peer to drain; never blocks past the timeout."""
        if self._write_closed:
            raise ValueError("write to a DuplexStream whose write side is closed")
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._write_fd, view[:MAX_WRITE])
            except BlockingIOError:
                written = 0
            if written:
                if self._rawlog is not None:
                    self._rawlog.sent(view[:written])
                view = view[written:]
                self._touch()
                continue
            with self._cond:
                remaining = self._last_activity + self._timeout - time.monotonic()
            if remaining <= 0:
                raise self._stalled()
            self._write_poll.poll(math.ceil(remaining * 1000))

    def close_write(self) -> None:
        """Send EOF to the peer (close the pipe, or shut down a socket's sending half)."""
        if self._write_closed:
            return
        self._write_closed = True
        fd = self._write_fd
        os.set_blocking(fd, self._write_was_blocking)
        if _is_socket(fd):
            sock = socket.socket(fileno=fd)
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # already disconnected: EOF is what the peer sees anyway
            finally:
                sock.detach()
        if fd != self._read_fd:
            os.close(fd)

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        """Close both directions, stop the reader thread, release the spill file."""
        if self._closed:
            return
        self.close_write()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        os.write(self._wake_w, b"x")
        self._thread.join()
        for fd in (self._wake_r, self._wake_w, self._read_fd):
            os.close(fd)
        self._buffer.close()
        if self._rawlog is not None:
            self._rawlog.close()

    def _touch(self) -> None:
        with self._cond:
            self._last_activity = time.monotonic()

    def _stalled(self) -> IOStalledError:
        return IOStalledError(f"I/O has stalled, no activity for {self._timeout:g} seconds")
