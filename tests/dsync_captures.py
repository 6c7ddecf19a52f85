"""Helpers for the protocol tests: the recorded dsync byte streams and event handling."""

from __future__ import annotations

import dataclasses
import io
import struct
from collections.abc import Iterable
from pathlib import Path

from pydsync_server.errors import PeerClosedError
from pydsync_server.protocol.codec import (
    NEED_DATA,
    Decoder,
    Encoder,
    Event,
    StreamData,
    StreamEnd,
    StreamStart,
    dot_stuff,
)
from pydsync_server.protocol.items import Done, Mail
from pydsync_server.protocol.keys import KEY_HEADERS, KEY_HEADERS_24

VECTORS = Path(__file__).resolve().parent / "data" / "vectors"
DIRECTIONS = ("to-server", "from-server")
_DOVEADM_CLIENT_HEAD = b"VERSION\tdoveadm-client\t1\t2\n-\n+\n"


def capture_names() -> list[str]:
    return sorted(p.name for p in VECTORS.iterdir() if (p / "to-server").is_file())


def dsync_bytes(name: str, direction: str) -> bytes:
    """The pure dsync stream of one capture direction, transport framing removed."""
    data = (VECTORS / name / direction).read_bytes()
    if name.startswith("h") and direction == "to-server":
        # doveadm TCP: VERSION, PLAIN auth and the command line precede the stream (§12.1).
        for _ in range(3):
            data = data[data.index(b"\n") + 1 :]
    elif name.startswith("h"):
        data = _demultiplex(data)
    elif name == "i_remoteprefix" and direction == "to-server":
        data = data[data.index(b"\n") + 1 :]  # the remoteprefix user-name line (§2.1)
    return data


def _demultiplex(data: bytes) -> bytes:
    """Concatenate channel-0 payloads of doveadm's PACKET multiplexing (§12.2)."""
    assert data.startswith(_DOVEADM_CLIENT_HEAD)
    data = data[len(_DOVEADM_CLIENT_HEAD) :]
    payloads = []
    while data:
        channel, size = data[0], struct.unpack(">I", data[1:5])[0]
        if channel == 0:
            payloads.append(data[5 : 5 + size])
        data = data[5 + size :]
    stream = b"".join(payloads)
    assert stream.startswith(b"\n+\n")  # the command's success reply
    return stream[3:]


def decode(chunks: Iterable[bytes], max_line_length: int = 0) -> tuple[Decoder, list[Event]]:
    """Feed all chunks then EOF; return the events up to `Done` or a clean EOF."""
    decoder = Decoder(max_line_length)
    events: list[Event] = []
    for chunk in chunks:
        decoder.feed(chunk)
        _drain(decoder, events)
    decoder.feed_eof()
    try:
        _drain(decoder, events)
    except PeerClosedError as exc:
        assert str(exc).startswith("EOF (last recv="), exc  # only at a record boundary
    return decoder, events


def _drain(decoder: Decoder, events: list[Event]) -> None:
    while not events or not isinstance(events[-1], Done):
        event = decoder.next_event()
        if event is NEED_DATA:
            return
        events.append(event)


def coalesce(events: Iterable[Event]) -> list[Event]:
    """Merge neighbouring StreamData events (their split depends on the feeding)."""
    merged: list[Event] = []
    for event in events:
        if isinstance(event, StreamData) and merged and isinstance(merged[-1], StreamData):
            merged[-1] = StreamData(merged[-1].data + event.data)
        elif not (isinstance(event, StreamData) and not event.data):
            merged.append(event)
    return merged


def reencode(decoder: Decoder, events: Iterable[Event]) -> bytes:
    """Encode decoded events again with an Encoder like the capture's sender."""
    is_24 = "import_commit_msgs_interval" not in decoder.peer_key_headers["H"]
    assert decoder.peer_minor is not None
    encoder = Encoder(decoder.peer_minor, key_headers=KEY_HEADERS_24 if is_24 else KEY_HEADERS)
    out = [encoder.preamble()]
    body: list[bytes] = []
    for event in events:
        if isinstance(event, StreamStart):
            item = event.item
            if isinstance(item, Mail):
                item = dataclasses.replace(item, body=io.BytesIO())
            out.append(encoder.encode(item))
            body = []
        elif isinstance(event, StreamData):
            body.append(event.data)
        elif isinstance(event, StreamEnd):
            out.extend(dot_stuff(body))
        else:
            assert event is not NEED_DATA
            out.append(encoder.encode(event))
    return b"".join(out)
