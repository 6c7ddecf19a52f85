"""Header hash versions 1-3 against the vectors of dsync-algorithm.md §6 and protocol §8.8."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pydsync_server.brain.hdr_hash import hash_version_for_minor, header_hash

HEADERS = ("Date", "Message-ID")
EMPTY_HASH = "68b329da9893e34099c7d8ad5cb9c940"  # MD5("\n")

# (message, v3, v1) from the table in dsync-algorithm.md §6.
VECTORS = [
    (
        b"From: x@example.com\nTo: y@example.com\nSubject: m1\nDate: Mon, 1 Jan 2024 00:00:00"
        b" +0000\nMessage-ID: <m1@example.com>\n\nbody m1\n",
        "cef4d87d7d0fe3362c4663c727ea98b2",
        "30486161c8f6a56420e8f178c79eb9fb",
    ),
    (
        b"From: x@example.com\nSubject: weird\nDate:   Tue, 2 Jan 2024 10:00:00 +0000 (UTC)\n"
        b"Message-Id: <abc\xc3\xa4\xc3\xb6??def@ex>\nX-Other: 1\nmessage-id:\n\tcontinued  line\n"
        b"\nbody\n",
        "d60040b92a849b90eab8a25c362591db",
        "2c3744059eaa69bdd8927ce7e5ef3b60",
    ),
    (
        b"Date: Tue, 2 Jan 2024\r\n\t10:00:00 +0000\r\nMessage-ID: <a b?\x01\x02c>\r\n"
        b"Subject: crlf\r\n\r\nbody\r\n",
        "3c02f74b859b02473171ace59a5f6e71",
        "fe2317d327ec974f753d52bc864cf682",
    ),
    (
        b"Subject: hdronly\nDate: x  y\tz",
        "77467d422349a6a0d71a9a46d1a63d7f",
        "ae403bfe3c84f0b4c7ab3938f64ca1ca",
    ),
    (
        b"Date: ??? ?\x80\x81?x\nMessage-Id:<\t>\n\nb\n",
        "82dec9e3cc2eecb543e68ccda33a1197",
        "1f40100853582343c54288fa5f4b8fd2",
    ),
    (b"Subject: nohdr\n\nbody\n", EMPTY_HASH, EMPTY_HASH),
]


@pytest.mark.parametrize(("message", "v3", "v1"), VECTORS)
def test_vectors(message: bytes, v3: str, v1: str) -> None:
    assert header_hash(message, HEADERS, 3) == v3
    assert header_hash(message, HEADERS, 1) == v1


@pytest.mark.parametrize(("message", "v3", "v1"), VECTORS)
def test_file_input_reads_the_same(message: bytes, v3: str, v1: str) -> None:
    assert header_hash(io.BytesIO(message), HEADERS, 3) == v3
    assert header_hash(cast(BinaryIO, _Trickle(message)), HEADERS, 1) == v1


class _Trickle(io.RawIOBase):
    """A file that returns one byte per read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        byte, self._data = self._data[:1], self._data[1:]
        return byte


def test_recorded_probe_msg1() -> None:
    # dsync-protocol.md §8.8: verified against Dovecot with peer minor 3 and 5.
    message = (
        (Path(__file__).resolve().parent / "data" / "vectors" / "tools" / "msg1.eml").read_bytes()
    )
    assert header_hash(message, HEADERS, hash_version_for_minor(3)) == (
        "47192729d762c7e38db38e9fc3901558"
    )
    assert header_hash(message, HEADERS, hash_version_for_minor(5)) == (
        "223e2429046ab81fbe40a7209d981aab"
    )


def test_version_2_keeps_spaces() -> None:
    message = b"Date: a  b\x80\x81\n\n"
    assert header_hash(message, ["date"], 2) == header_hash(b"Date: a  b?\n\n", ["date"], 1)


def test_body_is_never_read() -> None:
    class Exploding(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            assert self.tell() < 4096, "read far past the header"
            return super().read(size)

    body = b"x" * 10**6
    header = b"Date: d\n\n"
    assert header_hash(Exploding(header + body), HEADERS, 3) == header_hash(header, HEADERS, 3)


def test_hash_versions_by_minor() -> None:
    assert [hash_version_for_minor(m) for m in range(7)] == [1, 1, 1, 1, 3, 3, 3]
    with pytest.raises(ValueError):
        header_hash(b"", HEADERS, 4)


@given(st.binary(max_size=200), st.integers(1, 3))
def test_body_does_not_matter(header: bytes, version: int) -> None:
    header = header.replace(b"\n\n", b"\n").replace(b"\n\r\n", b"\n").lstrip(b"\r\n")
    message = header + b"\n\nbody one\n"
    assert header_hash(message, HEADERS, version) == header_hash(
        header + b"\n\ndifferent\nDate: x\n", HEADERS, version
    )
