"""dbox files, shared by sdbox (`u.N`, one message) and mdbox (`m.N`, many): the header
line, 30-byte message headers, message bytes and metadata blocks (storage-formats.md §2).

Pure functions over bytes plus a few file helpers. Reading never loses what is readable:
`walk()` returns every complete record before (and, with `recover=True`, after) damage,
and describes the damage as `DboxCorruptError`s instead of raising.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from .. import _native
from ..errors import MailError, StorageError

FILE_VERSION = 2
MSG_HEADER_SIZE = 30
MSG_MAGIC = b"\x01\x02"
MSG_TYPE_NORMAL = b"N"
META_MAGIC = b"\n\x01\x03\n"
MAX_HEADER_LINE = 1024
_MSG_START = MSG_MAGIC + MSG_TYPE_NORMAL + b" "  # recovery scan pattern (§2.5, dbox_file_fix)
_HEX16 = re.compile(rb"[0-9A-Fa-f]{16}")
_FORBIDDEN_IN_VALUE = ("\n", "\r")


class DboxCorruptError(StorageError):
    """A dbox file is damaged at `offset` (a byte position in `path`, if known)."""

    def __init__(self, message: str, offset: int = 0, path: str = "") -> None:
        where = f"{path}: " if path else ""
        super().__init__(f"Corrupted dbox file {where}{message} (offset {offset})", MailError.TEMP)
        self.offset = offset
        self.path = path
        self.reason = message


@dataclass(frozen=True)
class FileHeader:
    """The first line of a dbox file (§2.1). `size` is the line's length incl. its LF."""

    version: int = FILE_VERSION
    msg_header_size: int = MSG_HEADER_SIZE
    create_stamp: int = 0
    size: int = 0

    @property
    def appendable(self) -> bool:
        """Dovecot only appends to v2 files with 30-byte message headers (§2.1)."""
        return self.version == FILE_VERSION and self.msg_header_size == MSG_HEADER_SIZE

    def encode(self) -> bytes:
        return b"%d M%x C%x\n" % (self.version, self.msg_header_size, self.create_stamp)


@dataclass(frozen=True)
class Metadata:
    """A message's metadata block (§2.4). None = the key was absent.

    `extra` keeps unknown keys (one uppercase letter each) in file order, so a copier
    can preserve them.
    """

    guid: str = ""  # G
    received_date: int | None = None  # R, UNIX time
    virtual_size: int | None = None  # V, LF counted as CRLF
    physical_size: int | None = None  # Z, only when stored bytes != logical message
    pop3_uidl: str = ""  # P
    pop3_order: int = 0  # O (decimal)
    orig_mailbox: str = ""  # B, mdbox only: storage name the message was saved to
    ext_refs: str = ""  # X, external attachment references (§2.6)
    extra: tuple[tuple[str, str], ...] = field(default=())

    def encode(self) -> bytes:
        """The block in Dovecot's write order Z R V P O G B X (§2.4), magic to empty line."""
        head, tail = self.encode_around_vsize()
        if self.virtual_size is None:
            return head + tail
        return b"%sV%x\n%s" % (head, self.virtual_size, tail)

    def encode_around_vsize(self) -> tuple[bytes, bytes]:
        """The block without its V line, cut where V goes: a save that learns the virtual
        size only once the body has streamed joins `head + b"V%x\\n" % vsize + tail`."""
        head: list[str] = []
        if self.physical_size is not None:
            head.append(f"Z{self.physical_size:x}")
        if self.received_date is not None:
            head.append(f"R{self.received_date:x}")
        lines: list[str] = []
        if self.pop3_uidl:
            lines.append("P" + _checked_value("P", self.pop3_uidl))
        if self.pop3_order:
            lines.append(f"O{self.pop3_order:d}")
        lines.append("G" + _checked_value("G", self.guid))
        if self.orig_mailbox and not any(c in self.orig_mailbox for c in _FORBIDDEN_IN_VALUE):
            lines.append("B" + self.orig_mailbox)  # Dovecot drops a B it cannot write
        if self.ext_refs:
            lines.append("X" + _checked_value("X", self.ext_refs))
        lines += [key + _checked_value(key, value) for key, value in self.extra]
        try:
            return (
                META_MAGIC + "".join(line + "\n" for line in head).encode("ascii"),
                "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape") + b"\n",
            )
        except UnicodeEncodeError as exc:
            raise StorageError(f"dbox metadata not encodable: {exc}", MailError.PARAMS) from None


