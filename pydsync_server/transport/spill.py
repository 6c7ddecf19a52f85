"""A FIFO byte buffer that keeps at most `threshold` bytes in memory, the rest in a temp file.

The reader thread of `DuplexStream` appends everything the peer sends, however busy the
brain is (dsync-protocol.md §10.1: keep reading while writing), so memory stays bounded
while a 1 GB mail arrives and nobody consumes it yet. Not thread-safe: the caller locks.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque


class SpillBuffer:
    """FIFO of bytes: memory first; once memory would exceed `threshold`, new data goes
    to an unlinked temporary file until everything spilled has been read back."""

    def __init__(self, threshold: int = 4 * 1024 * 1024) -> None:
        self._threshold = threshold
        self._chunks: deque[bytes] = deque()
        self._mem_size = 0
        self._file_fd: int | None = None
        self._file_read = 0  # offset of the next unread spilled byte
        self._file_write = 0  # end of the spilled data

    def __len__(self) -> int:
        return self._mem_size + self._file_write - self._file_read

    @property
    def spilling(self) -> bool:
        """True while data sits in the temp file (new data must go there too, for order)."""
        return self._file_write > self._file_read

    def append(self, data: bytes) -> None:
        if not data:
            return
        if not self.spilling and self._mem_size + len(data) <= self._threshold:
            self._chunks.append(data)
            self._mem_size += len(data)
            return
        fd = self._spill_fd()
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, self._file_write)
            self._file_write += written
            view = view[written:]

    def take(self, n: int) -> bytes:
        """Remove and return up to `n` bytes (b"" only when empty)."""
        if self._chunks:
            chunk = self._chunks.popleft()
            if len(chunk) > n:
                self._chunks.appendleft(chunk[n:])
                chunk = chunk[:n]
            self._mem_size -= len(chunk)
            return chunk
        if self.spilling and self._file_fd is not None:
            want = min(n, self._file_write - self._file_read)
            data = os.pread(self._file_fd, want, self._file_read)
            self._file_read += len(data)
            if not self.spilling:
                # Drained: rewind so the file does not grow forever; memory is used again.
                os.ftruncate(self._file_fd, 0)
                self._file_read = self._file_write = 0
            return data
        return b""

    def close(self) -> None:
        if self._file_fd is not None:
            os.close(self._file_fd)
            self._file_fd = None
        self._chunks.clear()
        self._mem_size = self._file_read = self._file_write = 0

    def _spill_fd(self) -> int:
        if self._file_fd is None:
            fd, path = tempfile.mkstemp(prefix="pydsync-in.")
            os.unlink(path)  # nothing to clean up later, even after a crash
            self._file_fd = fd
        return self._file_fd
