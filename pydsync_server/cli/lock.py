"""The per-user dsync lock of `-l SECS`: an fcntl write lock on ~/.dovecot-sync.lock.

Same file and lock type as Dovecot (dsync-algorithm.md §8.1), so pydsync and doveadm
runs for one user exclude each other. The brain decides which side locks.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import DsyncError

LOCK_NAME = ".dovecot-sync.lock"
_POLL = 0.1


def user_lock_for(home: str | None) -> Callable[[float], Callable[[], None]]:
    def take(timeout: float) -> Callable[[], None]:
        if not home:
            raise DsyncError("Couldn't lock: the user has no home directory")
        return lock_file(Path(home) / LOCK_NAME, timeout)

    return take


def lock_file(path: Path, timeout: float) -> Callable[[], None]:
    """Wait up to `timeout` seconds for the lock; the release function unlinks first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN) or time.monotonic() >= deadline:
                os.close(fd)
                raise DsyncError(
                    f"Couldn't lock {path}: Timed out after {timeout:g} seconds"
                ) from exc
            time.sleep(_POLL)

    def release() -> None:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing drops the lock

    return release
