"""The `-s` state string: base64 of a versioned, CRC-checked array of mailbox states.

Format version 1 of Dovecot's `dsync-mailbox-state.c` (dsync-protocol.md §9.1):
header `01 00 00 00`, 44-byte little-endian records, CRC-32 of everything before it.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Iterable

from ..errors import DsyncError
from .items import MailboxState

DOVECOT_HEADER = b"\x01\x00\x00\x00"
# Dovecot never checks the two bytes after the version (§9.1, also 2.4.1): pydsync marks
# its own states there, so it knows whose modseqs a state holds.
PYDSYNC_HEADER = b"\x01\x00PY"
_RECORD = struct.Struct("<16sIIQQI")  # GUID, uidvalidity, uid, modseq, pvt modseq, count
_V0_RECORD_SIZE = 40  # v0: no header, no last_messages_count


class InvalidStateError(DsyncError):
    """The `-s` argument is not a state string (the master falls back to a full sync)."""


def encode_state(states: Iterable[MailboxState], *, header: bytes = DOVECOT_HEADER) -> str:
    """The state string for these mailbox states (`changes_during_sync` is not stored)."""
    data = bytearray(header)
    for state in states:
        guid = bytes.fromhex(state.mailbox_guid)
        if len(guid) != 16:
            raise ValueError(f"mailbox GUID is not 128 bits: {state.mailbox_guid!r}")
        data += _RECORD.pack(
            guid,
            state.last_uidvalidity,
            state.last_common_uid,
            state.last_common_modseq,
            state.last_common_pvt_modseq,
            state.last_messages_count,
        )
    data += zlib.crc32(data).to_bytes(4, "little")
    return base64.b64encode(bytes(data)).decode("ascii")


def decode_state(text: str) -> list[MailboxState]:
    """Parse a state string; a legacy v0 state is valid and decodes as empty."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidStateError("Invalid base64 data") from None
    if len(data) == 4 and data == b"\x00\x00\x00\x00":
        return []  # v0 empty state
    if len(data) < 8:
        raise InvalidStateError("Input too small")
    if (len(data) - 8) % _RECORD.size == 0:
        if _crc_ok(data):
            return _records(data[4:-4])
        error = "CRC32 mismatch"
    else:
        error = "Invalid input size"
    if (len(data) - 4) % _V0_RECORD_SIZE == 0 and _crc_ok(data):
        return []  # a valid v0 state: Dovecot silently treats it as empty
    raise InvalidStateError(error)


def written_by_pydsync(text: str) -> bool:
    """Whether a (valid) state string carries pydsync's header mark."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)[:4] == PYDSYNC_HEADER
    except (binascii.Error, UnicodeEncodeError):
        return False


def _crc_ok(data: bytes) -> bool:
    return int.from_bytes(data[-4:], "little") == zlib.crc32(data[:-4])


def _records(data: bytes) -> list[MailboxState]:
    return [
        MailboxState(
            mailbox_guid=guid.hex(),
            last_uidvalidity=uidvalidity,
            last_common_uid=uid,
            last_common_modseq=modseq,
            last_common_pvt_modseq=pvt_modseq,
            last_messages_count=count,
        )
        for guid, uidvalidity, uid, modseq, pvt_modseq, count in _RECORD.iter_unpack(data)
    ]
