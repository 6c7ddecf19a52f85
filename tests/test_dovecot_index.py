"""Dovecot's binary index (storage/dovecot_index): the fixtures Dovecot wrote, logs it
writes live, logs pydsync writes that Dovecot must read without complaint, and damage."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pydsync_server.storage.base import MessageChange
from pydsync_server.storage.dovecot_index import (
    DBOX_HDR,
    MODSEQ,
    AttributeChange,
    IndexPaths,
    LogFormatError,
    LogHeader,
    Transaction,
    create_log,
    locked_log,
    new_log_header,
    read_index,
)
from pydsync_server.storage.dovecot_index.records import decode_size, encode_size

FIXTURES = Path(__file__).parent / "data" / "fixtures" / "dovecot-2.3.19"
SEEN, ANSWERED, FLAGGED, DRAFT = 0x08, 0x01, 0x02, 0x10


def box_dir(store: str, box: str) -> IndexPaths:
    return IndexPaths(FIXTURES / store / store / "mailboxes" / box / "dbox-Mails")


# -- what Dovecot wrote ----------------------------------------------------------------


def test_sdbox_fixture_matches_doveadm() -> None:
    # details.txt: INBOX uidvalidity=1795913354 uidnext=4 highestmodseq=7 guid=ff6a...
    view = read_index(box_dir("sdbox", "INBOX"))
    st = view.state
    assert (st.uid_validity, st.next_uid, st.modseq, view.problem) == (1795913354, 4, 7, None)
    hdr = st.ext_header("dbox-hdr")
    assert hdr is not None and hdr[4:20].hex() == "ff6a793388760b6b0707000083ecc375"
    got = {m.uid: (m.flags, m.keywords, st.message_modseq(m)) for m in st.messages.values()}
    assert got == {
        1: (SEEN, frozenset(), 7),
        2: (ANSWERED | FLAGGED, frozenset({"todo"}), 7),
        3: (0, frozenset(), 7),
    }
    work = read_index(box_dir("sdbox", "Work")).state
    assert (work.uid_validity, work.modseq) == (1795913352, 4)
    assert [(m.flags, m.keywords) for m in work.messages.values()] == [
        (DRAFT, frozenset({"$Label1"}))
    ]
    empty = read_index(box_dir("sdbox", "Work/Projects")).state
    assert (empty.next_uid, empty.messages, empty.modseq) == (1, {}, 1)


def test_mdbox_fixture_and_map() -> None:
    st = read_index(box_dir("mdbox", "INBOX")).state
    hdr = st.ext_header("mdbox-hdr")
    assert hdr is not None and struct.unpack_from("<I", hdr)[0] == 1795913349
    first = st.messages[1]
    assert st.record_data(first, "mdbox") == struct.pack("<II", 1, 0x6B0B7685)
    assert st.record_data(first, "guid") == bytes.fromhex("3658981a85760b6b2e06000083ecc375")
    storage = FIXTURES / "mdbox" / "mdbox" / "storage"
    the_map = read_index(IndexPaths(storage, "dovecot.map.index")).state
    assert the_map.uid_validity == 1795913349
    assert the_map.ext_header("map") == struct.pack("<II", 1, 0)
    records = {
        uid: struct.unpack("<III", the_map.record_data(m, "map") or b"")
        for uid, m in the_map.messages.items()
    }
    assert records == {1: (1, 16, 279), 2: (1, 295, 296), 3: (1, 591, 251), 4: (1, 842, 248)}
    assert {the_map.record_data(m, "ref") for m in the_map.messages.values()} == {b"\x01\x00"}


def test_missing_index_is_empty(tmp_path: Path) -> None:
    view = read_index(IndexPaths(tmp_path))
    assert not view.exists and view.state.messages == {}


# -- writing and reading back ------------------------------------------------------------


def new_index(directory: Path, uid_validity: int = 1234, guid: bytes = b"\x11" * 16) -> IndexPaths:
    """A new log as the sdbox driver writes it (§4.4)."""
    paths = IndexPaths(directory)
    t = Transaction()
    t.ext_intro(DBOX_HDR)
    t.ext_hdr_update(0, struct.pack("<I16sB3x", 0, guid, 0))
    t.ext_intro(MODSEQ)
    t.set_uid_validity(uid_validity)
    assert create_log(paths.log, new_log_header(1_700_000_000), t)
    return paths


def commit(paths: IndexPaths, t: Transaction) -> None:
    with locked_log(paths.log) as locked:
        locked.append(t)


def test_round_trip_of_messages_and_modseqs(tmp_path: Path) -> None:
    paths = new_index(tmp_path)
    t = Transaction(sync=True)
    t.append([(1, SEEN), (2, 0), (5, FLAGGED)])
    t.keyword_update("Work", True, [2, 5])
    commit(paths, t)
    st = read_index(paths).state
    assert (st.uid_validity, st.next_uid) == (1234, 6)
    assert {u: (m.flags, m.keywords) for u, m in st.messages.items()} == {
        1: (SEEN, frozenset()),
        2: (0, frozenset({"Work"})),
        5: (FLAGGED, frozenset({"Work"})),
    }
    # append +1 (2), keyword update +1 (3); the appended-only message keeps 2
    assert [st.message_modseq(m) for m in st.messages.values()] == [2, 3, 3] and st.modseq == 3
    assert st.changes == []  # dsync's own writes are not local changes
    client = Transaction()  # an IMAP client's changes: reported
    client.flag_update(1, 1, DRAFT, SEEN)
    client.keyword_update("Work", False, [2])
    client.expunge_guid([(5, b"\x55" * 16)])
    commit(paths, client)
    st = read_index(paths).state
    assert sorted(st.messages) == [1, 2] and st.messages[1].flags == DRAFT
    assert st.changes == [
        MessageChange(1, 4, add_flags=DRAFT, remove_flags=SEEN),
        MessageChange(2, 5, keyword_ops=("-Work",)),
        MessageChange(5, 6, expunged=True, guid128=b"\x55" * 16),
    ]


def test_header_raises_and_modseq_updates(tmp_path: Path) -> None:
    paths = new_index(tmp_path)
    t = Transaction(sync=True)
    t.append([(1, 0)])
    t.set_next_uid(40)
    t.set_first_recent_uid(7)
    t.modseq_update([(0, 500), (1, 300)])
    commit(paths, t)
    t = Transaction(sync=True)
    t.set_next_uid(10)  # smaller: ignored, as Dovecot does
    commit(paths, t)
    st = read_index(paths).state
    assert (st.next_uid, st.first_recent_uid, st.modseq) == (40, 7, 500)
    assert st.message_modseq(st.messages[1]) == 300


def test_attribute_stamps(tmp_path: Path) -> None:
    paths = new_index(tmp_path)
    t = Transaction(sync=True)
    t.attribute_update(
        [AttributeChange(True, "p", "comment", 111, 5), AttributeChange(False, "s", "x", 222)]
    )
    commit(paths, t)
    st = read_index(paths).state
    assert {k: (a.set, a.timestamp, a.modseq, a.sync) for k, a in st.attributes.items()} == {
        ("p", "comment"): (True, 111, 2, True),
        ("s", "x"): (False, 222, 2, True),
    }


def test_size_encoding() -> None:
    assert encode_size(12) == bytes.fromhex("80808083") and decode_size(b"\x80\x80\x80\x86") == 24
    for size in (8, 12, 4096, 1 << 20, (1 << 30) - 4):
        assert decode_size(encode_size(size)) == size
    assert decode_size(b"\x00\x00\x00\x00") == 0 and decode_size(b"\x80\x80\x00\x83") == 0


def _try_lock(path: str, queue: multiprocessing.Queue[bool]) -> None:
    import fcntl

    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        queue.put(True)
    except OSError:
        queue.put(False)


def test_log_is_locked_while_writing(tmp_path: Path) -> None:
    paths = new_index(tmp_path)
    ctx = multiprocessing.get_context("fork")
    for expected in (False, True):
        queue: multiprocessing.Queue[bool] = ctx.Queue()
        if expected:
            proc = ctx.Process(target=_try_lock, args=(str(paths.log), queue))
            proc.start()
        else:
            with locked_log(paths.log):
                proc = ctx.Process(target=_try_lock, args=(str(paths.log), queue))
                proc.start()
                proc.join()
        proc.join()
        assert queue.get(timeout=5) is expected


def test_create_log_does_not_replace_an_existing_one(tmp_path: Path) -> None:
    paths = new_index(tmp_path)
    before = paths.log.read_bytes()
    assert not create_log(paths.log, new_log_header(5), Transaction())
    assert paths.log.read_bytes() == before and not list(tmp_path.glob("*.newlock"))


# -- damage ----------------------------------------------------------------------------


@pytest.fixture
def written(tmp_path: Path) -> Iterator[IndexPaths]:
    paths = new_index(tmp_path)
    for uid in (1, 2, 3):
        t = Transaction(sync=True)
        t.append([(uid, SEEN)])
        commit(paths, t)
    yield paths


def _record_offsets(paths: IndexPaths) -> list[int]:
    from pydsync_server.storage.dovecot_index import LogFile

    return [rec.offset for rec in LogFile.parse(paths.log.read_bytes()).records()]


def test_wrong_magic_is_a_clear_error(written: IndexPaths) -> None:
    data = bytearray(written.log.read_bytes())
    data[0] = 7
    written.log.write_bytes(bytes(data))
    with pytest.raises(LogFormatError, match="not a transaction log"):
        read_index(written)


def test_truncated_log_keeps_the_complete_records(written: IndexPaths) -> None:
    data = written.log.read_bytes()
    written.log.write_bytes(data[:-5])  # the last transaction is cut
    view = read_index(written)
    assert sorted(view.state.messages) == [1, 2] and view.problem is None
    t = Transaction(sync=True)
    t.append([(3, 0)])
    commit(written, t)  # the writer cuts the partial record before appending
    assert sorted(read_index(written).state.messages) == [1, 2, 3]


def test_broken_record_stops_the_replay(written: IndexPaths) -> None:
    data = bytearray(written.log.read_bytes())
    appends = [
        off for off in _record_offsets(written) if struct.unpack_from("<I", data, off + 4)[0] & 2
    ]
    struct.pack_into("<I", data, appends[1] + 4, 0x0FFF0000)  # no such record type
    written.log.write_bytes(bytes(data))
    view = read_index(written)
    assert sorted(view.state.messages) == [1]
    assert view.problem is not None and "unknown record type" in view.problem


def test_broken_header_and_garbage(tmp_path: Path) -> None:
    paths = IndexPaths(tmp_path)
    paths.log.write_bytes(b"\x01\x03")
    with pytest.raises(LogFormatError, match="too small"):
        read_index(paths)
    paths.log.write_bytes(LogHeader(indexid=0, file_seq=1).encode())
    with pytest.raises(LogFormatError, match="corrupted"):
        read_index(paths)
    paths.index.write_bytes(b"garbage" * 20)
    paths.log.write_bytes(LogHeader(indexid=5, file_seq=3, prev_file_seq=2).encode())
    with pytest.raises(LogFormatError, match="not a Dovecot index"):
        read_index(paths)


def test_history_without_snapshot_is_reported(tmp_path: Path) -> None:
    paths = IndexPaths(tmp_path)
    paths.log.write_bytes(LogHeader(indexid=5, file_seq=3, prev_file_seq=2).encode())
    with pytest.raises(LogFormatError, match="force-resync"):
        read_index(paths)


def test_fixture_copy_is_independent(tmp_path: Path) -> None:
    """Reading never writes: the fixture tree stays as Dovecot left it."""
    src = box_dir("sdbox", "INBOX").directory
    shutil.copytree(src, tmp_path / "box")
    before = sorted(os.listdir(tmp_path / "box"))
    read_index(IndexPaths(tmp_path / "box"))
    assert sorted(os.listdir(tmp_path / "box")) == before


# -- a model of what the log says ------------------------------------------------------

KWS = ["a", "b", "$Label1", "Été"]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 0x1F)),
        st.tuples(st.just("flags"), st.integers(0, 9), st.integers(0, 0x1F), st.integers(0, 0x1F)),
        st.tuples(st.just("kw"), st.integers(0, 9), st.sampled_from(KWS), st.booleans()),
        st.tuples(st.just("expunge"), st.integers(0, 9)),
        st.tuples(st.just("modseq"), st.integers(0, 9), st.integers(1, 1 << 40)),
    ),
    max_size=25,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_replay_matches_a_model(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple]) -> None:
    """Any sequence of client transactions reads back as a simple model says: flags,
    keywords, next_uid, and modseqs that only grow (§6.5 step 4)."""
    paths = new_index(tmp_path_factory.mktemp("idx"))
    model: dict[int, tuple[int, frozenset[str]]] = {}
    next_uid, last_highest = 1, 0
    for op in ops:
        t = Transaction()
        uids = sorted(model)
        if op[0] == "append":
            t.append([(next_uid, op[1])])
            model[next_uid] = (op[1], frozenset())
            next_uid += 1
        elif uids and op[0] == "flags":
            uid = uids[op[1] % len(uids)]
            t.flag_update(uid, uid, op[2], op[3])
            flags, kws = model[uid]
            model[uid] = ((flags & ~op[3]) | op[2], kws)
        elif uids and op[0] == "kw":
            uid = uids[op[1] % len(uids)]
            t.keyword_update(op[2], op[3], [uid])
            flags, kws = model[uid]
            model[uid] = (flags, kws | {op[2]} if op[3] else kws - {op[2]})
        elif uids and op[0] == "expunge":
            uid = uids[op[1] % len(uids)]
            t.expunge_guid([(uid, bytes(16))])
            del model[uid]
        elif uids and op[0] == "modseq":
            t.modseq_update([(uids[op[1] % len(uids)], op[2])])
        if t:
            commit(paths, t)
        state = read_index(paths).state
        assert {u: (m.flags, m.keywords) for u, m in state.messages.items()} == model
        assert state.next_uid == next_uid and state.modseq >= last_highest
        assert all(state.message_modseq(m) <= state.modseq for m in state.messages.values())
        last_highest = state.modseq
