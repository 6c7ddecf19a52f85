"""mdbox specifics (storage-formats.md §3): the Dovecot-written fixture, m.N rotation,
one stored copy per GUID with refcounts, alt storage, purge, force-resync, and damaged
files (truncated m.N, wrong magic, a map pointing past a file's end)."""

from __future__ import annotations

import fcntl
import io
import os
import shutil
from pathlib import Path

import pytest

from pydsync_server.errors import StorageError, UsageError
from pydsync_server.storage import dbox_file as dbox
from pydsync_server.storage.base import NewMessage
from pydsync_server.storage.location import MailLocation, open_storage, parse_size
from pydsync_server.storage.mdbox import MdboxStorage

FIXTURES = Path(__file__).parent / "data" / "fixtures" / "dovecot-2.3.19"
INPUT = FIXTURES / "input"
SEEN, ANSWERED, FLAGGED, DRAFT = 0x08, 0x01, 0x02, 0x10


def new(uid: int, body: bytes, guid: str = "", **kw: object) -> NewMessage:
    return NewMessage(uid, guid or f"{uid:032x}", io.BytesIO(body), **kw)  # type: ignore[arg-type]


def save(storage: MdboxStorage, vname: str, *messages: NewMessage) -> None:
    box = storage.open_mailbox(vname)
    with box.transaction() as t:
        for m in messages:
            t.save(m)


def bodies(storage: MdboxStorage, vname: str) -> dict[int, bytes]:
    box = storage.open_mailbox(vname)
    return {m.uid: box.open_message(m.uid).read() for m in box.messages()}


@pytest.fixture
def fixture_store(tmp_path: Path) -> MdboxStorage:
    root = tmp_path / "mdbox"
    shutil.copytree(FIXTURES / "mdbox" / "mdbox", root)
    return MdboxStorage(root)


def test_reads_the_dovecot_fixture(fixture_store: MdboxStorage) -> None:
    s = fixture_store
    assert [(e.vname, e.guid is not None) for e in s.list_mailboxes()] == [
        ("INBOX", True), ("Work", True), ("Work/Projects", True),
    ]  # fmt: skip
    inbox = s.open_mailbox("INBOX")
    st = inbox.status()
    assert st.guid.hex() == "3558981a85760b6b2e06000083ecc375"  # §3.4 mdbox-hdr
    infos = {m.uid: m for m in inbox.messages()}
    assert [(u, m.flags, m.keywords) for u, m in infos.items()] == [
        (1, SEEN, frozenset()), (2, ANSWERED | FLAGGED, frozenset({"todo"})), (3, 0, frozenset()),
    ]  # fmt: skip
    assert infos[1].guid == "3658981a85760b6b2e06000083ecc375"
    assert infos[1].received_date == 0x6B0B7685 and infos[1].virtual_size == 197
    assert bodies(s, "INBOX") == {i: (INPUT / f"{i}.eml").read_bytes() for i in (1, 2, 3)}
    work = s.open_mailbox("Work").messages()
    assert [(m.uid, m.flags, m.keywords) for m in work] == [(1, DRAFT, frozenset({"$Label1"}))]
    assert s.subscriptions() == {"INBOX", "Work"}
    view = s.ctx.map.read()  # §3.3 fixture values
    assert (view.uid_validity, view.highest_file_id) == (1795913349, 1)
    records = view.records.values()
    assert [(r.map_uid, r.file_id, r.offset, r.size, r.refcount) for r in records] == [
        (1, 1, 16, 279, 1), (2, 1, 295, 296, 1), (3, 1, 591, 251, 1), (4, 1, 842, 248, 1),
    ]  # fmt: skip


def test_appends_to_the_fixture_files(fixture_store: MdboxStorage) -> None:
    save(fixture_store, "Work", new(2, b"Subject: more\n\nmore\n", flags=SEEN))
    assert sorted(os.listdir(fixture_store.root / "storage")) == ["dovecot.map.index.log", "m.1"]
    assert bodies(fixture_store, "Work")[2] == b"Subject: more\n\nmore\n"
    assert dbox.read_file(fixture_store.root / "storage" / "m.1").ok


