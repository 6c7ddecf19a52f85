"""Record codec of Dovecot's transaction log (`dovecot.index.log`, storage-formats.md §6.3).

Pure functions over bytes: `decode_size`/`encode_size` for the record size field, one
`encode_*` per record kind a writer needs, and `parse_*` helpers for the bodies a reader
replays. Every parser raises `LogFormatError` (never IndexError/struct.error) on a body
that does not fit its kind, so callers can stop at a broken record and keep the rest.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ...errors import MailError, StorageError

# Record kinds (type & TYPE_MASK), §6.3.
EXPUNGE = 0x00000001
APPEND = 0x00000002
FLAG_UPDATE = 0x00000004
HEADER_UPDATE = 0x00000020
EXT_INTRO = 0x00000040
EXT_RESET = 0x00000080
EXT_HDR_UPDATE = 0x00000100
EXT_REC_UPDATE = 0x00000200
KEYWORD_UPDATE = 0x00000400
KEYWORD_RESET = 0x00000800
EXT_ATOMIC_INC = 0x00001000
EXPUNGE_GUID = 0x00002000
MODSEQ_UPDATE = 0x00008000
EXT_HDR_UPDATE32 = 0x00010000
INDEX_DELETED = 0x00020000
INDEX_UNDELETED = 0x00040000
BOUNDARY = 0x00080000
ATTRIBUTE_UPDATE = 0x00100000
EXPUNGE_PROT = 0x0000CD90  # "expunge protection": expunges must carry these bits too
EXTERNAL = 0x10000000  # the change already happened in the backend
SYNC = 0x20000000  # written by dsync (its log scan skips these)
TYPE_MASK = 0x0FFFFFFF

KINDS = frozenset(
    {
        APPEND, FLAG_UPDATE, HEADER_UPDATE, EXT_INTRO, EXT_RESET, EXT_HDR_UPDATE,
        EXT_REC_UPDATE, KEYWORD_UPDATE, KEYWORD_RESET, EXT_ATOMIC_INC, MODSEQ_UPDATE,
        EXT_HDR_UPDATE32, INDEX_DELETED, INDEX_UNDELETED, BOUNDARY, ATTRIBUTE_UPDATE,
    }
)  # fmt: skip
KIND_NAMES = {
    EXPUNGE: "expunge", APPEND: "append", FLAG_UPDATE: "flag-update",
    HEADER_UPDATE: "header-update", EXT_INTRO: "ext-intro", EXT_RESET: "ext-reset",
    EXT_HDR_UPDATE: "ext-hdr", EXT_REC_UPDATE: "ext-rec", KEYWORD_UPDATE: "keyword-update",
    KEYWORD_RESET: "keyword-reset", EXT_ATOMIC_INC: "ext-atomic-inc",
    EXPUNGE_GUID: "expunge-guid", MODSEQ_UPDATE: "modseq-update",
    EXT_HDR_UPDATE32: "ext-hdr32", INDEX_DELETED: "index-deleted",
    INDEX_UNDELETED: "index-undeleted", BOUNDARY: "boundary", ATTRIBUTE_UPDATE: "attribute-update",
}  # fmt: skip

RECORD_HEADER_SIZE = 8
EXT_ID_BY_NAME = 0xFFFFFFFF  # EXT_INTRO: look the extension up by name
EXT_INTRO_NO_SHRINK = 0x01
MODIFY_ADD, MODIFY_REMOVE = 0, 1
TAIL_OFFSET_FIELD = 64  # base header: log_file_tail_offset
TAIL_UPDATE_SIZE = RECORD_HEADER_SIZE + 8  # header-update of one uint32 field


class LogFormatError(StorageError):
    """A transaction log or index file that does not follow the format."""

    def __init__(self, message: str) -> None:
        super().__init__(message, MailError.TEMP)


def kind_of(rtype: int) -> int:
    """The record kind of a type field; raises LogFormatError for an invalid one."""
    kind = rtype & TYPE_MASK
    if kind == EXPUNGE | EXPUNGE_PROT:
        return EXPUNGE
    if kind == EXPUNGE_GUID | EXPUNGE_PROT:
        return EXPUNGE_GUID
    if kind not in KINDS:
        raise LogFormatError(f"unknown record type 0x{rtype:08x}")
    return kind


def type_field(kind: int, *, external: bool, sync: bool = False) -> int:
    """The type field for a record kind (expunges get their protection bits)."""
    value = kind | (EXPUNGE_PROT if kind in (EXPUNGE, EXPUNGE_GUID) else 0)
    return value | (EXTERNAL if external else 0) | (SYNC if sync else 0)


# -- the size field ---------------------------------------------------------------------


def decode_size(raw: bytes) -> int:
    """The record size from its 4-byte field; 0 when the record is not yet written
    (a byte without its top bit, or a zero value)."""
    if len(raw) < 4 or any(b & 0x80 == 0 for b in raw[:4]):
        return 0
    value = 0
    for b in raw[:4]:
        value = (value << 7) | (b & 0x7F)
    return value << 2


def encode_size(size: int) -> bytes:
    """The 4-byte size field: size/4 in four 7-bit groups, every byte's top bit set."""
    if size % 4 or not 0 < size < (1 << 30):
        raise ValueError(f"unencodable record size {size}")
    value = size >> 2
    return bytes(0x80 | ((value >> shift) & 0x7F) for shift in (21, 14, 7, 0))


def pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def encode_record(kind: int, body: bytes, *, external: bool, sync: bool = False) -> bytes:
    body = pad4(body)
    size = RECORD_HEADER_SIZE + len(body)
    rtype = type_field(kind, external=external, sync=sync)
    return encode_size(size) + struct.pack("<I", rtype) + body


# -- bodies -----------------------------------------------------------------------------


def encode_updates(items: Iterable[tuple[int, bytes]], wide: bool = False) -> bytes:
    """HEADER_UPDATE / EXT_HDR_UPDATE (/32 when `wide`) body: (offset, data) items."""
    fmt = "<II" if wide else "<HH"
    return b"".join(pad4(struct.pack(fmt, off, len(data)) + data) for off, data in items)


def parse_updates(body: bytes, wide: bool = False) -> Iterator[tuple[int, bytes]]:
    fmt = "<II" if wide else "<HH"
    head = struct.calcsize(fmt)
    pos = 0
    while pos < len(body):
        if pos + head > len(body):
            raise LogFormatError("truncated header update")
        offset, size = struct.unpack_from(fmt, body, pos)
        if pos + head + size > len(body):
            raise LogFormatError("header update runs past its record")
        yield offset, body[pos + head : pos + head + size]
        pos += head + size
        pos += -pos % 4


@dataclass(frozen=True)
class ExtIntro:
    """EXT_INTRO: `ext_id` is EXT_ID_BY_NAME (then `name` is set) or a map index."""

    ext_id: int
    reset_id: int
    hdr_size: int
    record_size: int
    record_align: int
    flags: int = 0
    name: str = ""

    def encode(self) -> bytes:
        name = self.name.encode("ascii")
        return pad4(
            struct.pack(
                "<IIIHHHH",
                self.ext_id,
                self.reset_id,
                self.hdr_size,
                self.record_size,
                self.record_align,
                self.flags,
                len(name),
            )
            + name
        )


_INTRO = struct.Struct("<IIIHHHH")


def parse_ext_intros(body: bytes) -> Iterator[ExtIntro]:
    pos = 0
    while pos < len(body):
        if pos + _INTRO.size > len(body):
            raise LogFormatError("truncated ext-intro")
        ext_id, reset_id, hdr_size, rec_size, align, flags, name_size = _INTRO.unpack_from(
            body, pos
        )
        pos += _INTRO.size
        if pos + name_size > len(body):
            raise LogFormatError("ext-intro name runs past its record")
        try:
            name = body[pos : pos + name_size].decode("ascii")
        except UnicodeDecodeError:
            raise LogFormatError("ext-intro name is not ASCII") from None
        pos += name_size
        pos += -pos % 4
        yield ExtIntro(ext_id, reset_id, hdr_size, rec_size, align, flags, name)


def parse_fixed(body: bytes, fmt: str, what: str) -> Iterator[tuple[Any, ...]]:
    """Repeated fixed-size entries (append, flag-update, expunge, modseq-update ...)."""
    size = struct.calcsize(fmt)
    if len(body) % size:
        raise LogFormatError(f"{what} record size {len(body)} is not a multiple of {size}")
    for pos in range(0, len(body), size):
        yield struct.unpack_from(fmt, body, pos)


