"""StreamChannel over real pipes: every item both ways at once, big bodies, EOF, stall."""

from __future__ import annotations

import io
import os
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from rawlog_parse import parse_rawlog

from pydsync_server.errors import IOStalledError, PeerClosedError
from pydsync_server.protocol.channel import Channel
from pydsync_server.protocol.codec import Encoder
from pydsync_server.protocol.items import (
    END_OF_LIST,
    CacheField,
    Done,
    Finish,
    Handshake,
    Item,
    Mail,
    Mailbox,
    MailboxAttribute,
    MailboxDelete,
    MailboxState,
    MailboxTreeNode,
    MailChange,
    MailRequest,
)
from pydsync_server.transport.duplex import DuplexStream
from pydsync_server.transport.stream import StreamChannel

GUID = "0123456789abcdef0123456789abcdef"


def stream_pair(**kwargs: object) -> tuple[DuplexStream, DuplexStream]:
    a_to_b = os.pipe()
    b_to_a = os.pipe()
    a = DuplexStream(b_to_a[0], a_to_b[1], **kwargs)  # type: ignore[arg-type]
    b = DuplexStream(a_to_b[0], b_to_a[1], **kwargs)  # type: ignore[arg-type]
    return a, b


@pytest.fixture
def streams() -> Iterator[tuple[DuplexStream, DuplexStream]]:
    a, b = stream_pair()
    yield a, b
    a.close()
    b.close()


def every_item(hostname: str) -> list[Item]:
    """One of each item type (bodies excluded), in a plausible order."""
    return [
        Handshake(hostname=hostname, sync_type="f", hashed_headers=("Date", "Message-ID")),
        MailboxState(GUID, 1795912956, 3, 10, 0, last_messages_count=3),
        END_OF_LIST,
        MailboxTreeNode(("Work", "Sub\tTab"), "y", GUID, 1795912956, 4, subscribed=True),
        END_OF_LIST,
        MailboxDelete("/", None, ((GUID, 1795912956),)),
        Mailbox(GUID, 1795912956, 4, 3, 1, 10, 0, cache_fields=(CacheField("date.sent", "t"),)),
        MailboxAttribute("p", "comment", "multi\tline\nvalue", last_change=7, modseq=2),
        MailboxAttribute("s", "streamed", "..leading dots\n.\nand more", stream=True),
        END_OF_LIST,
        MailChange("s", 1, GUID, "hash", 2, final_flags=0x28, keyword_changes=("&$Label1",)),
        END_OF_LIST,
        MailRequest(GUID, 1),
        END_OF_LIST,
        Mail(GUID, 9, received_date=1795912956),  # no stream: expunged on the sender
        Finish("dsync failed", 1),
    ]


def collect(channel: StreamChannel, until: Callable[[Item], bool]) -> list[Item]:
    items: list[Item] = []
    while True:
        item = channel.recv()
        items.append(item)
        if until(item):
            return items


def test_start_up_burst_is_one_write() -> None:
    writes: list[bytes] = []

    class Recorder:
        def read(self, n: int = 0) -> bytes:
            return b""

        def write(self, data: bytes | memoryview) -> None:
            writes.append(bytes(data))

        def close_write(self) -> None:
            pass

    channel: Channel = StreamChannel(Recorder(), name="remote")  # mypy: it is a Channel
    channel.send(Handshake(hostname="a"))
    with pytest.raises(PeerClosedError):
        channel.recv()  # flushes before it blocks
    assert len(writes) == 1
    assert writes[0].startswith(b"VERSION\tdsync\t3\t5\n")
    assert writes[0].endswith(b".\nHa\n")


