"""`-l SECS`: one side takes ~/.dovecot-sync.lock; a second run waits, then fails (75).

The lock is an fcntl (POSIX) lock as Dovecot's, so it is held by another process here.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pydsync_server.brain.run import run_local
from pydsync_server.brain.settings import SyncMode, SyncSettings
from pydsync_server.cli.lock import LOCK_NAME, lock_file, user_lock_for
from pydsync_server.errors import DsyncError
from pydsync_server.storage.memory import MemoryStorage

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_lock_waits_then_times_out(tmp_path: Path) -> None:
    holder = hold(tmp_path / LOCK_NAME, 30)
    start = time.monotonic()
    with pytest.raises(DsyncError, match="Couldn't lock"):
        lock_file(tmp_path / LOCK_NAME, 0.5)
    assert time.monotonic() - start >= 0.4
    holder.kill()
    holder.wait()
    release = lock_file(tmp_path / LOCK_NAME, 5)
    release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_sync_waits_for_the_lock_or_fails_with_tempfail(tmp_path: Path) -> None:
    a, b = MemoryStorage(), MemoryStorage()
    a.deliver("INBOX", b"Subject: x\n\n")
    settings = SyncSettings(mode=SyncMode.TWOWAY, lock_timeout=1)
    holder = hold(tmp_path / LOCK_NAME, 30)
    result = run_local(a, b, settings, timeout=30, user_lock=user_lock_for(str(tmp_path)))
    assert result.exit_code == 75
    assert any("Couldn't lock" in e for e in result.errors)
    holder.kill()
    holder.wait()
    short = hold(tmp_path / LOCK_NAME, 0.3)  # released while the sync waits
    result = run_local(a, b, settings, timeout=30, user_lock=user_lock_for(str(tmp_path)))
    short.wait()
    assert result.exit_code == 0, result.errors
    assert a.snapshot() == b.snapshot()
