"""doveadm's output formatters (`-f flow|tab|pager|json`), byte for byte.

A formatter gets a list of headers, then values in header order; a value is either
a string or a stream of byte chunks (message parts). The byte layouts, including
their quirks, were observed on doveadm 2.3.19:

* flow: `key=value` joined by spaces, one line per record; a hidden-title header
  prints the bare value.
* tab: a title line, then values joined by tabs. A stream prints a tab before every
  non-empty chunk (8 KiB reads, see `chunked`) and one more at its end, so
  `uid body` gives `4\\tbody\\n\\t\\n`.
* pager: `key: value` lines; a stream prints `key:\\n` and its bytes unchanged;
  records are separated by `\\f\\n`, written only before a non-stream first value.
* json: `[{"key":"value",...},...]`, all values strings, no final newline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import UsageError

STREAM_CHUNK = 8192  # doveadm's read size when printing a mail stream


@dataclass(frozen=True)
class Header:
    key: str
    hide_title: bool = False


def _bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def chunked(data: bytes, offset: int = 0) -> list[bytes]:
    """`data` in the pieces doveadm prints a stream in: reads of the message file
    in STREAM_CHUNK blocks, so a part starting at `offset` in the file (the body
    after its header) first gets the rest of that block. (With the header size in
    its cache Dovecot seeks instead, and the body's first piece is a whole block;
    pydsync has no such cache and matches a freshly indexed store.)"""
    pieces = []
    start = 0
    size = STREAM_CHUNK - offset % STREAM_CHUNK
    while start < len(data):
        pieces.append(data[start : start + size])
        start += size
        size = STREAM_CHUNK
    return pieces


class Formatter(ABC):
    """Write records to `out`; call `value`/`stream` once per header, in order."""

    def __init__(self, out: BinaryIO, headers: list[Header]) -> None:
        self.out = out
        self.headers = headers
        self.index = 0  # header of the next value
        self.records = 0  # records started so far

    def value(self, text: str) -> None:
        self._begin_value()
        self._value(self.headers[self.index], _bytes(text))
        self._end_value()

    def stream(self, chunks: Iterable[bytes]) -> None:
        self._begin_value()
        self._stream(self.headers[self.index], [c for c in chunks if c])
        self._end_value()

    def finish(self) -> None:  # noqa: B027 - only json closes anything
        """After the last record."""

    def _begin_value(self) -> None:
        if self.index == 0:
            self.records += 1

    def _end_value(self) -> None:
        self.index += 1
        if self.index == len(self.headers):
            self.index = 0
            self._end_record()

    @abstractmethod
    def _value(self, header: Header, value: bytes) -> None: ...

    @abstractmethod
    def _stream(self, header: Header, chunks: list[bytes]) -> None: ...

    def _end_record(self) -> None:  # noqa: B027 - most formats need nothing here
        pass


class FlowFormatter(Formatter):
    def _prefix(self, header: Header) -> bytes:
        sep = b" " if self.index > 0 else b""
        return sep if header.hide_title else sep + _bytes(header.key) + b"="

    def _value(self, header: Header, value: bytes) -> None:
        self.out.write(self._prefix(header) + value)

    def _stream(self, header: Header, chunks: list[bytes]) -> None:
        self.out.write(self._prefix(header) + b"".join(chunks))

    def _end_record(self) -> None:
        self.out.write(b"\n")


class TabFormatter(Formatter):
    def __init__(self, out: BinaryIO, headers: list[Header]) -> None:
        super().__init__(out, headers)
        out.write(b"\t".join(_bytes(h.key) for h in headers) + b"\n")

    def _sep(self) -> bytes:
        return b"\t" if self.index > 0 else b""

    def _value(self, header: Header, value: bytes) -> None:
        self.out.write(self._sep() + value)

    def _stream(self, header: Header, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.out.write(self._sep() + chunk)
        self.out.write(self._sep())

    def _end_record(self) -> None:
        self.out.write(b"\n")


class PagerFormatter(Formatter):
    def _value(self, header: Header, value: bytes) -> None:
        if self.index == 0 and self.records > 1:
            self.out.write(b"\f\n")
        title = b"" if header.hide_title else _bytes(header.key) + b": "
        self.out.write(title + value + b"\n")

    def _stream(self, header: Header, chunks: list[bytes]) -> None:
        title = b"" if header.hide_title else _bytes(header.key) + b":\n"
        self.out.write(title + b"".join(chunks))


_JSON_ESCAPES = {
    0x22: b'\\"',
    0x5C: b"\\\\",
    0x08: b"\\b",
    0x0C: b"\\f",
    0x0A: b"\\n",
    0x0D: b"\\r",
    0x09: b"\\t",
}


def json_escape(value: bytes) -> bytes:
    """Dovecot's JSON string escaping: control characters escaped, invalid UTF-8 as
    U+FFFD, everything else (including DEL and `/`) as is."""
    text = value.decode("utf-8", "replace")
    out = bytearray()
    for char in text:
        code = ord(char)
        if code in _JSON_ESCAPES:
            out += _JSON_ESCAPES[code]
        elif code < 0x20:
            out += b"\\u%04x" % code
        else:
            out += char.encode("utf-8")
    return bytes(out)


class JsonFormatter(Formatter):
    def __init__(self, out: BinaryIO, headers: list[Header]) -> None:
        super().__init__(out, headers)
        out.write(b"[")

    def _open(self, header: Header) -> None:
        if self.index == 0:
            self.out.write(b"{" if self.records == 1 else b",{")
        else:
            self.out.write(b",")
        self.out.write(b'"' + json_escape(_bytes(header.key)) + b'":"')

    def _value(self, header: Header, value: bytes) -> None:
        self._open(header)
        self.out.write(json_escape(value) + b'"')

    def _stream(self, header: Header, chunks: list[bytes]) -> None:
        self._open(header)
        self.out.write(json_escape(b"".join(chunks)) + b'"')

    def _end_record(self) -> None:
        self.out.write(b"}")

    def finish(self) -> None:
        self.out.write(b"]")


FORMATTERS: dict[str, type[Formatter]] = {
    "flow": FlowFormatter,
    "tab": TabFormatter,
    "pager": PagerFormatter,
    "json": JsonFormatter,
}


def make_formatter(name: str, out: BinaryIO, headers: list[Header]) -> Formatter:
    cls = FORMATTERS.get(name)
    if cls is None:
        raise UsageError(f"Unknown formatter: {name} (known: {', '.join(FORMATTERS)})")
    return cls(out, headers)
