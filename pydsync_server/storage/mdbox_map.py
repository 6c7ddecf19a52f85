"""The mdbox map, `storage/dovecot.map.index*` (storage-formats.md §3.3): which m.N file,
offset and size each map_uid is, and how many mailbox records reference it.

Read with the shared Dovecot index reader; written only by appending transactions to
`dovecot.map.index.log` under its fcntl lock (§3.7, §6.7), as another Dovecot process
would. `MapChanges` collects one transaction: new records, refcount changes, moved
records (purge) and expunged records.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StorageError
from .dovecot_index import (
    MAP,
    REF,
    IndexPaths,
    IndexState,
    LockedLog,
    LogFile,
    LogFormatError,
    Transaction,
    create_log,
    locked_log,
    new_log_header,
    read_index,
)

MAP_PREFIX = "dovecot.map.index"
MAP_REC = struct.Struct("<III")  # file_id, offset, size
MAP_HDR = struct.Struct("<II")  # highest_file_id, rebuild_count
REF_REC = struct.Struct("<H")


@dataclass(frozen=True)
class MapRecord:
    """One physical message: `size` is the whole dbox record (header+message+metadata)."""

    map_uid: int
    file_id: int
    offset: int
    size: int
    refcount: int


@dataclass(frozen=True)
class MapView:
    """The map as read. `exists` False: no map yet (a new store)."""

    exists: bool
    uid_validity: int = 0
    highest_file_id: int = 0
    rebuild_count: int = 0
    next_uid: int = 1
    records: dict[int, MapRecord] = field(default_factory=dict)
    problem: str | None = None

    def file_ends(self) -> dict[int, int]:
        """Per file_id, the end of its last record the map knows about."""
        ends: dict[int, int] = {}
        for rec in self.records.values():
            ends[rec.file_id] = max(ends.get(rec.file_id, 0), rec.offset + rec.size)
        return ends


@dataclass
class MapChanges:
    """One map transaction. New records get map_uids in order at commit."""

    new: list[tuple[int, int, int]] = field(default_factory=list)  # (file_id, offset, size)
    refs: dict[int, int] = field(default_factory=dict)  # map_uid -> refcount diff
    moved: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # purge
    expunged: list[int] = field(default_factory=list)
    highest_file_id: int = 0  # raise the header's highest_file_id to this

    def ref(self, map_uid: int, diff: int) -> None:
        self.refs[map_uid] = self.refs.get(map_uid, 0) + diff
        if self.refs[map_uid] == 0:
            del self.refs[map_uid]

    def __bool__(self) -> bool:
        return bool(self.new or self.refs or self.moved or self.expunged or self.highest_file_id)


def view_from_state(state: IndexState, problem: str | None = None) -> MapView:
    hdr = state.ext_header(MAP.name) or b""
    highest, rebuilds = MAP_HDR.unpack(hdr[:8].ljust(8, b"\0"))
    records: dict[int, MapRecord] = {}
    for msg in state.messages.values():
        raw = state.record_data(msg, MAP.name) or bytes(12)
        ref = state.record_data(msg, REF.name) or bytes(2)
        file_id, offset, size = MAP_REC.unpack(raw[:12])
        records[msg.uid] = MapRecord(msg.uid, file_id, offset, size, REF_REC.unpack(ref[:2])[0])
    return MapView(True, state.uid_validity, highest, rebuilds, state.next_uid, records, problem)


class MapCache:
    """The last map read, brought up to date by replaying only the records appended
    since: the log is append-only until it is replaced (another inode or header) or
    Dovecot writes a new `dovecot.map.index` snapshot. A map of many messages is read
    at every mailbox refresh and commit, so a full replay each time would dominate."""

    def __init__(self, paths: IndexPaths) -> None:
        self.paths = paths
        self._key: tuple[object, ...] | None = None
        self._end = 0
        self._state: IndexState | None = None
        self._view: MapView | None = None

    def _file_key(self, data: bytes) -> tuple[object, ...] | None:
        try:
            log = os.stat(self.paths.log)
        except FileNotFoundError:
            return None
        try:
            index = os.stat(self.paths.index)
            snapshot: tuple[int, ...] = (index.st_ino, index.st_size, index.st_mtime_ns)
        except FileNotFoundError:
            snapshot = ()
        return (log.st_ino, data[:40], snapshot)

    def read(self, data: bytes | None = None) -> tuple[IndexState, MapView] | None:
        """(state, view) of the map; None when there is none. `data`: the log bytes
        when read through a locked descriptor."""
        if data is None:
            try:
                data = self.paths.log.read_bytes()
            except FileNotFoundError:
                data = None
        key = self._file_key(data) if data is not None else None
        if key is not None and data is not None and key == self._key and self._advance(data):
            assert self._state is not None and self._view is not None
            return self._state, self._view
        view = read_index(self.paths, data)
        if not view.exists:
            self._key = None
            return None
        self._state, self._end = view.state, view.log_end
        self._view = view_from_state(view.state, view.problem)
        self._key = key if view.problem is None else None
        return self._state, self._view

    def _advance(self, data: bytes) -> bool:
        """Replay what was appended since the cached read; False: read it all again."""
        assert self._state is not None
        if len(data) < self._end:
            return False
        if len(data) == self._end:
            return True
        log = LogFile.parse(data, str(self.paths.log))
        end = self._end
        try:
            for rec in log.records(self._end):
                self._state.apply(rec, log.header.minor_version)
                end = rec.end
        except LogFormatError:
            self._key = None
            return False
        if end != self._end:
            self._end = end
            self._view = view_from_state(self._state)
        return True


class MdboxMap:
    """The map of one storage directory (`<root>/storage`)."""

    def __init__(self, storage_dir: Path, clock: Callable[[], float]) -> None:
        self.paths = IndexPaths(storage_dir, MAP_PREFIX)
        self._clock = clock
        self.cache = MapCache(self.paths)

    def read(self) -> MapView:
        found = self.cache.read()
        return found[1] if found is not None else MapView(False)

    def create(self, uid_validity: int = 0, highest_file_id: int = 0, rebuilds: int = 0) -> bool:
        """Write a new, empty map (§3.7); False when one appeared meanwhile."""
        now = int(self._clock())
        t = Transaction()
        t.set_uid_validity(uid_validity or now)
        t.ext_intro(MAP)
        t.ext_hdr_update(0, MAP_HDR.pack(highest_file_id, rebuilds))
        t.ext_intro(REF)
        self.paths.directory.mkdir(parents=True, exist_ok=True)
        return create_log(self.paths.log, new_log_header(now), t)

    def ensure(self) -> MapView:
        """The map, created first when the store has none."""
        view = self.read()
        if not view.exists:
            self.create()
            view = self.read()
        return view

    @contextmanager
    def locked(self) -> Iterator[LockedMap]:
        """Hold the map log's write lock; the view is read through the locked fd."""
        self.ensure()
        try:
            with locked_log(self.paths.log) as log:
                yield LockedMap(log, self.cache)
        except FileNotFoundError as exc:
            raise StorageError(f"map index {self.paths.log} vanished") from exc


