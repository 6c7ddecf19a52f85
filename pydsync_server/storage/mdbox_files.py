"""The m.N files of an mdbox store (storage-formats.md §3.1, §3.2, §2.8): reading the
record a map entry points at (primary storage, then alt), writing new records the way
Dovecot places them, and a cache of file walks.

Writers take `flock(LOCK_EX|LOCK_NB)` on an m.N before appending and hold it until the
map is committed, as Dovecot does; new files are written as `.temp.*` and linked to
`m.<file_id>` once the map lock is held. Readers take no lock.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import MailError, StorageError
from . import dbox_file as dbox
from .mdbox_map import LockedMap, MapRecord, MapView

DEFAULT_ROTATE_SIZE = 10 * 1024 * 1024  # mdbox_rotate_size default (§0.3)
_FILE_NAME = re.compile(r"m\.([1-9][0-9]{0,9})")
_WALK_CACHE = 256
_CHUNK = 1 << 16  # a saved body is read in pieces of this size
_FLUSH = 1 << 20  # new bytes a file buffers before they are written out


def file_name(file_id: int) -> str:
    return f"m.{file_id}"


def parse_file_name(name: str) -> int | None:
    """The file_id of an `m.<decimal>` name; None for anything else (§3.6 step 2)."""
    match = _FILE_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def _oserror(exc: OSError, what: str) -> StorageError:
    mail_error = MailError.NOQUOTA if exc.errno in (28, 122) else MailError.TEMP
    return StorageError(f"{what} failed: {exc.strerror or exc}", mail_error)


class MdboxFiles:
    """The primary `storage/` directory and, with `:ALT=`, the alt one."""

    def __init__(
        self,
        storage_dir: Path,
        alt_dir: Path | None,
        rotate_size: int,
        hostname: str,
        clock: Callable[[], float],
    ) -> None:
        self.dir = storage_dir
        self.alt_dir = alt_dir
        self.rotate_size = max(rotate_size, 1)
        self.hostname = hostname
        self.clock = clock
        self._walks: dict[Path, tuple[tuple[int, int, int], dbox.Walk]] = {}

    def path(self, file_id: int) -> Path:
        """Where m.<file_id> is: primary, else alt; the primary path when in neither."""
        primary = self.dir / file_name(file_id)
        if self.alt_dir is not None and not primary.exists():
            alt = self.alt_dir / file_name(file_id)
            if alt.exists():
                return alt
        return primary

    def file_ids(self) -> dict[int, Path]:
        """Every m.N on disk; a primary file wins over an alt file of the same id."""
        found: dict[int, Path] = {}
        for directory in [d for d in (self.alt_dir, self.dir) if d is not None]:
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            for name in names:
                file_id = parse_file_name(name)
                if file_id is not None:
                    found[file_id] = directory / name
        return found

    def walk(self, file_id: int, *, recover: bool = False) -> dbox.Walk:
        """The records of m.<file_id>, cached while the file is unchanged."""
        path = self.path(file_id)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise StorageError(f"mdbox file {path} is missing", MailError.NOTFOUND) from None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._walks.get(path)
        if cached is not None and cached[0] == key and not recover:
            return cached[1]
        walk = dbox.read_file(path, recover=recover)
        if not recover:
            if len(self._walks) >= _WALK_CACHE:
                self._walks.pop(next(iter(self._walks)))
            self._walks[path] = (key, walk)
        return walk

    def metadata(self, rec: MapRecord) -> dbox.Record:
        """The record a map entry points at, from the file's walk; DboxCorruptError when
        the file does not hold a complete record of exactly that size there."""
        walk = self.walk(rec.file_id)
        for found in walk.records:
            if found.offset == rec.offset:
                if found.size != rec.size:
                    break
                return found
        path = str(self.path(rec.file_id))
        if walk.errors and walk.errors[0].offset <= rec.offset + rec.size:
            raise dbox.DboxCorruptError(walk.errors[0].reason, walk.errors[0].offset, path)
        raise dbox.DboxCorruptError(
            f"map points to offset {rec.offset} size {rec.size}, not a record", rec.offset, path
        )

    def read(self, rec: MapRecord) -> tuple[dbox.Record, bytes]:
        """The record and message bytes a map entry points at."""
        path = self.path(rec.file_id)
        try:
            with open(path, "rb") as f:
                header = dbox.parse_file_header(f.read(dbox.MAX_HEADER_LINE), str(path))
                return dbox.read_message(f, rec.offset, rec.size, header.msg_header_size, str(path))
        except FileNotFoundError:
            raise StorageError(
                f"mdbox file {path} is missing (map_uid {rec.map_uid})", MailError.NOTFOUND
            ) from None
        except OSError as exc:
            raise _oserror(exc, f"reading {path}") from exc

    def new_writer(self, view: MapView, *, append: bool = True) -> FileWriter:
        """A writer for new records; `append=False` never appends to an existing file."""
        return FileWriter(self, view, append)


@dataclass
class _Target:
    """Where some new records go: an existing, flocked m.N or a new temp file.

    Offsets are absolute in the file. `buf` holds the bytes from `buf_at` to `end` not
    written yet; `disk_end` is how far writes reached (beyond `end` after a cut)."""

    directory: Path
    file_id: int = 0  # 0 = a new file, named at assign()
    fd: int = -1
    start: int = 0  # file size before this write (existing file)
    temp: Path | None = None
    records: int = 0
    end: int = 0
    buf: bytearray = field(default_factory=bytearray)
    buf_at: int = 0
    disk_end: int = 0


class FileWriter:
    """New records of one transaction: `add()` or `add_message()` them (written out as
    they come, through a small buffer), `sync()` the files, `assign()` file ids under the
    map lock, `finish()` to release locks (or `abort()` to undo)."""

    def __init__(self, files: MdboxFiles, view: MapView, append: bool = True) -> None:
        self._files = files
        self._view = view
        self._append = append
        self._targets: list[_Target] = []
        self._where: list[tuple[int, int, int]] = []  # per record: (target, offset, size)
        self._last: _Target | None = None  # the target written to last
        self.highest_file_id = 0  # after assign(): the highest file_id it gave out

    def __bool__(self) -> bool:
        return bool(self._where)

    def add(self, record: bytes, *, directory: Path | None = None) -> int:
        """Queue an encoded record (dbox_file.encode_record); its index."""
        target = self._target_for(len(record), directory or self._files.dir)
        offset = self._begin(target)
        self._put(target, record)
        return self._added(target, offset)

    def add_message(self, body: BinaryIO, metadata: Callable[[int, int], bytes]) -> tuple[int, int]:
        """Stream `body` into a new record, its metadata block `metadata(body_size,
        virtual_size)`; (its index, body size). Memory stays at two chunks and the buffer.

        Like Dovecot's saves, the record goes where the file's size plus the body's stays
        below the rotate size (§3.2): exact when the body ends within the two chunks
        read ahead, else their size (Dovecot's non-exact size: files may end larger)."""
        ahead, chunks = _read_ahead(body)
        target = self._target_for(ahead, self._files.dir)
        offset = self._begin(target)
        try:
            self._put(target, bytes(dbox.MSG_HEADER_SIZE))  # the size goes in at the end
            size = vsize = 0
            after_cr = False
            for chunk in chunks:
                self._put(target, chunk)
                size += len(chunk)
                vsize += dbox.virtual_size_part(chunk, after_cr)
                after_cr = chunk[-1] == 0x0D
            self._put(target, metadata(size, vsize))
            self._patch(target, offset, dbox.encode_msg_header(size))
        except BaseException:
            self._cut(target, offset)
            raise
        return self._added(target, offset), size

    def drop_last(self) -> None:
        """Take back the record added last (a save that turned out stored already)."""
        t, offset, _ = self._where.pop()
        target = self._targets[t]
        target.records -= 1
        self._cut(target, offset)

    def _begin(self, target: _Target) -> int:
        """Where the next record starts; a new file gets its header line first. A file
        left for another is written out (only one buffer is ever held)."""
        if self._last is not None and self._last is not target:
            self._flush(self._last)
        self._last = target
        if target.file_id == 0 and target.end == 0:
            self._put(target, dbox.FileHeader(create_stamp=int(self._files.clock())).encode())
        return target.end

    def _added(self, target: _Target, offset: int) -> int:
        target.records += 1
        self._where.append((self._targets.index(target), offset, target.end - offset))
        return len(self._where) - 1

    def _target_for(self, size: int, directory: Path) -> _Target:
        """A target that stays below the rotate size with `size` more bytes (§3.2)."""
        rotate = self._files.rotate_size
        for target in self._targets:
            if target.directory == directory and target.end + size < rotate:
                return target
        if self._append and not self._targets and directory == self._files.dir:
            existing = self._appendable(size)
            if existing is not None:
                self._targets.append(existing)
                return existing
        target = _Target(directory)
        self._targets.append(target)
        return target

    def _appendable(self, size: int) -> _Target | None:
        """The newest m.N, if a record of `size` fits and it may be appended to (§3.2)."""
        ends = self._view.file_ends()
        if not ends:
            return None
        file_id = max(ends)
        path = self._files.dir / file_name(file_id)
        if ends[file_id] + size >= self._files.rotate_size:
            return None
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return None  # in alt storage, or gone: start a new file
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            header = dbox.parse_file_header(os.pread(fd, dbox.MAX_HEADER_LINE, 0))
            st = os.fstat(fd)
            # Still linked under its name: a purge may have replaced it before we locked.
            linked = st.st_nlink > 0 and os.stat(path).st_ino == st.st_ino
            if header.appendable and linked and st.st_size == ends[file_id]:
                end = ends[file_id]
                return _Target(self._files.dir, file_id, fd, end, end=end, buf_at=end, disk_end=end)
        except (OSError, StorageError):
            pass  # locked by another writer, or not ending where the map says
        os.close(fd)
        return None

    # -- the bytes --

    def _put(self, target: _Target, data: bytes) -> None:
        if len(data) >= _FLUSH:  # big: straight to the file, no copy into the buffer
            self._flush(target)
            self._pwrite(target, data, target.end)
            target.buf_at = target.end + len(data)
        else:
            target.buf += data
            if len(target.buf) >= _FLUSH:
                self._flush(target)
        target.end += len(data)

    def _patch(self, target: _Target, offset: int, data: bytes) -> None:
        """Overwrite bytes already added (a message header; never across buf_at)."""
        if offset >= target.buf_at:
            at = offset - target.buf_at
            target.buf[at : at + len(data)] = data
        else:
            self._pwrite(target, data, offset)

    def _cut(self, target: _Target, offset: int) -> None:
        """Forget what was added from `offset` on (sync() truncates what reached disk)."""
        if offset >= target.buf_at:
            del target.buf[offset - target.buf_at :]
        else:
            target.buf.clear()
            target.buf_at = offset
        target.end = offset

    def _flush(self, target: _Target) -> None:
        if target.buf:
            self._pwrite(target, target.buf, target.buf_at)
            target.buf_at += len(target.buf)
            target.buf.clear()

    def _pwrite(self, target: _Target, data: bytes | bytearray, offset: int) -> None:
        try:
            if target.fd < 0:
                target.directory.mkdir(parents=True, exist_ok=True)
                target.temp = target.directory / dbox.temp_name(self._files.hostname)
                target.fd = os.open(target.temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            _pwrite_all(target.fd, data, offset)
        except OSError as exc:
            raise _oserror(exc, f"writing to {target.directory}") from exc
        target.disk_end = max(target.disk_end, offset + len(data))

    def sync(self) -> None:
        """Write out and fsync every file (one fsync each, per commit); nothing is
        visible yet. A new file left without records is removed."""
        for target in self._targets:
            if not target.records and target.file_id == 0:
                self._drop_temp(target)
                continue
            self._flush(target)
            try:
                if target.disk_end > target.end:
                    os.ftruncate(target.fd, target.end)
                    target.disk_end = target.end
                if target.fd >= 0:
                    os.fsync(target.fd)
            except OSError as exc:
                raise _oserror(exc, f"writing to {target.directory}") from exc

    def _drop_temp(self, target: _Target) -> None:
        if target.fd >= 0:
            os.close(target.fd)
            target.fd = -1
        if target.temp is not None:
            target.temp.unlink(missing_ok=True)
            target.temp = None
        target.buf.clear()

    def assign(self, locked: LockedMap) -> list[tuple[int, int, int]]:
        """Name new files m.<id> (the map is locked); (file_id, offset, size) per record,
        in the order added. `highest_file_id` is then the map header's new value."""
        ends = locked.view.file_ends()
        for target in self._targets:
            if target.file_id and ends.get(target.file_id) != target.start:
                raise StorageError(f"m.{target.file_id} changed while appending (purged?); retry")
        ids = self._files.file_ids()
        next_id = max([locked.view.highest_file_id, *ids]) + 1
        for target in self._targets:
            if target.file_id == 0 and target.temp is not None:
                while True:
                    final = target.directory / file_name(next_id)
                    try:
                        os.link(target.temp, final)
                        break
                    except FileExistsError:
                        next_id += 1
                    except OSError as exc:
                        raise _oserror(exc, f"creating {final}") from exc
                target.file_id = next_id
                os.unlink(target.temp)
                target.temp = None
                dbox.fsync_dir(str(target.directory))
                next_id += 1
        self.highest_file_id = next_id - 1
        return [(self._targets[t].file_id, offset, size) for t, offset, size in self._where]

    def finish(self) -> None:
        """Release the locks (the map now knows the records)."""
        for target in self._targets:
            target.buf.clear()
            if target.fd >= 0:
                os.close(target.fd)
                target.fd = -1

    def abort(self) -> None:
        """Undo: cut appended files back, remove temp files and unreferenced new files."""
        for target in self._targets:
            try:
                if target.fd >= 0 and target.start and target.disk_end > target.start:
                    os.ftruncate(target.fd, target.start)
                if target.temp is not None:
                    target.temp.unlink(missing_ok=True)
                elif target.start == 0 and target.file_id:
                    (target.directory / file_name(target.file_id)).unlink(missing_ok=True)
            except OSError:
                pass
        self.finish()


def _read_ahead(body: BinaryIO) -> tuple[int, Iterator[bytes]]:
    """Up to two chunks of `body` read ahead: their size, and all of its chunks."""
    first = body.read(_CHUNK)
    second = body.read(_CHUNK) if first else b""

    def chunks() -> Iterator[bytes]:
        yield from (c for c in (first, second) if c)
        if second:
            while chunk := body.read(_CHUNK):
                yield chunk

    return len(first) + len(second), chunks()


def _pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class GuidIndex:
    """Message GUID -> the live stored copy, so a message saved again (into another
    mailbox) is referenced instead of stored twice (one copy per GUID, §3.5).

    Learns the GUIDs of map records it has not seen yet at each lookup (a message's
    GUID never changes; purge only moves it), so a big import costs one pass."""

    def __init__(self, files: MdboxFiles) -> None:
        self._files = files
        self._uid_validity = -1
        self._seen: set[int] = set()
        self._by_guid: dict[str, list[int]] = {}

    def find(self, guid: str, view: MapView) -> tuple[MapRecord, dbox.Record] | None:
        """A stored copy of `guid` with a refcount above zero, and its metadata
        (of the records known at the last `learn()`)."""
        for map_uid in self._by_guid.get(guid, ()):
            rec = view.records.get(map_uid)
            if rec is None or rec.refcount == 0:
                continue
            try:
                return rec, self._files.metadata(rec)
            except StorageError:
                continue  # unreadable: store the message again
        return None

    def add(self, uid_validity: int, map_uid: int, guid: str) -> None:
        """A record this process just stored: known without reading its file back."""
        if uid_validity == self._uid_validity and map_uid not in self._seen:
            self._seen.add(map_uid)
            self._by_guid.setdefault(guid, []).append(map_uid)

    def learn(self, view: MapView) -> None:
        """Take in the map records not seen yet."""
        if view.uid_validity != self._uid_validity:
            self._uid_validity, self._seen, self._by_guid = view.uid_validity, set(), {}
        new = [rec for uid, rec in view.records.items() if uid not in self._seen]
        by_file: dict[int, list[MapRecord]] = {}
        for rec in new:
            by_file.setdefault(rec.file_id, []).append(rec)
        for file_id, recs in by_file.items():
            try:
                at = {r.offset: r for r in self._files.walk(file_id).records}
            except StorageError:
                continue  # learnt again at the next lookup
            for rec in recs:
                self._seen.add(rec.map_uid)
                found = at.get(rec.offset)
                if found is not None and found.size == rec.size and found.metadata.guid:
                    self._by_guid.setdefault(found.metadata.guid, []).append(rec.map_uid)