def test_every_item_both_ways_with_concurrent_50mb_bodies(tmp_path: Path) -> None:
    size = 50 * 1024 * 1024
    bodies = {}
    for who in ("a", "b"):
        path = tmp_path / f"body-{who}"
        with path.open("wb") as f:
            block = (b"line\n.dot line\n" + who.encode() * 4000 + b"\r\n") * 64
            written = 0
            while written < size:
                written += f.write(block[: size - written])
        bodies[who] = path
    sa, sb = stream_pair()
    received: dict[str, list[Item]] = {}
    errors: list[BaseException] = []

    def side(name: str, stream: DuplexStream, other: str) -> None:
        try:
            channel = StreamChannel(stream, name=other)
            with bodies[name].open("rb") as body:
                for item in every_item(name):
                    channel.send(item)
                channel.send(Mail(GUID, 5, "uidl", 1, 2, 3, body=body))
                channel.send(Done())
                channel.flush()
            received[name] = collect(channel, lambda item: isinstance(item, Done))
            assert channel.peer_minor_version == 5
            channel.close(send_done=False)
        except BaseException as exc:
            errors.append(exc)

    tracemalloc.start()
    threads = [
        threading.Thread(target=side, args=("a", sa, "b")),
        threading.Thread(target=side, args=("b", sb, "a")),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
            assert not t.is_alive(), "deadlock"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sa.close()
        sb.close()
    assert not errors, errors
    # Both sides held 2 x 50 MB in flight; memory stayed at the spill thresholds.
    assert peak < 24 * 1024 * 1024, f"peak traced memory {peak / 2**20:.1f} MiB"
    for me, other in (("a", "b"), ("b", "a")):
        items = received[me]
        assert items[:-2] == every_item(other)
        mail, done = items[-2:]
        assert done == Done()
        assert isinstance(mail, Mail) and mail == Mail(GUID, 5, "uidl", 1, 2, 3)
        assert mail.body is not None
        assert same_content(mail.body, bodies[other])
        mail.body.close()


def same_content(got: BinaryIO, path: Path) -> bool:
    with path.open("rb") as want:
        while True:
            a = got.read(1024 * 1024)
            b = want.read(1024 * 1024)
            if a != b:
                return False
            if not a:
                return True


@pytest.mark.parametrize(
    "body",
    [b"", b".", b".\r\n", b"..\n.\n", b"abc\r", b"x\r\n.\r\ny", b"\n.\n", b"end."],
)
def test_tricky_bodies_round_trip(streams: tuple[DuplexStream, DuplexStream], body: bytes) -> None:
    sa, sb = streams
    a = StreamChannel(sa)
    b = StreamChannel(sb)
    a.send(Mail(GUID, 1, body=io.BytesIO(body)))
    a.send(MailRequest(GUID, 2))
    a.flush()
    got = b.recv()
    assert isinstance(got, Mail) and got.body is not None
    assert got.body.tell() == 0
    assert got.body.read() == body
    assert b.recv() == MailRequest(GUID, 2)


def test_peer_minor_version_is_read_lazily_and_keeps_the_first_item(
    streams: tuple[DuplexStream, DuplexStream],
) -> None:
    sa, sb = streams
    a = StreamChannel(sa, minor=2)
    b = StreamChannel(sb)
    a.send(Handshake(hostname="old"))
    a.flush()
    assert b.peer_minor_version == 2
    assert b.recv() == Handshake(hostname="old")


def test_done_is_returned_and_close_sends_it(streams: tuple[DuplexStream, DuplexStream]) -> None:
    sa, sb = streams
    a = StreamChannel(sa)
    b = StreamChannel(sb)
    a.send(Handshake(hostname="a"))
    a.close(send_done=True)
    assert b.recv() == Handshake(hostname="a")
    assert b.recv() == Done()


def test_eof_mid_stream_is_peer_closed(streams: tuple[DuplexStream, DuplexStream]) -> None:
    sa, sb = streams
    b = StreamChannel(sb, name="peerhost")
    a = StreamChannel(sa)
    a.send(Handshake(hostname="a"))
    a.flush()
    sa.write(Encoder().encode(Mail(GUID, 1, body=io.BytesIO())) + b"half a body, no end")
    sa.close_write()
    assert b.recv() == Handshake(hostname="a")
    with pytest.raises(PeerClosedError, match=r"^read\(peerhost\) failed: EOF \(last sent="):
        b.recv()


def test_eof_before_version_is_peer_closed(streams: tuple[DuplexStream, DuplexStream]) -> None:
    sa, sb = streams
    sa.close_write()
    b = StreamChannel(sb)
    with pytest.raises(PeerClosedError, match=r"read\(remote\) failed: EOF \(version not recei"):
        b.recv()


def test_silent_peer_stalls() -> None:
    sa, sb = stream_pair(timeout=1)
    try:
        b = StreamChannel(sb)
        with pytest.raises(IOStalledError, match="I/O has stalled, no activity for 1 seconds"):
            b.recv()
    finally:
        sa.close()
        sb.close()


def test_write_to_closed_peer_is_peer_closed() -> None:
    r, w = os.pipe()
    r2, w2 = os.pipe()
    os.close(r)
    stream = DuplexStream(r2, w)
    try:
        channel = StreamChannel(stream, name="gone")
        with pytest.raises(PeerClosedError, match=r"write\(gone\) failed: Broken pipe"):
            channel.flush()
        channel.close(send_done=True)  # nobody left to tell: not an error
    finally:
        stream.close()
        os.close(w2)


def test_rawlog_of_a_session(tmp_path: Path) -> None:
    a_to_b = os.pipe()
    b_to_a = os.pipe()
    sa = DuplexStream(b_to_a[0], a_to_b[1], rawlog=str(tmp_path / "session"))
    sb = DuplexStream(a_to_b[0], b_to_a[1])
    a = StreamChannel(sa)
    b = StreamChannel(sb)
    a.send(Handshake(hostname="a"))
    a.send(Mail(GUID, 1, body=io.BytesIO(b".hidden\n")))
    a.close(send_done=True)
    b.send(Handshake(hostname="b"))
    b.close(send_done=True)
    assert a.recv() == Handshake(hostname="b")
    assert a.recv() == Done()
    assert b.recv() == Handshake(hostname="a")
    sa.close()
    sb.close()
    logged = parse_rawlog((tmp_path / "session").read_bytes())
    out, inp = logged["O"], logged["I"]
    assert out.startswith(b"VERSION\tdsync\t3\t5\n")
    assert out.endswith(b"\n..hidden\n\r\n.\r\nX\n")
    assert inp.endswith(b".\nHb\nX\n")
