"""Sans-I/O dsync codec: items -> bytes (`Encoder`), bytes -> events (`Decoder`).

h11-style: the caller feeds received bytes and pulls events; `NEED_DATA` means "read
more". Streams arrive as `StreamStart`, `StreamData`…, `StreamEnd` so that a body is
never held whole. Wire rules: dsync-protocol.md §3–§6, §15.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..errors import LocalProtocolError, PeerClosedError, ProtocolError, RemoteProtocolError
from . import escape
from .dotstream import DotUnstuffer, dot_stuff
from .fields import (
    FIELDS_BY_CHAR,
    FIELDS_BY_TYPE,
    U32,
    Context,
    FieldError,
    ItemFields,
    map_values,
    missing_required,
    show,
    to_str,
)
from .items import END_OF_LIST, Done, Item, Mail, MailboxAttribute, Marker
from .keys import (
    ITEM_SPECS,
    KEY_HEADERS,
    MINOR_SAVE_GUIDS,
    OWN_MINOR,
    SPECS_BY_CHAR,
    ItemSpec,
    KeyHeaders,
    header_block,
    version_line,
)

__all__ = [
    "OWN_MINOR", "Encoder", "Decoder", "dot_stuff", "StreamStart", "StreamData", "StreamEnd",
    "NeedData", "NEED_DATA", "Event",
]

_VERSION_PREFIX = b"VERSION\tdsync\t"
_VERSION = re.compile(rb"VERSION\tdsync\t3\t([0-9]+)")
_INCOMPATIBLE = "Remote dsync doesn't use compatible protocol"


@dataclass(frozen=True)
class StreamStart:
    """A record whose dot-stuffed stream follows (`M` with `stream`, `A` with `stream`)."""

    item: Mail | MailboxAttribute


@dataclass(frozen=True)
class StreamData:
    """A piece of the current stream's value (already un-stuffed)."""

    data: bytes


@dataclass(frozen=True)
class StreamEnd:
    """The current stream is complete."""


