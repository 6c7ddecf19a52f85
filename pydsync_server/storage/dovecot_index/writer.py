"""Writing an index the way Dovecot accepts it from another program (storage-formats.md
§6.7, §3.7, §4.4): only ever append transactions to `dovecot.index.log`, or create a
new log; never write `dovecot.index`, caches or `.log.2`.

A transaction is built with `Transaction` and written by `append_transaction` under
the log's fcntl write lock (Dovecot's `lock_method = fcntl`), in one write at the end
of the last complete record, wrapped in a BOUNDARY record and closed by the
EXTERNAL header update of `log_file_tail_offset` Dovecot requires. A new log is
written under `<log>.newlock` (created exclusively, as Dovecot does), fsync'ed and
renamed into place.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ...errors import StorageError
from . import records as r
from .logfile import LogFile, LogHeader
from .state import FIELD_FIRST_RECENT_UID, FIELD_NEXT_UID, FIELD_UID_VALIDITY, IndexState

LOCK_TIMEOUT = 120.0
FILE_MODE = 0o600


@dataclass(frozen=True)
class ExtSpec:
    """An extension's identity and sizes, as introduced in a log (§6.4)."""

    name: str
    hdr_size: int
    record_size: int = 0
    record_align: int = 0


# Extensions of the formats (§3.3, §3.4, §4.2, §6.4).
MODSEQ = ExtSpec("modseq", 16, 8, 8)
DBOX_HDR = ExtSpec("dbox-hdr", 24)
MDBOX_HDR = ExtSpec("mdbox-hdr", 24)
MDBOX = ExtSpec("mdbox", 0, 8, 4)
GUID = ExtSpec("guid", 0, 16, 1)
MAP = ExtSpec("map", 8, 12, 4)
REF = ExtSpec("ref", 0, 2, 2)


