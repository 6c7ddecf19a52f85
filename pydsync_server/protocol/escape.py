"""Byte-level field encoding of dsync records: tab escaping, NULL, nested lists.

Pure functions over `bytes` (dsync-protocol.md §3.2–§3.5); the item codec builds on them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

ESCAPE = b"\x01"
NULL = b"\x02"
TAB = b"\t"
LF = b"\n"

# §3.3: the byte after \x01 and what it stands for; any other byte stands for itself.
_UNESCAPES = {ord("0"): b"\x00", ord("1"): b"\x01", ord("t"): b"\t", ord("r"): b"\r",
              ord("n"): b"\n"}
_ESCAPED = re.compile(rb"\x01(.?)", re.DOTALL)


def _unescape_match(match: re.Match[bytes]) -> bytes:
    following = match.group(1)
    if not following:  # a lone \x01 at the end of the field is dropped
        return b""
    return _UNESCAPES.get(following[0], following)


def tab_escape(raw: bytes) -> bytes:
    """Escape \\x01, TAB, CR, LF (and NUL, which Dovecot never has in a value)."""
    if not any(byte in raw for byte in b"\x00\x01\t\r\n"):
        return raw
    return (raw.replace(b"\x01", b"\x011").replace(b"\t", b"\x01t")
            .replace(b"\r", b"\x01r").replace(b"\n", b"\x01n").replace(b"\x00", b"\x010"))


def tab_unescape(escaped: bytes) -> bytes:
    """Undo `tab_escape` with Dovecot's leniency for unknown escapes (§3.3)."""
    if ESCAPE not in escaped:
        return escaped
    return _ESCAPED.sub(_unescape_match, escaped)


def encode_value(value: bytes | None) -> bytes:
    """One field on the wire: NULL as \\x02, a leading \\x02 doubled, then escaped (§3.4)."""
    if value is None:
        return NULL
    if value.startswith(NULL):
        return NULL + tab_escape(value)
    return tab_escape(value)


def decode_value(field: bytes) -> bytes | None:
    """Inverse of `encode_value`: unescape first, then interpret \\x02 (§3.2 step 3)."""
    value = tab_unescape(field)
    if value.startswith(NULL):
        return None if len(value) == 1 else value[1:]
    return value


def join_record(values: Sequence[bytes | None]) -> bytes:
    """Join field values into a record body (no item char, no LF).

    Trailing NULLs are dropped, as Dovecot only grows its value array up to the
    last key that was set (§3.2 step 2).
    """
    end = len(values)
    while end > 0 and values[end - 1] is None:
        end -= 1
    return TAB.join(encode_value(value) for value in values[:end])


def split_record(body: bytes) -> list[bytes | None]:
    """Split a record body into field values; an empty body has zero fields."""
    if not body:
        return []
    return [decode_value(field) for field in body.split(TAB)]


def join_tab_list(elements: Iterable[bytes]) -> bytes:
    """TAB-separated list of tab-escaped elements (N.name, C.keyword_changes, …)."""
    return TAB.join(tab_escape(element) for element in elements)


def split_tab_list(value: bytes) -> list[bytes]:
    """Inverse of `join_tab_list`; an empty string is an empty list (§3.5)."""
    if not value:
        return []
    return [tab_unescape(element) for element in value.split(TAB)]


def join_terminated_tab_list(elements: Iterable[bytes]) -> bytes:
    """Like `join_tab_list` but every element is followed by TAB (H.hashed_headers)."""
    return b"".join(tab_escape(element) + TAB for element in elements)


def split_terminated_tab_list(value: bytes) -> list[bytes]:
    """Inverse of `join_terminated_tab_list`: the empty element after the last TAB goes."""
    elements = split_tab_list(value)
    if elements and value.endswith(TAB):
        elements.pop()
    return elements


def split_plain_list(value: bytes, separator: bytes) -> list[bytes]:
    """Split an unescaped LF- or space-separated list; "" is the empty list (§3.5)."""
    if not value:
        return []
    return value.split(separator)