@dataclass(frozen=True)
class Record:
    """One message record in a dbox file (§2.2-§2.5).

    `offset` is where its message header starts and `size` the whole record (header +
    message + metadata): exactly the (offset, size) an mdbox map stores (§3.3).
    """

    offset: int
    size: int
    body_offset: int
    body_size: int
    metadata: Metadata

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Walk:
    """What `walk()` found: every readable record, in file order, and the damage.

    `end` is the offset just after the last record of the undamaged prefix: where an
    append may go when `errors` is empty.
    """

    header: FileHeader
    records: tuple[Record, ...]
    errors: tuple[DboxCorruptError, ...]
    end: int

    @property
    def ok(self) -> bool:
        return not self.errors


def _checked_value(key: str, value: str) -> str:
    if any(c in value for c in _FORBIDDEN_IN_VALUE):
        raise StorageError(f"dbox metadata {key} may not contain line breaks", MailError.PARAMS)
    return value


# -- encoding ----------------------------------------------------------------------------


def encode_msg_header(body_size: int) -> bytes:
    """The 30-byte message header: magic, type N, v1 padding, 16 uppercase hex, LF (§2.2)."""
    if not 0 <= body_size < 1 << 64:
        raise StorageError(f"dbox message too large: {body_size}", MailError.PARAMS)
    return MSG_MAGIC + MSG_TYPE_NORMAL + b" " + b" " * 8 + b" " + b"%016X\n" % body_size


def encode_record(body: bytes, metadata: Metadata) -> bytes:
    """Header + message bytes + metadata block: what follows a file header or a record."""
    return encode_msg_header(len(body)) + body + metadata.encode()


def encode_file(create_stamp: int, messages: Iterable[tuple[bytes, Metadata]]) -> bytes:
    """A whole dbox file: an sdbox `u.N` has exactly one message, an `m.N` any number."""
    parts = [FileHeader(create_stamp=create_stamp).encode()]
    parts += [encode_record(body, meta) for body, meta in messages]
    return b"".join(parts)


# -- decoding ----------------------------------------------------------------------------


def parse_file_header(data: bytes, path: str = "") -> FileHeader:
    """Parse the header line at the start of `data` (§2.1); `M` is mandatory."""
    eol = data.find(b"\n", 0, MAX_HEADER_LINE)
    if eol < 0:
        raise DboxCorruptError("file header line missing or too long", 0, path)
    fields = data[:eol].decode("ascii", "replace").split(" ")
    if fields[0] not in ("1", "2"):
        raise DboxCorruptError(f"unsupported dbox version {fields[0][:10]!r}", 0, path)
    values: dict[str, int] = {}
    for item in fields[1:]:
        if item[:1] in ("M", "C") and item[1:]:
            try:
                values[item[0]] = int(item[1:], 16)
            except ValueError:
                raise DboxCorruptError(f"bad header field {item[:20]!r}", 0, path) from None
    hdr_size = values.get("M")
    if hdr_size is None or hdr_size < MSG_HEADER_SIZE:
        raise DboxCorruptError("file header has no valid M (message header size)", 0, path)
    return FileHeader(int(fields[0]), hdr_size, values.get("C", 0), eol + 1)


def parse_metadata(data: bytes, start: int, path: str = "") -> tuple[Metadata, int]:
    """Parse the block whose magic begins at `start`; return it and the offset after it."""
    if data[start : start + len(META_MAGIC)] != META_MAGIC:
        raise DboxCorruptError("metadata magic missing after message", start, path)
    pos = start + len(META_MAGIC)
    fields: list[tuple[str, str]] = []
    while True:
        eol = data.find(b"\n", pos)
        if eol < 0:
            raise DboxCorruptError("metadata block truncated", start, path)
        line = data[pos:eol]
        pos = eol + 1
        if not line or line[:1] == b" ":  # empty line, or v1 padding, ends the block
            break
        fields.append((chr(line[0]), line[1:].decode("utf-8", "surrogateescape")))
    return _metadata_from_fields(fields, start, path), pos


def _metadata_from_fields(fields: list[tuple[str, str]], offset: int, path: str) -> Metadata:
    known: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for key, value in fields:
        if key in "GRVZPOBX" and key not in known:
            known[key] = value
        elif key not in "GRVZPOBX":
            extra.append((key, value))
    try:
        return Metadata(
            guid=known.get("G", ""),
            received_date=_opt_int(known.get("R"), 16),
            virtual_size=_opt_int(known.get("V"), 16),
            physical_size=_opt_int(known.get("Z"), 16),
            pop3_uidl=known.get("P", ""),
            pop3_order=_opt_int(known.get("O"), 10) or 0,
            orig_mailbox=known.get("B", ""),
            ext_refs=known.get("X", ""),
            extra=tuple(extra),
        )
    except ValueError as exc:
        raise DboxCorruptError(f"bad metadata value: {exc}", offset, path) from None