class Transaction:
    """The records of one log transaction, encoded as they are added.

    Every record is EXTERNAL unless `external=False` (a change that already happened,
    §6.7); `sync=True` marks them as dsync's (its log scan then skips them, §3.4).
    """

    def __init__(self, *, external: bool = True, sync: bool = False) -> None:
        self.external = external
        self.sync = sync
        self._records: list[bytes] = []

    def __bool__(self) -> bool:
        return bool(self._records)

    def _add(self, kind: int, body: bytes) -> None:
        self._records.append(r.encode_record(kind, body, external=self.external, sync=self.sync))

    # -- header --

    def header_update(self, offset: int, data: bytes) -> None:
        self._add(r.HEADER_UPDATE, r.encode_updates([(offset, data)]))

    def set_uid_validity(self, uid_validity: int) -> None:
        self.header_update(FIELD_UID_VALIDITY, struct.pack("<I", uid_validity))

    def set_next_uid(self, next_uid: int) -> None:
        """Raise next_uid (Dovecot ignores a smaller value)."""
        self.header_update(FIELD_NEXT_UID, struct.pack("<I", next_uid))

    def set_first_recent_uid(self, uid: int) -> None:
        self.header_update(FIELD_FIRST_RECENT_UID, struct.pack("<I", uid))

    # -- extensions --

    def ext_intro(self, spec: ExtSpec, state: IndexState | None = None) -> None:
        """Select an extension by name (creating it if new), with its current sizes and
        reset id when `state` knows it (§6.7 step 5)."""
        ext = state.ext(spec.name) if state is not None else None
        if ext is not None:
            intro = r.ExtIntro(
                r.EXT_ID_BY_NAME, ext.reset_id, ext.hdr_size, ext.record_size,
                ext.record_align, r.EXT_INTRO_NO_SHRINK, spec.name,
            )  # fmt: skip
        else:
            intro = r.ExtIntro(
                r.EXT_ID_BY_NAME, 0, spec.hdr_size, spec.record_size,
                spec.record_align, r.EXT_INTRO_NO_SHRINK, spec.name,
            )  # fmt: skip
        self._add(r.EXT_INTRO, intro.encode())

    def enable_modseqs(self, state: IndexState) -> None:
        """Introduce the `modseq` extension unless the index has it: Dovecot rejects a
        MODSEQ_UPDATE before it ("modseqs updated before they were enabled"). Its header
        names the current highest modseq, which existing messages then get, as when
        Dovecot enables it; call it before the transaction's other records."""
        if state.ext(MODSEQ.name) is None:
            self.ext_intro(MODSEQ)
            self.ext_hdr_update(0, struct.pack("<QII", max(state.modseq, 1), 0, 0))

    def ext_hdr_update(self, offset: int, data: bytes) -> None:
        """Overwrite bytes of the header of the extension the last intro selected."""
        self._add(r.EXT_HDR_UPDATE, r.encode_updates([(offset, data)]))

    def ext_rec_update(self, entries: Iterable[tuple[int, bytes]]) -> None:
        """Record data (exactly the extension's record size) per UID."""
        body = b"".join(r.pad4(struct.pack("<I", uid) + data) for uid, data in entries)
        if body:
            self._add(r.EXT_REC_UPDATE, body)

    def ext_atomic_inc(self, entries: Iterable[tuple[int, int]]) -> None:
        body = b"".join(struct.pack(r.ATOMIC_INC_FMT, uid, diff) for uid, diff in entries)
        if body:
            self._add(r.EXT_ATOMIC_INC, body)

    # -- messages --

    def append(self, messages: Iterable[tuple[int, int]]) -> None:
        """New messages as (uid, flags), UIDs ascending and >= next_uid."""
        body = b"".join(struct.pack(r.APPEND_FMT, uid, flags) for uid, flags in messages)
        if body:
            self._add(r.APPEND, body)

    def flag_update(self, uid1: int, uid2: int, add: int, remove: int) -> None:
        self._add(r.FLAG_UPDATE, struct.pack(r.FLAG_UPDATE_FMT, uid1, uid2, add, remove, 0))

    def keyword_update(self, name: str, add: bool, uids: Iterable[int]) -> None:
        uids = list(uids)
        if uids:
            self._add(r.KEYWORD_UPDATE, r.encode_keyword_update(name, add, uids))

    def keyword_reset(self, uids: Iterable[int]) -> None:
        body = r.encode_ranges(uids)
        if body:
            self._add(r.KEYWORD_RESET, body)

    def expunge(self, uids: Iterable[int]) -> None:
        body = r.encode_ranges(uids)
        if body:
            self._add(r.EXPUNGE, body)

    def expunge_guid(self, entries: Iterable[tuple[int, bytes]]) -> None:
        """Expunges with the messages' 128-bit GUIDs (zeros when unknown)."""
        body = b"".join(struct.pack(r.EXPUNGE_GUID_FMT, uid, guid) for uid, guid in entries)
        if body:
            self._add(r.EXPUNGE_GUID, body)

    def modseq_update(self, entries: Iterable[tuple[int, int]]) -> None:
        """Raise messages' modseqs (uid 0: the highest modseq) to at least the value."""
        body = b"".join(
            struct.pack(r.MODSEQ_FMT, uid, modseq & 0xFFFFFFFF, modseq >> 32)
            for uid, modseq in entries
        )
        if body:
            self._add(r.MODSEQ_UPDATE, body)

    def attribute_update(self, changes: Iterable[r.AttributeChange]) -> None:
        changes = list(changes)
        if changes:
            self._add(r.ATTRIBUTE_UPDATE, r.encode_attribute_update(changes))

    # -- encoding --

    def encode(self, offset: int) -> bytes:
        """The transaction as written at `offset`: BOUNDARY, records, tail update."""
        body = b"".join(self._records)
        total = 12 + len(body) + r.TAIL_UPDATE_SIZE
        boundary = r.encode_record(r.BOUNDARY, struct.pack("<I", total), external=True)
        tail = r.encode_record(
            r.HEADER_UPDATE,
            r.encode_updates([(r.TAIL_OFFSET_FIELD, struct.pack("<I", offset + total))]),
            external=True,
        )
        return boundary + body + tail


