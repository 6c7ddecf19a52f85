"""dbox file format (storage-formats.md §2): Dovecot-written fixtures, round trips,
and damaged files (truncation, wrong magic) that keep every readable message."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pydsync_server.errors import StorageError
from pydsync_server.storage import dbox_file as dbox

FIXTURES = Path(__file__).parent / "data" / "fixtures" / "dovecot-2.3.19"
M1 = FIXTURES / "mdbox" / "mdbox" / "storage" / "m.1"
INPUT = FIXTURES / "input"


def test_fixture_m1_matches_spec_worked_example() -> None:
    walk = dbox.read_file(M1)
    assert walk.ok and walk.end == M1.stat().st_size
    assert walk.header == dbox.FileHeader(2, 30, 1795913349, 16)
    # §3.3: the map of this fixture holds exactly these (offset, size) pairs.
    assert [(r.offset, r.size) for r in walk.records] == [
        (16, 279), (295, 296), (591, 251), (842, 248),
    ]  # fmt: skip
    first = walk.records[0].metadata
    assert first == dbox.Metadata(
        guid="3658981a85760b6b2e06000083ecc375",
        received_date=0x6B0B7685,
        virtual_size=197,
        orig_mailbox="INBOX",
    )
    data = M1.read_bytes()
    bodies = [data[r.body_offset : r.body_offset + r.body_size] for r in walk.records]
    assert bodies == [(INPUT / f"{i}.eml").read_bytes() for i in (1, 2, 3, 4)]
    assert [r.metadata.orig_mailbox for r in walk.records] == ["INBOX"] * 3 + ["Work"]


def test_reencoding_fixture_is_byte_identical() -> None:
    data = M1.read_bytes()
    walk = dbox.walk(data)
    messages = [(data[r.body_offset : r.body_offset + r.body_size], r.metadata)
                for r in walk.records]  # fmt: skip
    assert dbox.encode_file(walk.header.create_stamp, messages) == data


def test_sdbox_fixture_files() -> None:
    files = sorted((FIXTURES / "sdbox" / "sdbox" / "mailboxes").glob("*/dbox-Mails/u.*"))
    assert len(files) == 4
    for path in files:
        walk = dbox.read_file(path)
        assert walk.ok and len(walk.records) == 1
        meta = walk.records[0].metadata
        assert len(meta.guid) == 32 and meta.orig_mailbox == ""  # sdbox has no B
        with open(path, "rb") as f:
            record, body = dbox.read_message(f, walk.header.size)
        assert record == walk.records[0]
        assert dbox.virtual_size(body) == meta.virtual_size


def test_read_message_with_map_size_checks_the_size() -> None:
    walk = dbox.read_file(M1)
    with open(M1, "rb") as f:
        record, body = dbox.read_message(f, 295, 296)
        assert record == walk.records[1] and body == (INPUT / "2.eml").read_bytes()
        with pytest.raises(dbox.DboxCorruptError, match="expected 300"):
            dbox.read_message(f, 295, 300)
        with pytest.raises(dbox.DboxCorruptError, match="magic"):
            dbox.read_message(f, 296, 296)
        # A map pointing past the end of the file (§3.4 rule 4).
        with pytest.raises(dbox.DboxCorruptError, match="truncated"):
            dbox.read_message(f, 1090, 248)


def test_metadata_write_order_and_unknown_keys() -> None:
    meta = dbox.Metadata(
        guid="g1", received_date=0x10, virtual_size=0x20, physical_size=0x30,
        pop3_uidl="u 1", pop3_order=12, orig_mailbox="&AMk-t&AOk-/Sub", ext_refs="1 2 - a/b",
        extra=(("Q", "kept"),),
    )  # fmt: skip
    raw = meta.encode()
    assert raw == (
        b"\n\x01\x03\nZ30\nR10\nV20\nPu 1\nO12\nGg1\nB&AMk-t&AOk-/Sub\nX1 2 - a/b\nQkept\n\n"
    )
    parsed, end = dbox.parse_metadata(raw + b"tail", 0)
    assert parsed == meta and end == len(raw)


def test_metadata_rejects_line_breaks_but_drops_a_bad_b() -> None:
    with pytest.raises(StorageError):
        dbox.Metadata(guid="a\nb").encode()
    assert b"B" not in dbox.Metadata(guid="g", orig_mailbox="x\ny").encode()


def test_v1_padding_line_ends_metadata() -> None:
    block = b"\n\x01\x03\nGabc\n    \nrest"
    meta, end = dbox.parse_metadata(block, 0)
    assert meta.guid == "abc" and block[end:] == b"rest"


def test_bigger_message_header_is_skipped() -> None:
    body = b"Subject: x\n\nhi\n"
    hdr = dbox.encode_msg_header(len(body))[:-1] + b"     \n"  # M=35, last byte LF
    data = b"2 M23 C1\n" + hdr + body + dbox.Metadata(guid="g").encode()
    walk = dbox.walk(data)
    assert walk.ok and not walk.header.appendable
    assert walk.records[0].body_size == len(body) and walk.records[0].metadata.guid == "g"


def _file(n: int) -> tuple[bytes, list[bytes]]:
    bodies = [b"Subject: m%d\n\nbody %d\n" % (i, i) for i in range(n)]
    data = dbox.encode_file(7, [(b, dbox.Metadata(guid=f"g{i}")) for i, b in enumerate(bodies)])
    return data, bodies


def test_truncated_file_keeps_complete_messages() -> None:
    data, _ = _file(3)
    full = dbox.walk(data)
    for cut in range(full.records[2].offset + 1, len(data)):
        walk = dbox.walk(data[:cut])
        assert [r.metadata.guid for r in walk.records] == ["g0", "g1"]
        assert len(walk.errors) == 1 and walk.end == full.records[2].offset
        assert "truncated" in str(walk.errors[0]) or "magic" in str(walk.errors[0])


def test_wrong_magic_stops_walk_and_recover_resumes() -> None:
    data, _ = _file(3)
    second = dbox.walk(data).records[1].offset
    broken = data[:second] + b"\x09" + data[second + 1 :]
    walk = dbox.walk(broken, path="m.9")
    assert [r.metadata.guid for r in walk.records] == ["g0"]
    assert walk.errors[0].offset == second and "m.9" in str(walk.errors[0])
    recovered = dbox.walk(broken, recover=True)
    assert [r.metadata.guid for r in recovered.records] == ["g0", "g2"]
    assert recovered.end == second  # appending must not go after damage


def test_garbage_after_last_message_is_an_error() -> None:
    data, _ = _file(2)
    walk = dbox.walk(data + b"junk")
    assert len(walk.records) == 2 and not walk.ok and walk.end == len(data)


@pytest.mark.parametrize(
    "head", [b"", b"2 C1\n", b"3 M1e\n", b"2 M1e", b"2 Mzz\n", b"2 M10\n", b"x" * 2000]
)
def test_bad_file_header(head: bytes) -> None:
    walk = dbox.walk(head + dbox.encode_record(b"x\n", dbox.Metadata(guid="g")))
    assert walk.records == () and isinstance(walk.errors[0], dbox.DboxCorruptError)


def test_read_file_missing_is_notfound(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        dbox.read_file(tmp_path / "m.1")
    assert info.value.mail_error.name == "NOTFOUND"


def test_write_new_file_is_atomic_and_readable(tmp_path: Path) -> None:
    data, bodies = _file(2)
    dbox.write_new_file(tmp_path / "u.1", data, hostname="host/x")
    assert os.listdir(tmp_path) == ["u.1"]
    assert dbox.read_file(tmp_path / "u.1").ok
    assert dbox.temp_name("h", 12.5).startswith(".temp.12.P")


def test_line_end_helpers() -> None:
    assert dbox.to_lf(b"a\r\nb\rc\n") == b"a\nb\rc\n"
    assert dbox.virtual_size(b"a\nb\r\n") == 6
    assert dbox.virtual_size(b"\r\n\n\r") == 5
    # A body read in pieces: a CR at the end of one piece pairs with an LF opening the next.
    assert dbox.virtual_size_part(b"a\r", False) + dbox.virtual_size_part(b"\nb\n", True) == 6
    with pytest.raises(StorageError):
        dbox.Metadata(guid="\ud800").encode()


_CHARS = st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",))
_meta = st.builds(
    dbox.Metadata,
    guid=st.text(_CHARS, min_size=1, max_size=40),
    received_date=st.none() | st.integers(0, 2**32),
    virtual_size=st.none() | st.integers(0, 2**40),
    pop3_uidl=st.text(_CHARS, max_size=10),
    pop3_order=st.integers(0, 1000),
    orig_mailbox=st.text(_CHARS, max_size=10),
)


@given(st.lists(st.tuples(st.binary(max_size=300), _meta), max_size=5), st.integers(0, 2**32))
def test_roundtrip(messages: list[tuple[bytes, dbox.Metadata]], stamp: int) -> None:
    data = dbox.encode_file(stamp, messages)
    walk = dbox.walk(data)
    assert walk.ok and walk.end == len(data) and walk.header.create_stamp == stamp
    got = [(data[r.body_offset : r.body_offset + r.body_size], r.metadata) for r in walk.records]
    assert got == messages
    for record in walk.records:
        f = io.BytesIO(data)
        assert dbox.read_message(f, record.offset)[0] == record
        assert dbox.read_message(f, record.offset, record.size)[0] == record


@given(st.binary(max_size=400), st.booleans())
def test_walk_never_raises_on_garbage(tail: bytes, recover: bool) -> None:
    data, _ = _file(1)
    walk = dbox.walk(data + tail, recover=recover)
    assert walk.records[0].metadata.guid == "g0"
    assert walk.end <= len(data) + len(tail)