class LockedMap:
    """The map while its log is locked: read it, commit changes to it."""

    def __init__(self, log: LockedLog, cache: MapCache) -> None:
        self.log = log
        self.paths = cache.paths
        self._cache = cache
        self._reload()

    def _reload(self) -> None:
        found = self._cache.read(self.log.data)
        if found is None:
            raise StorageError(f"map index {self.paths.log} is empty")
        self.state, self.view = found

    def commit(self, changes: MapChanges) -> list[int]:
        """Write one transaction; the map_uids given to `changes.new`, in order."""
        if not changes:
            return []
        state, first = self.state, self.view.next_uid
        uids = list(range(first, first + len(changes.new)))
        t = Transaction()
        if uids:
            t.append([(uid, 0) for uid in uids])
        if changes.highest_file_id > self.view.highest_file_id:
            t.ext_intro(MAP, state)
            t.ext_hdr_update(0, struct.pack("<I", changes.highest_file_id))
        located = [(uid, MAP_REC.pack(*loc)) for uid, loc in zip(uids, changes.new, strict=True)]
        located += [(uid, MAP_REC.pack(*loc)) for uid, loc in sorted(changes.moved.items())]
        if located:
            t.ext_intro(MAP, state)
            t.ext_rec_update(located)
        if uids:
            t.ext_intro(REF, state)
            t.ext_rec_update([(uid, REF_REC.pack(1)) for uid in uids])
        incs = self._ref_changes(changes.refs)
        if incs:
            t.ext_intro(REF, state)
            t.ext_atomic_inc(incs)
        if changes.expunged:
            # Purge's expunges carry zero GUIDs (§3.5, observed).
            t.expunge_guid([(uid, bytes(16)) for uid in sorted(changes.expunged)])
        self.log.append(t)
        self._reload()
        return uids

    def _ref_changes(self, refs: dict[int, int]) -> list[tuple[int, int]]:
        """Refcount diffs of existing records; a count never goes below zero (an index
        log with a negative count is broken for every reader)."""
        out = []
        for uid, diff in sorted(refs.items()):
            rec = self.view.records.get(uid)
            if rec is not None:
                diff = max(diff, -rec.refcount)
                if diff:
                    out.append((uid, diff))
        return out

    def set_rebuild(self, highest_file_id: int, rebuild_count: int) -> None:
        """Header write of a rebuild (§3.6 step 6)."""
        t = Transaction()
        t.ext_intro(MAP, self.state)
        t.ext_hdr_update(0, MAP_HDR.pack(highest_file_id, rebuild_count))
        self.log.append(t)
        self._reload()