def _opt_int(value: str | None, base: int) -> int | None:
    return None if value is None or value == "" else int(value, base)


def parse_record(
    data: bytes, offset: int, msg_header_size: int = MSG_HEADER_SIZE, path: str = ""
) -> Record:
    """Parse the record whose message header starts at `offset` (§2.5 loop body)."""
    hdr = data[offset : offset + msg_header_size]
    if len(hdr) < msg_header_size:
        raise DboxCorruptError("message header truncated", offset, path)
    if hdr[:2] != MSG_MAGIC or hdr[msg_header_size - 1 : msg_header_size] != b"\n":
        raise DboxCorruptError("bad message header magic", offset, path)
    if not _HEX16.fullmatch(hdr[13:29]):
        raise DboxCorruptError("bad message size in message header", offset, path)
    body_offset = offset + msg_header_size
    body_size = int(hdr[13:29], 16)
    meta_offset = body_offset + body_size
    if meta_offset > len(data):
        raise DboxCorruptError(
            f"message truncated ({len(data) - body_offset} of {body_size} bytes)", offset, path
        )
    metadata, end = parse_metadata(data, meta_offset, path)
    return Record(offset, end - offset, body_offset, body_size, metadata)


def walk(data: bytes, *, recover: bool = False, path: str = "") -> Walk:
    """Every record of a whole dbox file (§2.5).

    A bad file header is an error with no records. Damage stops the walk there, unless
    `recover`: then, as Dovecot's repair does, the walk resumes at the next
    `\\n\\x01\\x02N ` that starts a parsable record. Raises nothing for damage.
    The record scan is the native fast path (pydsync_server._native).
    """
    try:
        header = parse_file_header(data, path)
    except DboxCorruptError as exc:
        return Walk(FileHeader(), (), (exc,), 0)
    hdr_size = header.msg_header_size
    records: list[Record] = []
    errors: list[DboxCorruptError] = []
    offset, end = header.size, -1
    while offset < len(data):
        found, stop, damaged = _native.dbox_scan(data, offset, hdr_size, len(data))
        bad = -1
        for scanned in found:
            try:
                records.append(_scanned_record(data, scanned, path))
            except DboxCorruptError as exc:
                errors.append(exc)
                bad = scanned[0]
                break
        if bad < 0 and damaged:
            errors.append(_damage_at(data, stop, hdr_size, path))
            bad = stop
        if bad < 0:
            offset = stop
            continue
        end = bad if end < 0 else end
        if not recover:
            break
        offset = _resync(data, bad + 1, hdr_size, path)
    return Walk(header, tuple(records), tuple(errors), offset if end < 0 else end)


def _scanned_record(data: bytes, rec: _native.DboxRec, path: str) -> Record:
    """A Record from a native scan result; odd metadata goes to the Python parser."""
    offset, body_offset, body_size, end = rec[0], rec[1], rec[2], rec[3]
    if rec[12]:
        metadata, _ = parse_metadata(data, body_offset + body_size, path)
    else:
        metadata = Metadata(
            guid=rec[8].decode("utf-8", "surrogateescape"),
            received_date=None if rec[4] < 0 else rec[4],
            virtual_size=None if rec[5] < 0 else rec[5],
            physical_size=None if rec[6] < 0 else rec[6],
            pop3_uidl=rec[9].decode("utf-8", "surrogateescape"),
            pop3_order=max(rec[7], 0),
            orig_mailbox=rec[10].decode("utf-8", "surrogateescape"),
            ext_refs=rec[11].decode("utf-8", "surrogateescape"),
        )
    return Record(offset, end - offset, body_offset, body_size, metadata)


def _damage_at(data: bytes, offset: int, hdr_size: int, path: str) -> DboxCorruptError:
    """The error the Python parser gives for the record the scan stopped at."""
    try:
        parse_record(data, offset, hdr_size, path)
    except DboxCorruptError as exc:
        return exc
    return DboxCorruptError("record rejected by the native scanner", offset, path)


