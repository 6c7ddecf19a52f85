"""DuplexStream and SpillBuffer: no deadlock, bounded memory, stall timeout, EOF, rawlog."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rawlog_parse import parse_rawlog

from pydsync_server.errors import IOStalledError
from pydsync_server.transport.duplex import DuplexStream
from pydsync_server.transport.spill import SpillBuffer


def stream_pair(**kwargs: object) -> tuple[DuplexStream, DuplexStream]:
    """Two DuplexStreams connected back to back by two pipes."""
    a_to_b = os.pipe()
    b_to_a = os.pipe()
    a = DuplexStream(b_to_a[0], a_to_b[1], **kwargs)  # type: ignore[arg-type]
    b = DuplexStream(a_to_b[0], b_to_a[1], **kwargs)  # type: ignore[arg-type]
    return a, b


@pytest.fixture
def pair() -> Iterator[tuple[DuplexStream, DuplexStream]]:
    a, b = stream_pair()
    yield a, b
    a.close()
    b.close()


def read_exactly(stream: DuplexStream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = stream.read(n - len(out))
        assert data, "unexpected EOF"
        out += data
    return bytes(out)


def read_all(stream: DuplexStream) -> bytes:
    out = bytearray()
    while data := stream.read():
        out += data
    return bytes(out)


# -- SpillBuffer -------------------------------------------------------------------------


@given(
    st.lists(
        st.one_of(st.binary(min_size=1, max_size=40), st.integers(min_value=1, max_value=50)),
        max_size=60,
    )
)
def test_spill_buffer_is_a_fifo_across_the_threshold(ops: list[bytes | int]) -> None:
    buf = SpillBuffer(threshold=32)
    model = bytearray()
    try:
        for op in ops:
            if isinstance(op, bytes):
                buf.append(op)
                model += op
            else:
                got = buf.take(op)
                assert got == bytes(model[: len(got)])
                assert (1 <= len(got) <= op) if model else got == b""
                del model[: len(got)]
            assert len(buf) == len(model)
            assert buf._mem_size <= 32
        rest = bytearray()
        while chunk := buf.take(7):
            rest += chunk
        assert rest == model
    finally:
        buf.close()


def test_spill_buffer_returns_to_memory_after_draining() -> None:
    buf = SpillBuffer(threshold=4)
    buf.append(b"abc")
    buf.append(b"defgh")  # over the threshold: spilled
    assert buf.spilling
    assert buf.take(100) == b"abc"
    assert buf.take(100) == b"defgh"
    assert not buf.spilling
    buf.append(b"ij")
    assert not buf.spilling and buf.take(10) == b"ij"
    buf.close()


# -- DuplexStream ------------------------------------------------------------------------


def test_both_sides_write_large_data_before_reading(pair: tuple[DuplexStream, ...]) -> None:
    """Write-then-read on both sides at once must not deadlock (§10.1)."""
    a, b = pair
    payload_a = os.urandom(8 * 1024 * 1024)
    payload_b = os.urandom(8 * 1024 * 1024)
    results: dict[str, bytes] = {}

    def side(me: DuplexStream, payload: bytes, key: str) -> None:
        me.write(payload)
        results[key] = read_exactly(me, len(payload))

    threads = [
        threading.Thread(target=side, args=(a, payload_a, "a")),
        threading.Thread(target=side, args=(b, payload_b, "b")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "deadlock"
    assert results == {"a": payload_b, "b": payload_a}


def test_unread_input_spills_instead_of_growing_memory() -> None:
    a, b = stream_pair(spill_threshold=64 * 1024)
    try:
        payload = os.urandom(1024 * 1024)
        a.write(payload)
        a.close_write()
        assert read_all(b) == payload
        assert b._buffer._file_fd is not None  # it went through the temp file
    finally:
        a.close()
        b.close()


def test_eof_after_peer_closes_its_write_side(pair: tuple[DuplexStream, ...]) -> None:
    a, b = pair
    a.write(b"last words")
    a.close_write()
    assert read_all(b) == b"last words"
    assert b.read() == b""
    b.write(b"still open this way")  # half-close: the other direction still works
    assert read_exactly(a, 19) == b"still open this way"


def test_read_stalls_with_a_silent_peer() -> None:
    a, b = stream_pair(timeout=1)
    try:
        with pytest.raises(IOStalledError, match="I/O has stalled, no activity for 1 seconds"):
            a.read()
    finally:
        a.close()
        b.close()


def test_write_stalls_when_the_peer_neither_reads_nor_writes() -> None:
    to_peer_r, to_peer_w = os.pipe()
    from_peer_r, from_peer_w = os.pipe()  # the peer never writes and never reads
    stream = DuplexStream(from_peer_r, to_peer_w, timeout=1)
    try:
        with pytest.raises(IOStalledError, match="no activity for 1 seconds"):
            stream.write(b"x" * (16 * 1024 * 1024))
    finally:
        stream.close()
        os.close(to_peer_r)
        os.close(from_peer_w)


def test_write_to_a_vanished_peer_raises_oserror() -> None:
    to_peer_r, to_peer_w = os.pipe()
    from_peer_r, from_peer_w = os.pipe()
    stream = DuplexStream(from_peer_r, to_peer_w)
    os.close(to_peer_r)
    try:
        with pytest.raises(BrokenPipeError):
            stream.write(b"hello")
    finally:
        stream.close()
        os.close(from_peer_w)


def test_rawlog_holds_exactly_the_bytes_of_each_direction(tmp_path: Path) -> None:
    path = str(tmp_path / "raw")
    a_to_b = os.pipe()
    b_to_a = os.pipe()
    a = DuplexStream(b_to_a[0], a_to_b[1], rawlog=path)
    b = DuplexStream(a_to_b[0], b_to_a[1])
    sent = b"VERSION\tdsync\t3\t5\n" + os.urandom(300_000) + b"\n"
    received = b"from the peer\n" + os.urandom(200_000) + b"\n"
    b.write(received)
    b.close_write()
    a.write(sent)
    a.close_write()
    assert read_all(a) == received
    assert read_all(b) == sent
    a.close()
    b.close()
    assert parse_rawlog((tmp_path / "raw").read_bytes()) == {"I": received, "O": sent}
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_socket_half_close() -> None:
    left, right = socket.socketpair()
    fd = left.detach()
    stream = DuplexStream(fd, fd, timeout=5)
    try:
        stream.write(b"ping")
        stream.close_write()
        assert right.recv(10) == b"ping"
        assert right.recv(10) == b""  # our SHUT_WR reached the peer
        right.sendall(b"pong")
        right.close()
        assert read_all(stream) == b"pong"
    finally:
        stream.close()
