"""Small file primitives of a maildir store: atomic writes, dotlocks, the UIDVALIDITY
allocator, `dovecot.mailbox.log` and the subscriptions file.

Everything here follows Dovecot 2.3.19's on-disk protocols (storage-formats.md §1.9,
§7.3, §7.4, §7.6) so both programs can share one store.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import MailError, StorageError
from .base import LogType, MailboxLogRecord

FILE_MODE = 0o600
DIR_MODE = 0o700

_ERRNO_TO_MAIL_ERROR = {
    errno.EACCES: MailError.PERM,
    errno.EPERM: MailError.PERM,
    errno.EROFS: MailError.PERM,
    errno.ENOSPC: MailError.NOQUOTA,
    errno.EDQUOT: MailError.NOQUOTA,
}


def storage_error(exc: OSError, what: str) -> StorageError:
    """Wrap an OSError as the StorageError Dovecot would report for its errno."""
    mail_error = _ERRNO_TO_MAIL_ERROR.get(exc.errno or 0, MailError.TEMP)
    return StorageError(f"{what} failed: {exc.strerror or exc}", mail_error)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rmdir_if_empty(path: Path) -> bool:
    """Remove an empty directory; True when it is gone (or was never there)."""
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def fsync_dir_quiet(path: Path) -> None:
    """fsync a directory when it can be opened (a best-effort durability step)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_synced(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Create `path` with `data`, fsync'ed; the caller renames it into place."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)


def replace_file(path: Path, data: bytes) -> None:
    """Atomically replace `path` (write `<path>.tmp`, fsync, rename, fsync the dir)."""
    tmp = path.with_name(path.name + ".tmp")
    write_synced(tmp, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


def read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def makedirs(path: Path) -> None:
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)


# -- dotlock (lib/file-dotlock.c with dotlock_use_excl=yes) ------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_is_stale(lock: Path, hostname: str, stale_timeout: float) -> bool:
    """Stale if its mtime is older than `stale_timeout`, or it names a dead pid of ours."""
    try:
        st = lock.stat()
        content = lock.read_text("utf-8", "replace")
    except FileNotFoundError:
        return True
    if time.time() - st.st_mtime > stale_timeout:
        return True
    pid_text, _, host = content.partition(":")
    if host.strip() == hostname and pid_text.isdigit():
        return not _pid_alive(int(pid_text))
    return False


@contextmanager
def dotlock(
    target: Path, hostname: str, *, timeout: float = 30.0, stale_timeout: float = 120.0
) -> Iterator[Path]:
    """Hold `<target>.lock`, created with O_EXCL and holding "<pid>:<hostname>"."""
    lock = target.with_name(target.name + ".lock")
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            break
        except FileExistsError:
            if lock_is_stale(lock, hostname, stale_timeout):
                _unlink_quietly(lock)
                continue
            if time.monotonic() >= deadline:
                raise StorageError(f"Timeout while waiting for lock {lock}") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        except OSError as exc:
            raise storage_error(exc, f"creating lock {lock}") from exc
    try:
        os.write(fd, f"{os.getpid()}:{hostname}".encode())
    finally:
        os.close(fd)
    try:
        yield lock
    finally:
        _unlink_quietly(lock)


# -- UIDVALIDITY allocator (mailbox-uidvalidity.c, storage-formats.md §7.3) ----------

_UIDV_RETRIES = 10


def _uidv_rename(path: Path, value: int) -> int | None:
    """Move the marker from `value` upwards; the value it ends on, None if none existed."""
    for _ in range(_UIDV_RETRIES):
        new = (value + 1) & 0xFFFFFFFF or 1
        try:
            os.rename(f"{path}.{value:08x}", f"{path}.{new:08x}")
            return new
        except FileNotFoundError:
            value = new
    return None


def _uidv_rescan(path: Path, now: int) -> int:
    prefix = path.name + "."
    values: list[int] = []
    makedirs(path.parent)
    for name in os.listdir(path.parent):
        if name.startswith(prefix):
            try:
                values.append(int(name[len(prefix) :], 16))
            except ValueError:
                continue
    values = [v for v in values if 0 < v <= 0xFFFFFFFF]
    if not values:
        value = now & 0xFFFFFFFF or 1
        while True:
            try:
                os.close(os.open(f"{path}.{value:08x}", os.O_CREAT | os.O_EXCL, 0o444))
                break
            except FileExistsError:
                value = (value + 1) & 0xFFFFFFFF or 1
    else:
        if min(values) != max(values):
            _unlink_quietly(Path(f"{path}.{min(values):08x}"))
        moved = _uidv_rename(path, max(values))
        value = moved if moved is not None else max(now, max(values) + 1) & 0xFFFFFFFF or 1
    write_synced(path.with_name(path.name + ".tmp"), f"{value:08x}".encode())
    os.replace(path.with_name(path.name + ".tmp"), path)
    return value


def allocate_uid_validity(control_root: Path, now: int) -> int:
    """Hand out the next UIDVALIDITY from `dovecot-uidvalidity` (+ its marker file)."""
    path = control_root / "dovecot-uidvalidity"
    try:
        raw = read_optional(path)
        current = 0
        if raw:
            try:
                current = int(raw[:8].decode("ascii"), 16)
            except ValueError:
                current = 0
        if current == 0:
            return _uidv_rescan(path, now)
        value = _uidv_rename(path, current)
        if value is None:
            return _uidv_rescan(path, now)
        with open(path, "r+b") as fh:
            fh.write(f"{value:08x}".encode())
            fh.flush()
            os.fsync(fh.fileno())
        return value
    except OSError as exc:
        raise storage_error(exc, f"allocating UIDVALIDITY in {path}") from exc


# -- dovecot.mailbox.log (mailbox-log.c, storage-formats.md §7.4) --------------------

MAILBOX_LOG = "dovecot.mailbox.log"
_LOG_RECORD = struct.Struct(">B3x16sI")
_LOG_ROTATE_SIZE = 4096


def read_mailbox_log(index_root: Path) -> list[MailboxLogRecord]:
    """Records of `.2` then the current file; unknown types and partial tails skipped."""
    records: list[MailboxLogRecord] = []
    for name in (MAILBOX_LOG + ".2", MAILBOX_LOG):
        data = read_optional(index_root / name) or b""
        for off in range(0, len(data) - _LOG_RECORD.size + 1, _LOG_RECORD.size):
            rtype, key, stamp = _LOG_RECORD.unpack_from(data, off)
            if rtype in LogType._value2member_map_:
                records.append(MailboxLogRecord(LogType(rtype), key, stamp))
    return records


def append_mailbox_log(index_root: Path, record: MailboxLogRecord) -> None:
    """Append one record with a single write; rotate to `.2` at 4096 bytes."""
    path = index_root / MAILBOX_LOG
    data = _LOG_RECORD.pack(int(record.type), record.key, record.timestamp & 0xFFFFFFFF)
    try:
        makedirs(index_root)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            os.write(fd, data)
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size >= _LOG_ROTATE_SIZE:
            os.replace(path, index_root / (MAILBOX_LOG + ".2"))
            fsync_dir(index_root)
    except OSError as exc:
        raise storage_error(exc, f"appending to {path}") from exc


# -- subscriptions (subscription-file.c, storage-formats.md §7.6) --------------------

SUBSCRIPTIONS = "subscriptions"
_TAB_ESCAPES = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n", "\x00": "\x010"}
_TAB_UNESCAPES = {v[1]: k for k, v in _TAB_ESCAPES.items()}


def tab_escape(text: str) -> str:
    return "".join(_TAB_ESCAPES.get(c, c) for c in text)


def tab_unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\x01" and i + 1 < len(text):
            out.append(_TAB_UNESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def read_subscriptions(control_root: Path, list_sep: str) -> list[list[str]]:
    """Subscribed names as lists of storage-name levels (v1 and v2 files)."""
    raw = read_optional(control_root / SUBSCRIPTIONS)
    if not raw:
        return []
    text = raw.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if lines[0] == "V\t2" and len(lines) > 1 and lines[1] == "":
        return [[tab_unescape(p) for p in line.split("\t")] for line in lines[2:] if line]
    return [line.split(list_sep) for line in lines if line]


def write_subscriptions(control_root: Path, lines: list[str], hostname: str) -> None:
    """Rewrite the file: v2 header, one tab-joined name per line, via the `.lock` file."""
    path = control_root / SUBSCRIPTIONS
    data = ("V\t2\n\n" + "".join(line + "\n" for line in lines)).encode("utf-8", "surrogateescape")
    lock = path.with_name(path.name + ".lock")
    try:
        makedirs(control_root)
        deadline = time.monotonic() + 30.0
        while True:
            try:
                write_synced(lock, data, exclusive=True)
                break
            except FileExistsError:
                if lock_is_stale(lock, hostname, 120.0):
                    _unlink_quietly(lock)
                elif time.monotonic() > deadline:
                    raise StorageError(f"Timeout while waiting for lock {lock}") from None
                else:
                    time.sleep(0.01)
        os.replace(lock, path)
        fsync_dir(control_root)
    except OSError as exc:
        raise storage_error(exc, f"writing {path}") from exc
