"""What one `sync`/`backup` run did, counted from events, and its `--json` report.

`UserRun` is one user's observer: the master brain's events (brain/events.py) give the
bodies moved each way, the stores' write events (storage/observed.py) what changed on
each side. Nothing here compares stores. `RunReport` gathers the users of a run (the
worker pool fills it from several threads) and writes the report, schema
`pydsync-report/1`, documented in pydsync-sync(1).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..brain.settings import SyncResult
from ..errors import DsyncError, ExitCode
from ..storage.observed import WriteEvent
from .progress import Progress, Transfer

SCHEMA = "pydsync-report/1"
LOCAL, REMOTE = "local", "remote"
TREE_KINDS = frozenset(
    {"create", "create-dir", "delete", "delete-dir", "rename", "subscribe", "unsubscribe"}
)


@dataclass
class SideCounts:
    """Writes that took effect on one side of one mailbox."""

    saved: int = 0
    saved_bytes: int = 0
    copied: int = 0
    flags_changed: int = 0
    expunged: int = 0
    uid_renumbers: int = 0
    attributes_changed: int = 0
    uidvalidity_changed: int = 0

    def add(self, event: WriteEvent) -> None:
        kind = event.kind
        if kind == "save":
            self.saved += 1
            self.saved_bytes += event.size
        elif kind == "copy":
            self.copied += 1
            if event.detail.startswith(f"from {event.mailbox} UID "):
                self.uid_renumbers += 1  # a second instance under a new UID (§3.6.5)
        elif kind == "renumber":
            self.uid_renumbers += 1
        elif kind == "flags":
            self.flags_changed += 1
        elif kind == "expunge":
            self.expunged += 1
        elif kind == "attribute":
            self.attributes_changed += 1
        elif kind == "uidvalidity":
            self.uidvalidity_changed += 1

    def merge(self, other: SideCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class MailboxStats:
    name: str
    transfer: Transfer
    guid: str = ""
    ended: float | None = None
    sides: dict[str, SideCounts] = field(
        default_factory=lambda: {LOCAL: SideCounts(), REMOTE: SideCounts()}
    )


class UserRun:
    """One user's run. A `SyncObserver` for the master brain, and `sink(side)` gives
    the write callback of each observed store. Thread-safe."""

    def __init__(
        self,
        user: str,
        destination: str,
        *,
        remote_observed: bool = True,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.user = user
        self.destination = destination
        self.remote_observed = remote_observed
        self.progress = progress
        self.clock = clock
        self.started = clock()
        self.duration = 0.0
        self.boxes: dict[str, MailboxStats] = {}
        self.writes: list[tuple[str, WriteEvent]] = []
        self.exit_code: int | None = None
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.state: str | None = None
        self._lock = threading.Lock()

    def _box(self, vname: str) -> MailboxStats:
        box = self.boxes.get(vname)
        if box is None:
            box = self.boxes[vname] = MailboxStats(vname, Transfer(self.clock()))
        return box

    # -- SyncObserver --------------------------------------------------------------

    def mailbox_begin(self, vname: str, guid: str) -> None:
        with self._lock:
            box = self._box(vname)
            box.guid = guid
            box.transfer.started = self.clock()

    def transfer_planned(self, vname: str, *, outgoing: bool, count: int) -> None:
        with self._lock:
            transfer = self._box(vname).transfer
            if outgoing:
                transfer.planned_sent += count
            else:
                transfer.planned_received += count

    def mail_sent(self, vname: str, size: int) -> None:
        self._moved(vname, size, sent=True)

    def mail_received(self, vname: str, size: int) -> None:
        self._moved(vname, size, sent=False)

    def _moved(self, vname: str, size: int, *, sent: bool) -> None:
        with self._lock:
            box = self._box(vname)
            transfer = box.transfer
            if sent:
                transfer.sent += 1
            else:
                transfer.received += 1
            transfer.bytes += size
            if sent:
                transfer.sent_bytes += size
            if self.progress is not None:
                self.progress.update(vname, transfer)

    def mailbox_end(self, vname: str) -> None:
        with self._lock:
            box = self._box(vname)
            box.ended = self.clock()
            if self.progress is not None:
                self.progress.finished(vname, box.transfer)

    # -- store writes --------------------------------------------------------------

    def sink(self, side: str) -> Callable[[WriteEvent], None]:
        def note(event: WriteEvent) -> None:
            with self._lock:
                self.writes.append((side, event))
                if event.kind not in TREE_KINDS and event.kind != "purge":
                    self._box(event.mailbox).sides[side].add(event)

        return note

    # -- the end ---------------------------------------------------------------------

    def finish(self, result: SyncResult | None, *, state: str | None = None) -> None:
        with self._lock:
            self.duration = self.clock() - self.started
            if result is not None:
                self.exit_code = int(result.exit_code)
                self.errors = list(result.errors)
                self.warnings = list(result.warnings)
                if result.changes_during_sync is not None:
                    self.warnings.append(result.changes_during_sync)
            self.state = state

    def failed(self, exc: DsyncError) -> None:
        """The run ended with an error before the brains returned a result."""
        with self._lock:
            self.duration = self.clock() - self.started
            self.exit_code = int(exc.exit_code)
            self.errors.append(str(exc))

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            boxes = [self._box_json(box) for box in self.boxes.values()]
            changes = [
                _write_json(side, event)
                for side, event in self._by_side()
                if event.kind in TREE_KINDS or event.kind == "purge"
            ]
            code = self.exit_code if self.exit_code is not None else int(ExitCode.FAILURE)
            return {
                "user": self.user,
                "destination": self.destination,
                "exit_code": code,
                "exit_class": exit_class(code),
                "duration": round(self.duration, 6),
                "errors": list(self.errors),
                "warnings": list(self.warnings),
                "state": self.state,
                "remote_observed": self.remote_observed,
                "mailbox_changes": changes,
                "mailboxes": boxes,
                "totals": self._totals(),
            }

    def _box_json(self, box: MailboxStats) -> dict[str, Any]:
        t = box.transfer
        sent_bytes = t.sent_bytes
        ended = box.ended if box.ended is not None else self.clock()
        return {
            "name": box.name,
            "guid": box.guid or None,
            "duration": round(max(ended - t.started, 0.0), 6),
            "to_remote": {"messages": t.sent, "bytes": sent_bytes},
            "to_local": {"messages": t.received, "bytes": t.bytes - sent_bytes},
            LOCAL: _side_json(box.sides[LOCAL]),
            REMOTE: _side_json(box.sides[REMOTE]) if self.remote_observed else None,
        }

    def _totals(self) -> dict[str, Any]:
        sides = {LOCAL: SideCounts(), REMOTE: SideCounts()}
        to_remote = {"messages": 0, "bytes": 0}
        to_local = {"messages": 0, "bytes": 0}
        for box in self.boxes.values():
            json_box = self._box_json(box)
            for key, total in (("to_remote", to_remote), ("to_local", to_local)):
                total["messages"] += json_box[key]["messages"]
                total["bytes"] += json_box[key]["bytes"]
            for side, counts in box.sides.items():
                sides[side].merge(counts)
        return {
            "to_remote": to_remote,
            "to_local": to_local,
            LOCAL: _side_json(sides[LOCAL]),
            REMOTE: _side_json(sides[REMOTE]) if self.remote_observed else None,
        }

    def plan(self) -> list[tuple[str, WriteEvent]]:
        """Every write, (side, event): the local side's, then the remote side's, each in
        the order it happened (the two brains of a local run write concurrently)."""
        with self._lock:
            return self._by_side()

    def _by_side(self) -> list[tuple[str, WriteEvent]]:
        return [w for side in (LOCAL, REMOTE) for w in self.writes if w[0] == side]


def _side_json(counts: SideCounts) -> dict[str, int]:
    return {name: getattr(counts, name) for name in counts.__dataclass_fields__}


def _write_json(side: str, event: WriteEvent) -> dict[str, Any]:
    return {
        "side": side,
        "action": event.kind,
        "mailbox": event.mailbox,
        "uid": event.uid or None,
        "detail": event.detail,
        "size": event.size,
    }


def exit_class(code: int) -> str:
    """`ok`, `changes_during_sync`, `tempfail`, ... (ExitCode names, lower case)."""
    try:
        return ExitCode(code).name.lower()
    except ValueError:
        return "failure"


@dataclass
class RunReport:
    """The users of one run, reported together."""

    command: str
    dry_run: bool = False
    started_at: float = field(default_factory=time.time)
    clock: Callable[[], float] = time.monotonic
    users: list[UserRun] = field(default_factory=list)
    _started: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._started = self.clock()

    def add(self, run: UserRun) -> None:
        with self._lock:
            self.users.append(run)

    def to_json(self, exit_code: int) -> dict[str, Any]:
        with self._lock:
            users = sorted(self.users, key=lambda u: u.user)
        return {
            "schema": SCHEMA,
            "command": self.command,
            "dry_run": self.dry_run,
            "started_at": round(self.started_at, 3),
            "duration": round(self.clock() - self._started, 6),
            "exit_code": exit_code,
            "exit_class": exit_class(exit_code),
            "users": [self._user_json(user) for user in users],
        }

    def _user_json(self, user: UserRun) -> dict[str, Any]:
        found = user.to_json()
        if self.dry_run:
            found["plan"] = [_write_json(side, event) for side, event in user.plan()]
        return found

    def write(self, target: str, exit_code: int, stdout: BinaryIO) -> None:
        """To `target` (`-`: standard output), a file atomically (temp, fsync, rename)."""
        data = (json.dumps(self.to_json(exit_code), indent=2, ensure_ascii=False) + "\n").encode()
        if target == "-":
            stdout.write(data)
            stdout.flush()
            return
        write_atomic(Path(target), data)


def write_atomic(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
