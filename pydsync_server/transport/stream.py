"""`StreamChannel`: the brain's `Channel` over a dsync byte stream (pipes, sockets, stdio).

Glue between the sans-I/O codec (`protocol.codec`) and a blocking byte stream: items are
encoded into an output buffer that is written in large pieces (the start-up burst of
dsync-protocol.md §5.1 goes out as one write) and always flushed before a read that
could block; mail and attribute streams (§4) are dot-stuffed in 64 KiB chunks on the
way out and spooled to a temporary file on the way in.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO, Protocol, cast

from ..errors import IOStalledError, PeerClosedError
from ..protocol.codec import (
    NEED_DATA,
    Decoder,
    Encoder,
    StreamData,
    StreamEnd,
    StreamStart,
    dot_stuff,
)
from ..protocol.items import (
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
    Marker,
)

CHUNK_SIZE = 64 * 1024
FLUSH_AT = 128 * 1024  # Dovecot stops producing once this much output is queued (§10.1)
BODY_SPOOL_MEMORY = 1024 * 1024  # received bodies larger than this go to disk (§4.2)

# Dovecot's item names, as they appear in "last sent=…, last recv=…" (§5.3 table).
ITEM_NAMES: dict[type[object], str] = {
    Done: "done",
    Handshake: "handshake",
    MailboxState: "mailbox_state",
    MailboxTreeNode: "mailbox_tree_node",
    MailboxDelete: "mailbox_delete",
    Mailbox: "mailbox",
    MailboxAttribute: "mailbox_attribute",
    MailChange: "mail_change",
    MailRequest: "mail_request",
    Mail: "mail",
    Finish: "finish",
}


# Dovecot's dsync input buffer is unbounded; a line this long is an attack, not mail
# (bodies travel as streams, never as lines).
MAX_LINE_LENGTH = 10 * 1024 * 1024

class ByteStream(Protocol):
    """What `StreamChannel` needs from a transport; `DuplexStream` is one."""

    def read(self, n: int = ...) -> bytes: ...

    def write(self, data: bytes | memoryview) -> None: ...

    def close_write(self) -> None: ...


class _Progress:
    """Last item sent/received, for Dovecot's "(last sent=…, last recv=…)" suffix."""

    def __init__(self) -> None:
        self.sent = ""
        self.sent_eol = False
        self.recv = ""
        self.recv_eol = False
        self.handshake_received = False

    def note(self, item: Item, *, sent: bool) -> None:
        eol = isinstance(item, Marker)
        name = ITEM_NAMES.get(type(item), "")
        if sent:
            self.sent, self.sent_eol = (self.sent, True) if eol else (name, False)
        else:
            self.recv, self.recv_eol = (self.recv, True) if eol else (name, False)
            self.handshake_received |= isinstance(item, Handshake)

    def describe(self, version_received: bool) -> str:
        if not version_received:
            return "version not received"
        if not self.handshake_received:
            return "handshake not received"
        sent_eol = " (EOL)" if self.sent_eol else ""
        recv_eol = " (EOL)" if self.recv_eol else ""
        return f"last sent={self.sent}{sent_eol}, last recv={self.recv}{recv_eol}"