@dataclass
class LockedLog:
    """A `.log` opened and write-locked; `data` is what it held when the lock was taken."""

    path: Path
    fd: int
    data: bytes

    def append(self, transaction: Transaction) -> int:
        """Write a transaction after the last complete record (a partial record left by
        a crashed writer is cut off first); the new end of the log."""
        end = LogFile.parse(self.data, str(self.path)).complete_size()
        payload = transaction.encode(end)
        try:
            if len(self.data) != end:
                os.ftruncate(self.fd, end)
            _pwrite_all(self.fd, payload, end)
            os.fdatasync(self.fd)
        except OSError as exc:
            try:
                os.ftruncate(self.fd, end)  # leave no half transaction behind
            except OSError:
                pass
            raise StorageError(f"Can't write {self.path}: {exc.strerror}") from exc
        self.data = self.data[:end] + payload
        return end + len(payload)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, pos = [], 0
    while pos < size:
        chunk = os.pread(fd, size - pos, pos)
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)


@contextmanager
def locked_log(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[LockedLog]:
    """Open `path` and hold its fcntl write lock (re-opening when the log was rotated
    while waiting). Raises FileNotFoundError when there is no log."""
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR)
        try:
            _lock(fd, path, deadline)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass  # rotated away while we waited: take the new one
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield LockedLog(path, fd, _read_fd(fd))
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock(fd: int, path: Path, deadline: float) -> None:
    delay = 0.005
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise StorageError(f"Can't lock {path}: {exc.strerror}") from exc
        if time.monotonic() >= deadline:
            raise StorageError(f"Timeout while waiting for the lock of {path}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def create_log(path: Path, header: LogHeader, transaction: Transaction) -> bool:
    """Write a new log holding `transaction`, unless one appeared meanwhile (then
    False: append to it instead). `<log>.newlock` is the creation lock."""
    newlock = path.with_name(path.name + ".newlock")
    try:
        fd = os.open(newlock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        if time.time() - _mtime(newlock) < 30:
            raise StorageError(f"{newlock} exists: another process is creating the log") from None
        newlock.unlink(missing_ok=True)  # stale: its creator died
        return create_log(path, header, transaction)
    except OSError as exc:
        raise StorageError(f"Can't create {newlock}: {exc.strerror}") from exc
    renamed = False
    try:
        if path.exists():
            return False
        head = header.encode()
        _pwrite_all(fd, head + transaction.encode(len(head)), 0)
        os.fsync(fd)
        os.rename(newlock, path)
        renamed = True
        fsync_dir(path.parent)
        return True
    except OSError as exc:
        raise StorageError(f"Can't create {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
        if not renamed:
            newlock.unlink(missing_ok=True)


def replace_log(path: Path, header: LogHeader, transaction: Transaction) -> None:
    """Atomically put a new log with `transaction` in place of `path` (a rebuild; the
    caller holds the old log's lock and removes the snapshot and `.log.2` first)."""
    newlock = path.with_name(path.name + ".newlock")
    newlock.unlink(missing_ok=True)
    try:
        fd = os.open(newlock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            head = header.encode()
            _pwrite_all(fd, head + transaction.encode(len(head)), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(newlock, path)
        fsync_dir(path.parent)
    except OSError as exc:
        newlock.unlink(missing_ok=True)
        raise StorageError(f"Can't write {path}: {exc.strerror}") from exc


def new_log_header(now: int, file_seq: int = 1) -> LogHeader:
    """The header of a log that starts a new history (§6.7 step 7)."""
    return LogHeader(indexid=now, file_seq=file_seq, create_stamp=now, initial_modseq=1)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