def test_rotation(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m", rotate_size=1000)
    body = b"Subject: x\n\n" + b"y" * 300 + b"\n"
    save(s, "INBOX", *(new(uid, body) for uid in range(1, 8)))
    save(s, "INBOX", new(8, b"Subject: big\n\n" + b"z" * 3000))
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "m" / "storage").glob("m.*")}
    assert len(sizes) >= 4 and sum(1 for size in sizes.values() if size > 1000) == 1
    assert all(dbox.read_file(p).ok for p in (tmp_path / "m" / "storage").glob("m.*"))
    assert len(bodies(s, "INBOX")) == 8


def test_one_copy_per_guid_refcounts_and_purge(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    s.create_mailbox("Work")
    save(s, "INBOX", new(1, b"Subject: shared\n\n", received_date=1000), new(2, b"Subject: b\n\n"))
    save(s, "Work", new(1, b"Subject: shared\n\n", guid=f"{1:032x}", received_date=1000))
    refs = {r.map_uid: r.refcount for r in s.ctx.map.read().records.values()}
    assert refs == {1: 2, 2: 1}  # the second save referenced the stored copy
    with s.open_mailbox("INBOX").transaction() as t:
        t.expunge(1)
        t.expunge(2)
    assert {r.map_uid: r.refcount for r in s.ctx.map.read().records.values()} == {1: 1, 2: 0}
    s.purge()
    view = s.ctx.map.read()
    assert [(r.map_uid, r.refcount) for r in view.records.values()] == [(1, 1)]
    assert bodies(s, "Work") == {1: b"Subject: shared\n\n"}
    s.delete_mailbox("Work")
    assert [r.refcount for r in s.ctx.map.read().records.values()] == [0]
    s.purge()
    assert s.ctx.map.read().records == {} and not list((tmp_path / "m/storage").glob("m.*"))


def test_purge_skips_a_file_another_writer_holds(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    save(s, "INBOX", new(1, b"a"), new(2, b"b"))
    with s.open_mailbox("INBOX").transaction() as t:
        t.expunge(1)
    fd = os.open(tmp_path / "m/storage/m.1", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        s.purge()
        assert len(s.ctx.map.read().records) == 2
    finally:
        os.close(fd)
    s.purge()
    assert list(s.ctx.map.read().records) == [2] and bodies(s, "INBOX") == {2: b"b"}


def test_alt_storage(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m", alt_root=tmp_path / "alt")
    assert os.readlink(tmp_path / "m" / "dbox-alt-root") == str(tmp_path / "alt")
    save(s, "INBOX", new(1, b"one"), new(2, b"two"))
    (tmp_path / "alt/storage").mkdir(parents=True)
    os.rename(tmp_path / "m/storage/m.1", tmp_path / "alt/storage/m.1")  # as altmove + purge
    s2 = MdboxStorage(tmp_path / "m", alt_root=tmp_path / "alt")
    assert bodies(s2, "INBOX") == {1: b"one", 2: b"two"}
    with s2.open_mailbox("INBOX").transaction() as t:
        t.expunge(1)
    s2.purge()
    assert [p.name for p in (tmp_path / "alt/storage").glob("m.*")] == ["m.2"]
    assert bodies(s2, "INBOX") == {2: b"two"}


def test_force_resync_keeps_flags_when_only_the_map_is_lost(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    s.create_mailbox("Work")
    save(s, "INBOX", new(1, b"a", flags=SEEN, keywords=frozenset({"k"})), new(5, b"b"))
    save(s, "Work", new(1, b"c"))
    before = {v: s.open_mailbox(v).messages() for v in ("INBOX", "Work")}
    identity = {v: _identity(s, v) for v in ("INBOX", "Work")}
    for p in (tmp_path / "m/storage").glob("dovecot.map.index*"):
        p.unlink()
    assert s.force_resync() == []
    for vname in ("INBOX", "Work"):
        box = s.open_mailbox(vname)
        after = [(m.uid, m.guid, m.flags, m.keywords) for m in box.messages()]
        assert after == [(m.uid, m.guid, m.flags, m.keywords) for m in before[vname]]
        assert _identity(s, vname) == identity[vname]
    assert bodies(s, "INBOX") == {1: b"a", 5: b"b"}


def _identity(s: MdboxStorage, vname: str) -> tuple[bytes, int]:
    st = s.open_mailbox(vname).status()
    return st.guid, st.uid_validity


def test_force_resync_without_any_index_restores_by_original_mailbox(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    s.create_mailbox("Été/Sub")
    save(s, "INBOX", new(1, b"a"))
    save(s, "Été/Sub", new(1, b"b", guid="b" * 32))
    for p in (tmp_path / "m").rglob("dovecot*index*"):
        p.unlink()
    assert s.force_resync() == []
    assert bodies(s, "INBOX") == {1: b"a"} and bodies(s, "Été/Sub") == {1: b"b"}


def _two_file_store(tmp_path: Path) -> tuple[MdboxStorage, Path]:
    s = MdboxStorage(tmp_path / "m", rotate_size=200)
    save(s, "INBOX", *(new(uid, b"Subject: %d\n\nbody\n" % uid) for uid in range(1, 5)))
    return s, tmp_path / "m" / "storage"


def test_truncated_file_keeps_readable_mail_and_resync_recovers(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    save(s, "INBOX", *(new(uid, b"Subject: %d\n\nbody\n" % uid) for uid in range(1, 4)))
    m1 = tmp_path / "m/storage/m.1"
    m1.write_bytes(m1.read_bytes()[:-20])  # the last message loses its tail
    box = s.open_mailbox("INBOX")
    assert [m.uid for m in box.messages()] == [1, 2, 3]  # listed from the index
    assert box.open_message(2).read() == b"Subject: 2\n\nbody\n"
    with pytest.raises(dbox.DboxCorruptError, match="truncated"):
        box.open_message(3)
    problems = s.force_resync()
    assert any("m.1" in p and "truncated" in p for p in problems)
    assert (tmp_path / "m/storage/m.1.broken").exists()
    assert bodies(s, "INBOX") == {1: b"Subject: 1\n\nbody\n", 2: b"Subject: 2\n\nbody\n"}


def test_wrong_magic_keeps_the_other_messages(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    save(s, "INBOX", *(new(uid, b"Subject: %d\n\nbody\n" % uid) for uid in range(1, 4)))
    m1 = tmp_path / "m/storage/m.1"
    rec = s.ctx.map.read().records[2]
    data = bytearray(m1.read_bytes())
    data[rec.offset] = 0x07  # message 2's header magic
    m1.write_bytes(bytes(data))
    box = s.open_mailbox("INBOX")
    assert box.open_message(3).read() == b"Subject: 3\n\nbody\n"
    with pytest.raises(dbox.DboxCorruptError, match="magic"):
        box.open_message(2)
    s.force_resync()
    assert sorted(bodies(s, "INBOX").values()) == [b"Subject: 1\n\nbody\n", b"Subject: 3\n\nbody\n"]


def test_map_pointing_past_the_end_of_a_file(tmp_path: Path) -> None:
    s, storage = _two_file_store(tmp_path)
    last = max(storage.glob("m.*"), key=lambda p: int(p.name[2:]))
    os.truncate(last, 16)  # header only: the map points past the end
    box = s.open_mailbox("INBOX")
    lost = [
        m.uid
        for m in box.messages()
        if s.ctx.map.read().records[m.uid].file_id == int(last.name[2:])
    ]
    kept = sorted(set(range(1, 5)) - set(lost))
    assert lost and kept
    for uid in kept:
        assert box.open_message(uid).read() == b"Subject: %d\n\nbody\n" % uid
    with pytest.raises(StorageError, match="truncated"):
        box.open_message(lost[0])
    s.force_resync()
    assert sorted(bodies(s, "INBOX")) == kept


def test_location_opens_mdbox_with_rotate_size_and_alt(tmp_path: Path) -> None:
    assert (parse_size("10M"), parse_size("512 k"), parse_size("2048")) == (
        10 << 20,
        512 << 10,
        2048,
    )
    with pytest.raises(UsageError):
        parse_size("ten")
    location = MailLocation(
        "mdbox", str(tmp_path / "m"), {"ALT": str(tmp_path / "alt")},
        settings={"mdbox_rotate_size": "4k"},
    )  # fmt: skip
    s = open_storage(location, clock=lambda: 1e9, hostname="h")
    assert isinstance(s, MdboxStorage) and s.ctx.files.rotate_size == 4096
    assert s.ctx.files.alt_dir == tmp_path / "alt" / "storage"


def test_broken_index_log_record_is_reported_and_resync_recovers(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    save(s, "INBOX", new(1, b"a", flags=SEEN), new(2, b"b"))
    with s.open_mailbox("INBOX").transaction() as t:
        t.update_flags(2, add_flags=FLAGGED)
    log = tmp_path / "m/mailboxes/INBOX/dbox-Mails/dovecot.index.log"
    data = bytearray(log.read_bytes())
    flag_type = data.rindex(b"\x04\x00\x00\x30")  # FLAG_UPDATE, EXTERNAL|SYNC
    data[flag_type : flag_type + 4] = b"\x00\x40\x00\x30"  # a record type that doesn't exist
    log.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="force-resync"):
        s.open_mailbox("INBOX")
    problems = s.force_resync()
    assert any("INBOX" in p for p in problems)
    box = s.open_mailbox("INBOX")
    assert [(m.uid, m.flags) for m in box.messages()] == [(1, SEEN), (2, 0)]
    assert bodies(s, "INBOX") == {1: b"a", 2: b"b"}


def test_map_uidvalidity_mismatch_refuses_writes(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    save(s, "INBOX", new(1, b"a"))
    for p in (tmp_path / "m/storage").glob("dovecot.map.index*"):
        p.unlink()
    s.ctx.map.create(uid_validity=12345)  # another map: the mailbox's map_uids mean nothing
    box = s.open_mailbox("INBOX")
    with pytest.raises(StorageError):
        box.open_message(1)
    with pytest.raises(StorageError, match="mismatch"), box.transaction() as t:
        t.update_flags(1, add_flags=SEEN)
    s.force_resync()
    assert bodies(s, "INBOX") == {1: b"a"}


def test_no_append_to_a_file_purged_after_the_map_was_read(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    save(s, "INBOX", new(1, b"a"), new(2, b"b"))
    stale = s.ctx.map.read()
    with s.open_mailbox("INBOX").transaction() as t:
        t.expunge(1)
    s.purge()  # m.1 is gone, its live record moved to m.2
    writer = s.ctx.files.new_writer(stale)
    writer.add(dbox.encode_record(b"c", dbox.Metadata(guid="c" * 32)))
    writer.sync()
    with s.ctx.map.locked() as locked:
        ((file_id, _, _),) = writer.assign(locked)
    writer.finish()
    assert file_id == 3 and not (tmp_path / "m/storage/m.1").exists()


def test_listing_follows_appends_and_a_recreated_mailbox(tmp_path: Path) -> None:
    """Listed identities are remembered while the index files are unchanged: an append
    shows, and so does a mailbox deleted and made again (maybe on the same inode)."""
    s = MdboxStorage(tmp_path / "m")

    def listed() -> tuple[bytes | None, int, int]:
        (entry,) = [e for e in s.list_mailboxes() if e.vname == "Work"]
        return entry.guid, entry.uid_validity, entry.uid_next

    s.create_mailbox("Work", guid=b"\x01" * 16, uid_validity=5)
    assert listed() == (b"\x01" * 16, 5, 1)
    save(s, "Work", new(1, b"a"))
    assert listed() == (b"\x01" * 16, 5, 2)
    s.delete_mailbox("Work")
    s.create_mailbox("Work", guid=b"\x02" * 16, uid_validity=5)
    assert listed() == (b"\x02" * 16, 5, 1)
