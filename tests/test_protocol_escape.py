"""Field-level escaping and list rules (dsync-protocol.md §3.2–§3.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pydsync_server.protocol import escape


@pytest.mark.parametrize(("raw", "wire"), [
    (b"plain", b"plain"),
    (b"\x01", b"\x011"),
    (b"a\tb", b"a\x01tb"),
    (b"a\rb\nc", b"a\x01rb\x01nc"),
    (b"\x02x", b"\x02x"),  # \x02 is not tab-escaped
])
def test_tab_escape_table(raw: bytes, wire: bytes) -> None:
    assert escape.tab_escape(raw) == wire
    assert escape.tab_unescape(wire) == raw


@pytest.mark.parametrize(("wire", "raw"), [
    (b"a\x010b", b"a\x00b"),  # decoder-only NUL escape
    (b"\x01x", b"x"),  # unknown escape: the byte itself
    (b"abc\x01", b"abc"),  # lone escape at the end is dropped
])
def test_tab_unescape_leniency(wire: bytes, raw: bytes) -> None:
    assert escape.tab_unescape(wire) == raw


@pytest.mark.parametrize(("value", "wire"), [
    (None, b"\x02"),
    (b"", b""),
    (b"\x02abc", b"\x02\x02abc"),
    (b"\x02", b"\x02\x02"),
])
def test_null_encoding(value: bytes | None, wire: bytes) -> None:
    assert escape.encode_value(value) == wire
    assert escape.decode_value(wire) == value


def test_record_drops_trailing_nulls_only() -> None:
    assert escape.join_record([b"vm", None, b"", None, None]) == b"vm\t\x02\t"
    assert escape.join_record([None, None]) == b""
    assert escape.split_record(b"") == []
    assert escape.split_record(b"vm\t\x02\t") == [b"vm", None, b""]


def test_slave_handshake_example() -> None:
    # §3.4: hostname, 22 NULLs, hashed_headers = "".
    wire = b"vm" + b"\t\x02" * 22 + b"\t"
    values = [b"vm"] + [None] * 22 + [b"", None]
    assert escape.join_record(values) == wire
    assert escape.split_record(wire) == values[:-1]


def test_nested_lists_double_escape() -> None:
    assert escape.tab_escape(escape.join_tab_list([b"Work", b"Sub2"])) == b"Work\x01tSub2"
    assert escape.tab_escape(escape.join_tab_list([b"a\tb"])) == b"a\x011tb"
    assert escape.join_terminated_tab_list([b"Date", b"Message-ID"]) == b"Date\tMessage-ID\t"
    assert escape.split_terminated_tab_list(b"Date\tMessage-ID\t") == [b"Date", b"Message-ID"]
    assert escape.split_terminated_tab_list(b"") == []
    assert escape.split_tab_list(b"") == []
    assert escape.split_plain_list(b"", b" ") == []
    assert escape.split_plain_list(b"a\n", b"\n") == [b"a", b""]


@given(st.binary())
def test_escape_roundtrip(raw: bytes) -> None:
    wire = escape.tab_escape(raw)
    assert not any(byte in wire for byte in b"\x00\t\r\n")
    assert escape.tab_unescape(wire) == raw


@given(st.lists(st.none() | st.binary()))
def test_record_roundtrip(values: list[bytes | None]) -> None:
    while values and values[-1] is None:
        values.pop()
    body = escape.join_record(values)
    assert b"\n" not in body
    if body:
        assert escape.split_record(body) == values
    else:  # §3.2 quirk: a lone empty first field reads back as zero fields
        assert values in ([], [b""])


@given(st.lists(st.binary(), min_size=1).filter(lambda elements: elements != [b""]))
def test_tab_list_roundtrip(elements: list[bytes]) -> None:
    assert escape.split_tab_list(escape.join_tab_list(elements)) == elements
    assert escape.split_terminated_tab_list(escape.join_terminated_tab_list(elements)) == elements
