"""Dot-stuffed streams (§4): the spec's examples, loose terminators, bounded memory."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from collections.abc import Iterator

import pytest

from pydsync_server.protocol.codec import (
    NEED_DATA,
    Decoder,
    Encoder,
    StreamData,
    StreamEnd,
    StreamStart,
    dot_stuff,
)
from pydsync_server.protocol.dotstream import DotUnstuffer
from pydsync_server.protocol.items import END_OF_LIST, Mail

# §4.2 examples table: value -> bytes after the item line.
EXAMPLES = [
    (b"abc\n", b"abc\n\r\n.\r\n"),
    (b"abc", b"abc\r\n.\r\n"),
    (b"abc\r", b"abc\r\r\n.\r\n"),
    (b"", b"\r\n.\r\n"),
    (b".x\n.\nend\n", b"..x\n..\nend\n\r\n.\r\n"),
    (b"a\r.b\n", b"a\r.b\n\r\n.\r\n"),  # a dot after a bare CR is not at a line start
    (b".", b"..\r\n.\r\n"),
    (b"\n.", b"\n..\r\n.\r\n"),
]


def _unstuff(wire: bytes) -> tuple[bytes, bytes]:
    """Decode one stream from `wire`: (value, bytes left after it)."""
    buf = bytearray(wire)
    data, finished = DotUnstuffer().step(buf)
    assert finished
    return data, bytes(buf)


@pytest.mark.parametrize(("value", "wire"), EXAMPLES)
def test_spec_examples(value: bytes, wire: bytes) -> None:
    assert b"".join(dot_stuff([value])) == wire
    assert _unstuff(wire + b"NEXT") == (value, b"NEXT")


def test_stuffing_across_chunk_boundaries() -> None:
    chunks = [b"a\n", b".b", b"\n", b"", b".", b"\r\n.", b"c"]
    assert b"".join(dot_stuff(chunks)) == b"a\n..b\n..\r\n..c\r\n.\r\n"


@pytest.mark.parametrize(("wire", "value"), [
    (b"abc\n.\n", b"abc"),
    (b"abc\r\n.\n", b"abc"),
    (b"abc\n.\r\n", b"abc"),
    (b".\r\n", b""),  # a bare end line is an empty value
    (b".\n", b""),
    (b".Xfirst\n.\n", b"Xfirst"),  # an unstuffed offset-0 dot is dropped, as Dovecot does
    (b"a\n.\rb\n.\n", b"a\n\rb"),
])
def test_loose_terminators(wire: bytes, value: bytes) -> None:
    assert _unstuff(wire) == (value, b"")


def test_value_waits_for_the_terminator() -> None:
    unstuffer, buf = DotUnstuffer(), bytearray()
    output = []
    for byte in b"ab\r\n.\r":
        buf.append(byte)
        data, finished = unstuffer.step(buf)
        output.append(data)
        assert not finished
    assert b"".join(output) == b"ab"  # "\r\n" is held back: it may precede the end line
    buf += b"\n"
    assert unstuffer.step(buf) == (b"", True)


def _generated_body(megabytes: int) -> Iterator[bytes]:
    """Deterministic mail-like body with dot lines, CRLF and CR-only bits."""
    block = b"".join(
        b".leading %d\r\n" % i if i % 7 == 0 else b"line %d with text\n" % i if i % 3 else b"cr\r."
        for i in range(2000))
    produced = 0
    while produced < megabytes * 2**20:
        yield block
        produced += len(block)


def test_64mb_body_streams_with_bounded_memory() -> None:
    expected = hashlib.sha256()
    for chunk in _generated_body(64):
        expected.update(chunk)
    encoder, decoder = Encoder(), Decoder()
    received, size = hashlib.sha256(), 0
    tracemalloc.start()
    try:
        decoder.feed(encoder.preamble() + encoder.encode(Mail(guid="big", body=io.BytesIO())))
        for chunk in dot_stuff(_generated_body(64)):
            decoder.feed(chunk)
            while (event := decoder.next_event()) is not NEED_DATA:
                if isinstance(event, StreamData):
                    received.update(event.data)
                    size += len(event.data)
                else:
                    assert isinstance(event, StreamStart | StreamEnd)
        decoder.feed(b".\n")
        assert decoder.next_event() == END_OF_LIST
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size >= 64 * 2**20
    assert received.hexdigest() == expected.hexdigest()
    assert peak < 16 * 2**20
