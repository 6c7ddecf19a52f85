"""The header hash (`C.hdr_hash`) that matches messages when GUIDs are unusable.

dsync-algorithm.md §6 (Dovecot's `dsync_mail_get_hdr_hash`): MD5 over the selected
header fields, normalised per hash version. Only the header block is read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from typing import BinaryIO

_CHUNK = 8192
# Version 2/3: bytes that collapse, as a run, into one `?` (TAB and LF stay as they are).
_REPLACEABLE_RUN = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f-\xff?]+")
_EMPTY_LINE = re.compile(rb"\n\r?\n")  # a line end followed by an empty line

HDR_HASH_MINOR_V3 = 4  # peer minor from which Dovecot uses hash version 3 (§5.2)


def hash_version_for_minor(minor: int) -> int:
    """The header hash version both sides use given the peer's protocol minor."""
    return 3 if minor >= HDR_HASH_MINOR_V3 else 1


def header_hash(message: bytes | BinaryIO, hashed_headers: Sequence[str], version: int) -> str:
    """32 lowercase hex digits: MD5 of the normalised hashed header fields."""
    if version not in (1, 2, 3):
        raise ValueError(f"unknown header hash version {version}")
    wanted = {name.encode("utf-8", "surrogateescape").lower() for name in hashed_headers}
    selected = b"".join(_selected_fields(_header_block(message), wanted)) + b"\n"
    selected = selected.replace(b"\r\n", b"\n")
    if version >= 2:
        selected = _REPLACEABLE_RUN.sub(b"?", selected)
    if version >= 3:
        selected = selected.replace(b" ", b"")  # after collapsing: a space ends a run
    return hashlib.md5(selected, usedforsecurity=False).hexdigest()


def _header_block(message: bytes | BinaryIO) -> bytes:
    """The message up to the empty line that ends its header (reads past it at most a chunk)."""
    if isinstance(message, bytes | bytearray | memoryview):
        data = bytes(message)
        end = _header_end(data, 0)
        return data if end is None else data[:end]
    data = b""
    while chunk := message.read(_CHUNK):
        searched = max(len(data) - 2, 0)  # the empty line may straddle two chunks
        data += chunk
        end = _header_end(data, searched)
        if end is not None:
            return data[:end]
    return data


def _header_end(data: bytes, start: int) -> int | None:
    """Length of the header block if its terminating empty line is in `data`."""
    if data.startswith(b"\n") or data.startswith(b"\r\n"):
        return 0
    match = _EMPTY_LINE.search(data, start)
    return None if match is None else match.start() + 1


def _selected_fields(header: bytes, wanted: set[bytes]) -> Iterator[bytes]:
    """Whole fields (with continuation lines) whose name is wanted, each ending in LF."""
    keep = False
    for line in header.split(b"\n"):
        if not line:
            continue  # after the final LF (or an empty header)
        if line[:1] not in (b" ", b"\t"):
            name, colon, _ = line.partition(b":")
            keep = bool(colon) and name.rstrip(b" \t").lower() in wanted
        if keep:
            yield line + b"\n"  # a last line without LF gets one