APPEND_FMT = "<IB3x"  # mail_index_record: uid, flags
FLAG_UPDATE_FMT = "<IIBBBx"  # uid1, uid2, add, remove, modseq_inc_flag
RANGE_FMT = "<II"  # expunge, keyword-reset: uid1, uid2
EXPUNGE_GUID_FMT = "<I16s"
MODSEQ_FMT = "<III"  # uid, modseq low, modseq high
ATOMIC_INC_FMT = "<Ii"


def encode_ranges(uids: Iterable[int]) -> bytes:
    """uid1, uid2 pairs covering `uids` (inclusive ranges, ascending)."""
    return b"".join(struct.pack(RANGE_FMT, a, b) for a, b in uid_ranges(uids))


def uid_ranges(uids: Iterable[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for uid in sorted(set(uids)):
        if ranges and ranges[-1][1] + 1 == uid:
            ranges[-1] = (ranges[-1][0], uid)
        else:
            ranges.append((uid, uid))
    return ranges


def encode_keyword_update(name: str, add: bool, uids: Iterable[int]) -> bytes:
    raw = name.encode("utf-8")
    head = struct.pack("<BxH", MODIFY_ADD if add else MODIFY_REMOVE, len(raw)) + raw
    return pad4(head) + encode_ranges(uids)


def parse_keyword_update(body: bytes) -> tuple[bool, str, list[tuple[int, int]]]:
    """(add?, keyword name, uid ranges)."""
    if len(body) < 4:
        raise LogFormatError("truncated keyword-update")
    modify, name_size = struct.unpack_from("<BxH", body)
    if modify not in (MODIFY_ADD, MODIFY_REMOVE) or 4 + name_size > len(body):
        raise LogFormatError("invalid keyword-update")
    try:
        name = body[4 : 4 + name_size].decode("utf-8")
    except UnicodeDecodeError:
        raise LogFormatError("keyword name is not UTF-8") from None
    start = 4 + name_size
    start += -start % 4
    ranges = [(a, b) for a, b in parse_fixed(body[start:], RANGE_FMT, "keyword-update")]
    if not name:
        raise LogFormatError("keyword-update without a name")
    return modify == MODIFY_ADD, name, ranges


@dataclass(frozen=True)
class AttributeChange:
    """One entry of an ATTRIBUTE_UPDATE record (§7.7): values are not in the log."""

    set: bool  # "+" set, "-" unset
    type: str  # "p" private, "s" shared
    key: str
    timestamp: int
    value_len: int = 0


def encode_attribute_update(changes: Iterable[AttributeChange]) -> bytes:
    changes = list(changes)
    names = b"".join(
        (("+" if c.set else "-") + c.type + c.key).encode("utf-8", "surrogateescape") + b"\0"
        for c in changes
    )
    suffix = b"".join(
        struct.pack("<I", c.timestamp) + (struct.pack("<I", c.value_len) if c.set else b"")
        for c in changes
    )
    return pad4(names + b"\0") + suffix


def parse_attribute_update(body: bytes) -> list[AttributeChange]:
    entries: list[tuple[bool, str, str]] = []
    pos = 0
    while pos < len(body) and body[pos] != 0:
        end = body.find(b"\0", pos)
        if end < 0:
            raise LogFormatError("unterminated attribute-update key")
        raw = body[pos:end].decode("utf-8", "surrogateescape")
        if len(raw) < 3 or raw[0] not in "+-" or raw[1] not in "ps":
            raise LogFormatError(f"invalid attribute-update key {raw!r}")
        entries.append((raw[0] == "+", raw[1], raw[2:]))
        pos = end + 1
    pos += 1
    pos += -pos % 4
    changes = []
    for is_set, type_, key in entries:
        need = 8 if is_set else 4
        if pos + need > len(body):
            raise LogFormatError("attribute-update runs past its record")
        stamp = struct.unpack_from("<I", body, pos)[0]
        length = struct.unpack_from("<I", body, pos + 4)[0] if is_set else 0
        changes.append(AttributeChange(is_set, type_, key, stamp, length))
        pos += need
    return changes
