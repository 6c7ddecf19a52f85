"""`-v` progress lines of `sync`/`backup`: per mailbox, bodies and bytes moved, rate
and ETA, at most one line per interval per user, and a final line per mailbox.

Lines go to standard error only (standard output carries the `-s` state, the plan or
the JSON report). Format, stable for scripts (see pydsync-sync(1)):
`dsync(USER): progress: MAILBOX: DONE/TOTAL messages (S sent, R received), BYTES, RATE/s, ETA T`
and at the end of each mailbox
`dsync(USER): progress: MAILBOX: done: N messages (S sent, R received), BYTES in SECONDS, RATE/s`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

# Progress lines per user at most this often (seconds); final lines are always printed.
INTERVAL = 0.5


@dataclass
class Transfer:
    """Bodies of one mailbox: planned and moved, each direction (master's view)."""

    started: float
    planned_sent: int = 0
    planned_received: int = 0
    sent: int = 0
    received: int = 0
    bytes: int = 0
    sent_bytes: int = 0

    @property
    def done(self) -> int:
        return self.sent + self.received

    @property
    def planned(self) -> int:
        return max(self.planned_sent + self.planned_received, self.done)


def human_bytes(count: float) -> str:
    """`512 B`, `3.1 KiB`, `14.0 MiB`, `2.5 GiB`."""
    if count < 1024:
        return f"{int(count)} B"
    for unit in ("KiB", "MiB", "GiB"):
        count /= 1024
        if count < 1024 or unit == "GiB":
            break
    return f"{count:.1f} {unit}"


def human_seconds(seconds: float) -> str:
    """`7s`, `3m05s`, `2h01m`."""
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def progress_line(vname: str, t: Transfer, now: float) -> str:
    elapsed = max(now - t.started, 1e-9)
    rate = t.bytes / elapsed
    remaining = t.planned - t.done
    eta = human_seconds(remaining * elapsed / t.done) if t.done else "?"
    return (
        f"{vname}: {t.done}/{t.planned} messages ({t.sent} sent, {t.received} received), "
        f"{human_bytes(t.bytes)}, {human_bytes(rate)}/s, ETA {eta}"
    )


def final_line(vname: str, t: Transfer, now: float) -> str:
    elapsed = max(now - t.started, 0.0)
    rate = t.bytes / elapsed if elapsed > 0 else 0.0
    return (
        f"{vname}: done: {t.done} messages ({t.sent} sent, {t.received} received), "
        f"{human_bytes(t.bytes)} in {elapsed:.1f}s, {human_bytes(rate)}/s"
    )


@dataclass
class Progress:
    """Prints one user's progress; `feed` the brain's events through `UserRun`."""

    stream: TextIO
    user: str
    clock: Callable[[], float] = time.monotonic
    interval: float = INTERVAL
    _last: float = field(default=float("-inf"), init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def update(self, vname: str, transfer: Transfer) -> None:
        now = self.clock()
        if now - self._last < self.interval:
            return
        self._last = now
        self._write(progress_line(vname, transfer, now))

    def finished(self, vname: str, transfer: Transfer) -> None:
        self._write(final_line(vname, transfer, self.clock()))

    def _write(self, line: str) -> None:
        with self._lock:
            self.stream.write(f"dsync({self.user}): progress: {line}\n")
            self.stream.flush()
