"""Loading a `dovecot.index` snapshot (storage-formats.md §6.2) into an `IndexState`.

Only read, never written: pydsync appends to the log and leaves the snapshot to
Dovecot (§6.7). Returns the state and the log position the snapshot reaches.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .records import LogFormatError
from .state import (
    BASE_HEADER_SIZE,
    KEYWORDS_EXT,
    MODSEQ_EXT,
    Extension,
    IndexState,
    MessageRecord,
)

INDEX_MAJOR = 7
_EXT_HDR = struct.Struct("<IIHHHH")


@dataclass(frozen=True)
class IndexSnapshot:
    """A parsed dovecot.index: its state and where in the log it ends."""

    state: IndexState
    indexid: int
    log_file_seq: int
    log_file_head_offset: int
    modseq_hdr: tuple[int, int, int]  # highest_modseq, log_seq, log_offset (0s if none)


def _align8(n: int) -> int:
    return n + (-n % 8)


def parse_index(data: bytes, path: str = "dovecot.index") -> IndexSnapshot:
    """Parse an index file; raises LogFormatError when it is not one or is damaged."""
    if len(data) < 8 or data[0] != INDEX_MAJOR:
        raise LogFormatError(f"{path}: not a Dovecot index (version {data[:1].hex() or 'none'})")
    base_size, header_size, record_size = struct.unpack_from("<HII", data, 2)
    if base_size < 88 or header_size < base_size or header_size > len(data) or record_size < 5:
        raise LogFormatError(f"{path}: broken index header sizes")
    if data[12] & 0x01 == 0:
        raise LogFormatError(f"{path}: index was written on a big-endian CPU")
    state = IndexState()
    state.base[:] = data[:base_size][:BASE_HEADER_SIZE].ljust(BASE_HEADER_SIZE, b"\0")
    (indexid,) = struct.unpack_from("<I", data, 16)
    (count,) = struct.unpack_from("<I", data, 32)
    log_seq, _tail, head = struct.unpack_from("<III", data, 60)
    offsets = _read_extensions(state, data, _align8(base_size), header_size, path)
    if header_size + count * record_size > len(data):
        raise LogFormatError(f"{path}: {count} records do not fit in the file")
    _read_records(state, data, header_size, count, record_size, offsets)
    modseq_hdr = (0, 0, 0)
    modseq = state.ext_header(MODSEQ_EXT)
    if modseq is not None and len(modseq) >= 16:
        modseq_hdr = struct.unpack_from("<QII", modseq)
        state.has_modseq_ext = True
    return IndexSnapshot(state, indexid, log_seq, head, modseq_hdr)


def _read_extensions(
    state: IndexState, data: bytes, pos: int, end: int, path: str
) -> dict[str, int]:
    """Extension blocks in map-index order; their record offsets by name."""
    offsets: dict[str, int] = {}
    while pos + _EXT_HDR.size <= end:
        hdr_size, reset_id, rec_offset, rec_size, align, name_size = _EXT_HDR.unpack_from(data, pos)
        name_at = pos + _EXT_HDR.size
        hdr_at = pos + _align8(_EXT_HDR.size + name_size)
        if name_size == 0 or hdr_at + hdr_size > end:
            raise LogFormatError(f"{path}: broken extension block at offset {pos}")
        name = data[name_at : name_at + name_size].decode("ascii", "replace")
        header = bytearray(data[hdr_at : hdr_at + hdr_size])
        state.extensions.append(Extension(name, hdr_size, rec_size, align, reset_id, header))
        if rec_size:
            offsets[name] = rec_offset
        if name == KEYWORDS_EXT:
            state.keywords = _keyword_names(bytes(header), path)
        pos = hdr_at + _align8(hdr_size)
    return offsets


def _keyword_names(header: bytes, path: str) -> list[str]:
    """The `keywords` header: count, (unused, name offset) pairs, NUL-ended names."""
    if len(header) < 4:
        return []
    (count,) = struct.unpack_from("<I", header)
    names_at = 4 + 8 * count
    if names_at > len(header):
        raise LogFormatError(f"{path}: broken keywords header")
    names = []
    for i in range(count):
        _unused, offset = struct.unpack_from("<II", header, 4 + 8 * i)
        start = names_at + offset
        stop = header.find(b"\0", start)
        if start >= len(header) or stop < 0:
            raise LogFormatError(f"{path}: broken keywords header")
        names.append(header[start:stop].decode("utf-8", "replace"))
    return names


def _read_records(
    state: IndexState,
    data: bytes,
    start: int,
    count: int,
    size: int,
    offsets: dict[str, int],
) -> None:
    sizes = {ext.name: ext.record_size for ext in state.extensions}
    kw_size = sizes.get(KEYWORDS_EXT, 0)
    for i in range(count):
        pos = start + i * size
        uid, flags = struct.unpack_from("<IB", data, pos)
        msg = MessageRecord(uid, flags)
        for name, offset in offsets.items():
            msg.ext[name] = data[pos + offset : pos + offset + sizes[name]]
        if kw_size and KEYWORDS_EXT in offsets:
            bits = msg.ext.pop(KEYWORDS_EXT)
            msg.keywords = frozenset(
                kw
                for k, kw in enumerate(state.keywords)
                if k // 8 < len(bits) and bits[k // 8] >> (k % 8) & 1
            )
        modseq = msg.ext.get(MODSEQ_EXT)
        if modseq is not None and len(modseq) == 8:
            msg.modseq = int.from_bytes(modseq, "little")
        state.messages[uid] = msg
    if state.messages:
        last = max(state.messages)
        if state.next_uid <= last:
            raise LogFormatError("dovecot.index: next_uid is not above the last UID")