class StreamChannel:
    """A `Channel` speaking the dsync 3.x wire protocol over a `ByteStream`.

    `name` is the peer's name in error messages ("read(<name>) failed: EOF"); the
    brain may set it to the peer's hostname once the handshake arrived (§10.2).
    The caller owns `stream` and closes it after `close()`.
    """

    def __init__(
        self,
        stream: ByteStream,
        *,
        minor: int = 5,
        name: str = "remote",
        max_line_length: int = MAX_LINE_LENGTH,
    ) -> None:
        self.name = name
        self._stream = stream
        self._encoder = Encoder(minor)
        self._decoder = Decoder(max_line_length)
        self._out = bytearray(self._encoder.preamble())  # start-up burst, part 1 (§5.1)
        self._pending: deque[Item] = deque()
        self._progress = _Progress()
        self._closed = False

    @property
    def peer_minor_version(self) -> int:
        """The peer's minor; reads (and keeps) the first item if the VERSION line and
        key headers have not arrived yet."""
        while self._decoder.peer_minor is None:
            self._pending.append(self._read_item())
        return self._decoder.peer_minor

    # -- sending ---------------------------------------------------------------------

    def send(self, item: Item) -> None:
        if self._closed:
            raise ValueError("send on a closed StreamChannel")
        self._out += self._encoder.encode(item)
        self._progress.note(item, sent=True)
        if isinstance(item, Mail) and item.body is not None:
            self._send_stream(_chunks(item.body))
        elif isinstance(item, MailboxAttribute) and item.stream:
            value = (item.value or "").encode("utf-8", "surrogateescape")
            self._send_stream(iter((value,)))
        if len(self._out) >= FLUSH_AT:
            self.flush()

    def _send_stream(self, chunks: Iterator[bytes]) -> None:
        for piece in dot_stuff(chunks):
            self._out += piece
            if len(self._out) >= FLUSH_AT:
                self.flush()

    def flush(self) -> None:
        if not self._out:
            return
        data = bytes(self._out)
        self._out.clear()
        try:
            self._stream.write(data)
        except IOStalledError as exc:
            raise IOStalledError(f"{exc} ({self._state()})") from exc
        except OSError as exc:
            raise PeerClosedError(
                f"write({self.name}) failed: {exc.strerror or exc} ({self._state()})"
            ) from exc

    # -- receiving -------------------------------------------------------------------

    def recv(self) -> Item:
        """The next item; a `Mail` with a stream carries it as a seekable spooled file."""
        item = self._pending.popleft() if self._pending else self._read_item()
        return item

    def _read_item(self) -> Item:
        event = self._next_event()
        if isinstance(event, (StreamData, StreamEnd)):
            raise AssertionError(f"codec yielded {event!r} outside a stream")
        if isinstance(event, StreamStart):
            item = self._read_streamed(event.item)
        else:
            item = event
        self._progress.note(item, sent=False)
        return item

    def _read_streamed(self, head: Mail | MailboxAttribute) -> Item:
        if isinstance(head, Mail):
            spool = tempfile.SpooledTemporaryFile(max_size=BODY_SPOOL_MEMORY)
            try:
                self._copy_stream(spool)
            except BaseException:
                spool.close()
                raise
            spool.seek(0)
            return dataclasses.replace(head, body=cast(BinaryIO, spool))
        value = bytearray()
        self._copy_stream(value)
        return dataclasses.replace(head, value=value.decode("utf-8", "surrogateescape"))

    def _copy_stream(self, sink: tempfile.SpooledTemporaryFile[bytes] | bytearray) -> None:
        while True:
            event = self._next_event()
            if isinstance(event, StreamEnd):
                return
            if not isinstance(event, StreamData):
                raise AssertionError(f"codec yielded {event!r} inside a stream")
            if isinstance(sink, bytearray):
                sink += event.data
            else:
                sink.write(event.data)

    def _next_event(self) -> Item | StreamStart | StreamData | StreamEnd:
        """The decoder's next event, reading (after flushing our output) when it needs data."""
        while True:
            try:
                event = self._decoder.next_event()
            except PeerClosedError as exc:
                raise PeerClosedError(f"read({self.name}) failed: EOF ({self._state()})") from exc
            if event is not NEED_DATA:
                return event
            self.flush()  # never block on reading while our own output waits (§10.1)
            data = self._read_bytes()
            if data:
                self._decoder.feed(data)
            else:
                self._decoder.feed_eof()

    def _read_bytes(self) -> bytes:
        try:
            return self._stream.read(CHUNK_SIZE)
        except IOStalledError as exc:
            raise IOStalledError(f"{exc} ({self._state()})") from exc
        except OSError as exc:
            raise PeerClosedError(
                f"read({self.name}) failed: {exc.strerror or exc} ({self._state()})"
            ) from exc

    # -- closing ---------------------------------------------------------------------

    def close(self, *, send_done: bool) -> None:
        """Send `X` if asked, flush, and close our sending side (the peer sees EOF).

        A peer that already went away is not an error here: there is nobody left to
        tell. A stall still raises `IOStalledError`.
        """
        if self._closed:
            return
        if send_done:
            self.send(Done())
        self._closed = True
        try:
            self.flush()
        except PeerClosedError:
            pass
        finally:
            self._stream.close_write()

    def _state(self) -> str:
        return self._progress.describe(self._decoder.peer_minor is not None)


def _chunks(body: BinaryIO) -> Iterator[bytes]:
    """The body from its current position, in CHUNK_SIZE pieces."""
    while chunk := body.read(CHUNK_SIZE):
        yield chunk