class NeedData(Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA

Event = Item | StreamStart | StreamData | StreamEnd | NeedData


class Encoder:
    """Turns items into wire bytes using our own key header (§3.2 encoding)."""

    def __init__(self, minor: int = OWN_MINOR, *, key_headers: KeyHeaders = KEY_HEADERS) -> None:
        self.minor = minor
        self._keys = {char: keys for char, keys in key_headers.items()
                      if char in SPECS_BY_CHAR and SPECS_BY_CHAR[char].min_minor <= minor}
        self._ctx = Context(cache_keys=self._keys.get("c", ()), peer_minor=minor)
        self._header_keys = key_headers

    def preamble(self) -> bytes:
        """The VERSION line, the key header lines and `.` (§5.1 items 1–3)."""
        return version_line(self.minor) + header_block(self.minor, self._header_keys)

    def encode(self, item: Item) -> bytes:
        """One record line; a `Mail` gets the stream flag iff it has a body."""
        if isinstance(item, Marker):
            return b".\n"
        if isinstance(item, Done):
            return b"X\n"
        entry = FIELDS_BY_TYPE.get(type(item))
        if entry is None:
            raise LocalProtocolError(f"Cannot encode {type(item).__name__}")
        spec = SPECS_BY_CHAR[entry.char]
        keys = self._keys.get(entry.char)
        if keys is None:
            raise LocalProtocolError(f"{spec.name} is not part of protocol minor {self.minor}")
        values = self._values(entry, spec, item)
        body = escape.join_record([values.get(key) for key in keys])
        if not body and keys and keys[0] in spec.required:
            # A lone "" first field encodes to the bare item char, read back as NULL (§3.2).
            raise LocalProtocolError(f"{spec.name}: Missing required field {keys[0]}")
        return entry.char.encode() + body + b"\n"

    def _values(self, entry: ItemFields, spec: ItemSpec, item: Item) -> dict[str, bytes | None]:
        values: dict[str, bytes | None] = {}
        for field in entry.fields:
            try:
                values[field.key] = field.to_wire(getattr(item, field.attr), self._ctx)
            except FieldError as exc:
                raise LocalProtocolError(f"{spec.name}: {exc}") from None
        if isinstance(item, Mail):
            values["stream"] = b"" if item.body is not None else None
        missing = missing_required(spec.required, values)
        if missing is not None:
            raise LocalProtocolError(f"{spec.name}: Missing required field {missing}")
        return values


class _State(Enum):
    VERSION = "version not received"
    HEADERS = "handshake not received"
    RECORDS = "records"
    STREAM = "stream"
    DONE = "done"


class Decoder:
    """Parses the peer's byte stream into events (§3.2 decoding, §4.2, §5)."""

    def __init__(self, max_line_length: int = 0) -> None:
        self._max = max_line_length
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no LF
        self._eof = False
        self._state = _State.VERSION
        self._error: ProtocolError | None = None
        self._peer_minor: int | None = None
        self._peer_keys: dict[str, tuple[str, ...]] = {}
        self._ctx = Context(cache_keys=())
        self._unstuffer = DotUnstuffer()
        self._end_pending = False
        self._last_recv = "handshake"
        self._last_eol = False

    @property
    def peer_minor(self) -> int | None:
        """The peer's protocol minor, once its VERSION line was parsed."""
        return self._peer_minor

    @property
    def peer_key_headers(self) -> Mapping[str, tuple[str, ...]]:
        """The key names the peer announced per item char (after its header block)."""
        return self._peer_keys

    def feed(self, data: bytes) -> None:
        if self._eof:
            raise RuntimeError("Decoder.feed() after feed_eof()")
        if self._state is not _State.DONE:  # after `X` everything is ignored
            self._buf += data

    def feed_eof(self) -> None:
        self._eof = True

    def next_event(self) -> Event:
        """The next event, NEED_DATA, or an exception (raised again on every later call)."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except ProtocolError as exc:
            self._error = exc
            raise

    def _next(self) -> Event:
        while True:
            if self._state is _State.DONE:
                return Done()
            if self._state is _State.STREAM:
                return self._stream_event()
            line = self._next_line()
            if line is None:
                if self._eof:
                    raise self._eof_error()
                return NEED_DATA
            if self._state is _State.VERSION:
                self._version(line)
            elif self._state is _State.HEADERS:
                self._header_line(line)
            else:
                return self._record(line)

    def _last_received(self) -> str:
        return f"last recv={self._last_recv}{' (EOL)' if self._last_eol else ''}"

    def _eof_error(self) -> PeerClosedError:
        if self._state is not _State.RECORDS:
            return PeerClosedError(f"EOF ({self._state.value})")
        if self._buf:
            return PeerClosedError(f"EOF in the middle of a record ({self._last_received()})")
        return PeerClosedError(f"EOF ({self._last_received()})")

    def _next_line(self) -> bytes | None:
        """Pop one LF-terminated line (one CR before the LF removed, §3.1)."""
        buf = self._buf
        if self._state is _State.VERSION and not buf.startswith(_VERSION_PREFIX[:len(buf)]):
            raise RemoteProtocolError(_INCOMPATIBLE)
        index = buf.find(b"\n", self._scanned)
        if index < 0:
            self._scanned = len(buf)
            if self._max and len(buf) > self._max and buf[self._max:] != b"\r":
                raise RemoteProtocolError("line too long")
            return None
        end = index - 1 if index > 0 and buf[index - 1] == 0x0D else index
        if self._max and end > self._max:
            raise RemoteProtocolError("line too long")
        line = bytes(buf[:end])
        del buf[:index + 1]
        self._scanned = 0
        return line

    def _version(self, line: bytes) -> None:
        match = _VERSION.fullmatch(line)
        if match is None or int(match.group(1)) > U32:
            raise RemoteProtocolError(_INCOMPATIBLE)
        self._peer_minor = int(match.group(1))
        self._state = _State.HEADERS

    def _header_line(self, line: bytes) -> None:
        """One key header line, or the `.` ending the block (§5.3 receiver rules)."""
        minor = self._peer_minor or 0
        if line == b".":
            for spec in ITEM_SPECS:
                if spec.char not in self._peer_keys and minor >= spec.min_minor:
                    raise RemoteProtocolError(
                        f"Remote didn't handshake deserializer for {spec.name}")
            self._ctx = Context(cache_keys=self._peer_keys["c"], peer_minor=minor)
            self._state = _State.RECORDS
            return
        known = SPECS_BY_CHAR.get(chr(line[0])) if line else None
        if known is None:
            return  # unknown item: ignored for forward compatibility
        self._announce(known, tuple(to_str(k) for k in escape.split_tab_list(line[1:])))

    def _announce(self, spec: ItemSpec, keys: tuple[str, ...]) -> None:
        for key in spec.required:
            if key not in keys:
                raise RemoteProtocolError(f"Remote sent invalid handshake for {spec.name}: "
                                          f"Header missing required field {key}")
        self._peer_keys[spec.char] = keys

    def _record(self, line: bytes) -> Event:
        if line == b".":
            self._last_eol = True
            return END_OF_LIST
        if line.startswith(b"X"):  # `X` is done, whatever follows (§3.1)
            self._state = _State.DONE
            self._buf = bytearray()
            return Done()
        char = chr(line[0]) if line else ""
        spec = SPECS_BY_CHAR.get(char)
        if spec is None or char == "c":
            raise RemoteProtocolError(
                f"Received unexpected input {show(line[:1]) if line else '(empty line)'}")
        keys = self._peer_keys.get(char)
        if keys is None:
            raise RemoteProtocolError(f"Remote didn't handshake deserializer for {spec.name}")
        self._last_recv, self._last_eol = spec.name, False
        values = map_values(keys, escape.split_record(line[1:]))
        missing = missing_required(spec.required, values)
        if missing is not None:
            raise RemoteProtocolError(
                f"Invalid input to {spec.name}: Missing required field {missing}")
        item = self._build(FIELDS_BY_CHAR[char], spec, values)
        # Only M and A have a `stream` key; its presence means a stream follows (§4).
        if isinstance(item, Mail | MailboxAttribute) and values.get("stream") is not None:
            self._state = _State.STREAM
            self._unstuffer = DotUnstuffer()
            return StreamStart(item)
        return item

    def _build(self, entry: ItemFields, spec: ItemSpec,
               values: Mapping[str, bytes | None]) -> Item:
        kwargs: dict[str, Any] = {}
        for field in entry.fields:
            try:
                kwargs[field.attr] = field.from_wire(values.get(field.key), self._ctx)
            except FieldError as exc:
                raise RemoteProtocolError(f"{spec.name}: {exc}") from None
        if entry.char == "B" and self._ctx.peer_minor < MINOR_SAVE_GUIDS:
            # §5.2: before minor 2, GUID support implied save-GUID support.
            kwargs["have_save_guids"] = kwargs["have_save_guids"] or kwargs["have_guids"]
        return entry.build(kwargs)

    def _stream_event(self) -> Event:
        if self._end_pending:
            self._end_pending = False
            self._state = _State.RECORDS
            return StreamEnd()
        data, finished = self._unstuffer.step(self._buf)
        if finished:
            if not data:
                self._state = _State.RECORDS
                return StreamEnd()
            self._end_pending = True
        if data:
            return StreamData(data)
        if self._eof:
            raise PeerClosedError(f"EOF inside a stream ({self._last_received()})")
        return NEED_DATA
