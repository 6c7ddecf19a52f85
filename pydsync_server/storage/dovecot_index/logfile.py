"""One transaction-log file: its 40-byte header and the walk over its records
(storage-formats.md §6.3, §6.6).

A record whose size field is not yet written, or that runs past the end of the file,
ends the walk quietly: a writer may still be appending. A BOUNDARY whose transaction
runs past the end ends it too, before the transaction. Anything else that breaks the
format raises `LogFormatError` naming the file and offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from .records import (
    BOUNDARY,
    EXTERNAL,
    RECORD_HEADER_SIZE,
    SYNC,
    LogFormatError,
    decode_size,
    kind_of,
)

LOG_MAJOR, LOG_MINOR = 1, 3
LOG_HEADER_SIZE = 40
LOG_HEADER_MIN_SIZE = 24
COMPAT_LITTLE_ENDIAN = 0x01
_HEADER = struct.Struct("<BBHIIIIIQB7x")


@dataclass(frozen=True)
class LogHeader:
    indexid: int
    file_seq: int
    prev_file_seq: int = 0
    prev_file_offset: int = 0
    create_stamp: int = 0
    initial_modseq: int = 1
    minor_version: int = LOG_MINOR
    hdr_size: int = LOG_HEADER_SIZE
    compat_flags: int = COMPAT_LITTLE_ENDIAN

    def encode(self) -> bytes:
        return _HEADER.pack(
            LOG_MAJOR,
            self.minor_version,
            LOG_HEADER_SIZE,
            self.indexid,
            self.file_seq,
            self.prev_file_seq,
            self.prev_file_offset,
            self.create_stamp,
            self.initial_modseq,
            COMPAT_LITTLE_ENDIAN,
        )


def parse_log_header(data: bytes, path: str = "") -> LogHeader:
    """The header of a log file; raises LogFormatError for anything Dovecot would reject."""
    where = path or "transaction log"
    if len(data) < LOG_HEADER_MIN_SIZE:
        raise LogFormatError(f"{where}: file too small for a log header ({len(data)} bytes)")
    major, minor, hdr_size = struct.unpack_from("<BBH", data)
    if major != LOG_MAJOR:
        raise LogFormatError(f"{where}: not a transaction log (major version {major})")
    if hdr_size < LOG_HEADER_MIN_SIZE or hdr_size > len(data):
        raise LogFormatError(f"{where}: invalid log header size {hdr_size}")
    padded = data[:hdr_size].ljust(LOG_HEADER_SIZE, b"\0")[:LOG_HEADER_SIZE]
    fields = _HEADER.unpack(padded)
    indexid, file_seq, prev_seq, prev_off, stamp, modseq = fields[3:9]
    compat = fields[9] if minor >= 2 else COMPAT_LITTLE_ENDIAN
    if compat & COMPAT_LITTLE_ENDIAN == 0:
        raise LogFormatError(f"{where}: log was written on a big-endian CPU")
    if indexid == 0:
        raise LogFormatError(f"{where}: log file is marked corrupted (indexid 0)")
    return LogHeader(indexid, file_seq, prev_seq, prev_off, stamp, modseq, minor, hdr_size, compat)


@dataclass(frozen=True)
class RawRecord:
    """A record as stored: its offset in the file, type field, kind and body."""

    offset: int
    rtype: int
    kind: int
    body: bytes

    @property
    def end(self) -> int:
        return self.offset + RECORD_HEADER_SIZE + len(self.body)

    @property
    def external(self) -> bool:
        return bool(self.rtype & EXTERNAL)

    @property
    def sync(self) -> bool:
        return bool(self.rtype & SYNC)


@dataclass(frozen=True)
class LogFile:
    """A log file read into memory: `data` is every byte that was there."""

    path: str
    header: LogHeader
    data: bytes

    @classmethod
    def parse(cls, data: bytes, path: str = "") -> LogFile:
        return cls(path, parse_log_header(data, path), data)

    def records(self, start: int = 0) -> Iterator[RawRecord]:
        """Records from `start` (0 = after the header) to the last complete one."""
        data, pos = self.data, max(start, self.header.hdr_size)
        while pos + RECORD_HEADER_SIZE <= len(data):
            size = decode_size(data[pos : pos + 4])
            if size == 0 or pos + size > len(data):
                return  # not yet written, or still being appended
            if size < RECORD_HEADER_SIZE:
                raise LogFormatError(f"{self.path}: record size {size} too small at offset {pos}")
            rtype = struct.unpack_from("<I", data, pos + 4)[0]
            try:
                kind = kind_of(rtype)
            except LogFormatError as exc:
                raise LogFormatError(f"{self.path}: {exc} at offset {pos}") from None
            body = data[pos + RECORD_HEADER_SIZE : pos + size]
            if kind == BOUNDARY and len(body) >= 4:
                if pos + struct.unpack_from("<I", body)[0] > len(data):
                    return  # the transaction is still being written
            yield RawRecord(pos, rtype, kind, body)
            pos += size

    def complete_size(self) -> int:
        """Where the last complete record ends (the offset a writer appends at)."""
        end = self.header.hdr_size
        for record in self.records():
            end = record.end
        return end
