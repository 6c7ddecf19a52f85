"""The channel a brain talks through: items out, items in.

Two implementations exist: `brain.memchannel` (two brains in one process, items passed
as objects) and `transport.stream.StreamChannel` (the dsync byte stream over pipes or
sockets). The brain is written against this protocol only.
"""

from __future__ import annotations

from typing import Protocol

from .items import Item

PROTOCOL_MAJOR = 3
PROTOCOL_MINOR = 5


class Channel(Protocol):
    """A full-duplex, ordered item channel.

    `send` never waits for the peer to read (the implementation buffers or writes
    while a reader keeps draining the other direction). `recv` blocks until the next
    item arrives and raises `PeerClosedError`, `RemoteProtocolError` or
    `IOStalledError`. A `Mail` received carries its body as a seekable file the
    receiver owns.
    """

    @property
    def peer_minor_version(self) -> int:
        """The peer's protocol minor version (valid after the first `recv`)."""
        ...

    def send(self, item: Item) -> None: ...

    def recv(self) -> Item: ...

    def flush(self) -> None:
        """Push everything sent so far towards the peer."""
        ...

    def close(self, *, send_done: bool) -> None:
        """End the session; with `send_done`, send `X` first."""
        ...