def _resync(data: bytes, start: int, msg_header_size: int, path: str) -> int:
    """The offset of the next record that parses, or len(data)."""
    pos = start
    while True:
        found = data.find(b"\n" + _MSG_START, pos - 1)
        if found < 0:
            return len(data)
        try:
            parse_record(data, found + 1, msg_header_size, path)
            return found + 1
        except DboxCorruptError:
            pos = found + 2


# -- files -------------------------------------------------------------------------------


def read_file(path: str | os.PathLike[str], *, recover: bool = False) -> Walk:
    """Walk the file at `path`; OSError becomes StorageError (NOTFOUND if missing)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise StorageError(f"dbox file {name} not found", MailError.NOTFOUND) from None
    except OSError as exc:
        raise StorageError(f"reading {name} failed: {exc.strerror or exc}") from exc
    return walk(data, recover=recover, path=name)


def read_message(
    f: BinaryIO,
    offset: int,
    size: int | None = None,
    msg_header_size: int = MSG_HEADER_SIZE,
    path: str = "",
) -> tuple[Record, bytes]:
    """Read one record at `offset` of an open file, and its message bytes.

    `size` is the record size the caller expects (an mdbox map's): the record must
    have exactly that size. Without it the header is read first to learn the size.
    """
    f.seek(offset)
    if size is None:
        chunk = f.read(msg_header_size)
        if len(chunk) == msg_header_size and _HEX16.fullmatch(chunk[13:29]):
            chunk += f.read(int(chunk[13:29], 16))
            chunk += _read_metadata_bytes(f)
    else:
        chunk = f.read(size)
    try:
        record = parse_record(chunk, 0, msg_header_size, path)
    except DboxCorruptError as exc:
        raise DboxCorruptError(exc.reason, offset + exc.offset, path) from None
    if size is not None and record.size != size:
        raise DboxCorruptError(f"record is {record.size} bytes, expected {size}", offset, path)
    body = chunk[record.body_offset : record.body_offset + record.body_size]
    shifted = Record(
        offset, record.size, offset + record.body_offset, record.body_size, record.metadata
    )
    return shifted, body


def _read_metadata_bytes(f: BinaryIO) -> bytes:
    """The metadata block at the file position: magic, then lines through the empty
    line (or a v1 padding line starting with a space) that ends it."""
    out = [f.read(len(META_MAGIC))]
    while True:
        line = f.readline(MAX_HEADER_LINE * 64)
        out.append(line)
        if not line.endswith(b"\n") or line == b"\n" or line[:1] == b" ":
            return b"".join(out)


def temp_name(hostname: str, now: float | None = None) -> str:
    """A Dovecot-style temp file name, `.temp.<secs>.P<pid>Q<n>M<usecs>.<host>` (§2.8):
    rebuilds skip it and Dovecot deletes it after 36 h if it is left behind."""
    stamp = time.time() if now is None else now
    secs, usecs = int(stamp), int(stamp % 1 * 1_000_000)
    host = hostname.replace("/", "_").replace(":", "_") or "localhost"
    return f".temp.{secs}.P{os.getpid()}Q{_unique_number()}M{usecs}.{host}"


def _unique_number() -> int:
    """Dovecot's per-process counter; a random number is unique enough across processes."""
    return secrets.randbelow(1 << 31)


def write_new_file(
    path: str | os.PathLike[str], data: bytes, *, hostname: str = "", sync_dir: bool = True
) -> None:
    """Create `path` atomically: write a temp file beside it, fsync, rename (replacing
    any file of that name), then fsync the directory unless the caller batches that."""
    final = os.fspath(path)
    directory = os.path.dirname(final) or "."
    tmp = os.path.join(directory, temp_name(hostname))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        if sync_dir:
            fsync_dir(directory)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise StorageError(f"writing {final} failed: {exc.strerror or exc}") from exc


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- message bytes -----------------------------------------------------------------------


def to_lf(body: bytes) -> bytes:
    """Line ends as dbox stores them: CRLF -> LF, bare CRs kept (§2.3)."""
    return body.replace(b"\r\n", b"\n")


def virtual_size(body: bytes) -> int:
    """The size with every bare LF counted as CRLF (metadata V, §2.4)."""
    return _native.vsize_part(body, False)


def virtual_size_part(piece: bytes, after_cr: bool) -> int:
    """The virtual size of one piece of a body read in pieces; `after_cr`: the previous
    piece ended with CR (then a leading LF is not bare). The pieces' sizes add up."""
    return _native.vsize_part(piece, after_cr)
