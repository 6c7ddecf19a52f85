"""The `-s` state string (dsync-protocol.md §9): recorded states and Dovecot's errors."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pydsync_server.errors import DsyncError
from pydsync_server.protocol.items import MailboxState
from pydsync_server.protocol.state import InvalidStateError, decode_state, encode_state

GUID = "84f4fc0efc740b6bc03f000083ecc375"
RECORDED = [  # vectors/README.md: the states printed after d1, d2, d3
    (
        "AQAAAIT0/A78dAtrwD8AAIPsw3X8dAtrAwAAAAkAAAAAAAAAAAAAAAAAAAACAAAAJHeX+Q==",
        MailboxState(GUID, 1795912956, 3, 9, 0, 2),
    ),
    (
        "AQAAAIT0/A78dAtrwD8AAIPsw3X8dAtrBAAAAAoAAAAAAAAAAAAAAAAAAAADAAAA/Gqa3w==",
        MailboxState(GUID, 1795912956, 4, 10, 0, 3),
    ),
    (
        "AQAAAIT0/A78dAtrwD8AAIPsw3X8dAtrBAAAAAwAAAAAAAAAAAAAAAAAAAADAAAAKfe5Ww==",
        MailboxState(GUID, 1795912956, 4, 12, 0, 3),
    ),
]


@pytest.mark.parametrize(("text", "state"), RECORDED)
def test_recorded_states(text: str, state: MailboxState) -> None:
    assert decode_state(text) == [state]
    assert encode_state([state]) == text


def test_empty_state() -> None:
    assert encode_state([]) == "AQAAAHm4+Jk="
    assert decode_state("AQAAAHm4+Jk=") == []


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parent / "data" / "vectors").glob("*/state-*.txt"))
)
def test_every_recorded_state_file(path: Path) -> None:
    text = path.read_text().strip()
    if text:
        assert encode_state(decode_state(text)) == text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _with_crc(data: bytes) -> bytes:
    return data + struct.pack("<I", zlib.crc32(data))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!", "Invalid base64 data"),
        ("AQAAAHm4+Jk", "Invalid base64 data"),  # missing padding
        ("", "Input too small"),
        (_b64(b"\x01\x00\x00"), "Input too small"),
        (_b64(_with_crc(b"\x01\x00\x00\x00" + b"\x00" * 43)), "Invalid input size"),
        (_b64(b"\x01\x00\x00\x00\x00\x00\x00\x00"), "CRC32 mismatch"),
    ],
)
def test_invalid_states(text: str, message: str) -> None:
    with pytest.raises(InvalidStateError) as info:
        decode_state(text)
    assert str(info.value) == message
    assert isinstance(info.value, DsyncError)


def test_v0_states_decode_as_empty() -> None:
    assert decode_state(_b64(b"\x00\x00\x00\x00")) == []
    v0_record = bytes.fromhex(GUID) + struct.pack("<IIQQ", 1, 2, 3, 4)
    assert decode_state(_b64(_with_crc(v0_record * 2))) == []


@given(
    st.lists(
        st.builds(
            MailboxState,
            st.binary(min_size=16, max_size=16).map(bytes.hex),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**32 - 1),
        ),
        max_size=5,
    )
)
def test_roundtrip(states: list[MailboxState]) -> None:
    assert decode_state(encode_state(states)) == states


def test_changes_during_sync_is_not_stored() -> None:
    state = MailboxState(GUID, 1, 2, 3, 4, 5, changes_during_sync=True)
    assert decode_state(encode_state([state])) == [MailboxState(GUID, 1, 2, 3, 4, 5)]


def test_bad_guid_is_a_bug() -> None:
    with pytest.raises(ValueError):
        encode_state([MailboxState("abcd", 1, 2, 3, 4)])
