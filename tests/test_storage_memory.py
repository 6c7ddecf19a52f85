"""The in-memory driver: the conformance suite, plus what only this driver promises
(injected clock and randomness, snapshots, log truncation, strict views)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from storage_conformance import StorageConformance, msg

from pydsync_server.errors import (
    InvalidMailboxNameError,
    MailboxNotFoundError,
    MailError,
    StorageError,
)
from pydsync_server.storage.base import LogType, MessageChange, NewMessage, Storage, name_hash
from pydsync_server.storage.memory import MemoryStorage


def _memory(storage: Storage) -> MemoryStorage:
    assert isinstance(storage, MemoryStorage)
    return storage


class TestMemoryStorage(StorageConformance):
    def make_storage(self, tmp_path: Path) -> Storage:
        return MemoryStorage()

    def reopen_storage(self, storage: Storage, tmp_path: Path) -> Storage:
        return storage  # the "store" is the object itself

    def external_deliver(
        self,
        storage: Storage,
        vname: str,
        body: bytes,
        flags: int = 0,
        keywords: frozenset[str] = frozenset(),
    ) -> None:
        _memory(storage).deliver(vname, body, flags, keywords)

    def external_set_flags(
        self, storage: Storage, vname: str, uid: int, flags: int, keywords: frozenset[str]
    ) -> None:
        _memory(storage).client_set_flags(vname, uid, flags, keywords)

    def external_expunge(self, storage: Storage, vname: str, uid: int) -> None:
        _memory(storage).client_expunge(vname, uid)

    def external_set_attribute(
        self, storage: Storage, vname: str, type_: str, key: str, value: str | None
    ) -> None:
        _memory(storage).client_set_attribute(vname, type_, key, value)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_uid_validity_is_clock_based_and_never_repeats() -> None:
    clock = FakeClock(1000.7)
    s = MemoryStorage(clock=clock)
    values = [s.open_mailbox("INBOX").status().uid_validity]
    for name in ("A", "B"):
        s.create_mailbox(name)
    clock.now = 500  # the clock going backwards must not repeat a value
    s.create_mailbox("C")
    clock.now = 5000
    s.create_mailbox("D")
    values += [s.open_mailbox(n).status().uid_validity for n in "ABCD"]
    assert values == [1000, 1001, 1002, 1003, 5000]


def test_log_timestamps_come_from_the_clock() -> None:
    clock = FakeClock(100)
    s = MemoryStorage(clock=clock)
    s.create_mailbox("A")
    guid = s.open_mailbox("A").status().guid
    clock.now = 200
    s.set_subscribed("A", True)
    clock.now = 300.9
    s.delete_mailbox("A")
    assert [(r.type, r.key, r.timestamp) for r in s.mailbox_log()] == [
        (LogType.SUBSCRIBE, name_hash("A"), 200),
        (LogType.DELETE_MAILBOX, guid, 300),
        (LogType.DELETE_DIR, name_hash("A"), 300),
    ]


def test_random_source_makes_guids_reproducible() -> None:
    def make() -> MemoryStorage:
        rng = random.Random(7)
        s = MemoryStorage(clock=FakeClock(1), random_bytes=rng.randbytes)
        s.create_mailbox("A")
        s.deliver("A", b"x")
        return s

    assert make().snapshot() == make().snapshot()


def test_snapshot() -> None:
    s = MemoryStorage()
    s.create_mailbox("P/Box", guid=b"\x01" * 16, uid_validity=9)
    s.deliver("P/Box", b"body", flags=0x08, keywords=["k"], guid="g1")
    s.set_subscribed("P/Box", True)
    s.client_set_attribute("P/Box", "p", "comment", "hi")
    s.client_set_attribute("P/Box", "s", "gone", None)  # deletions are not part of it
    snap = s.snapshot()
    assert snap["subscriptions"] == frozenset({"P/Box"})
    assert snap["mailboxes"]["P"] == {
        "guid": None,
        "uid_validity": 0,
        "uid_next": 0,
        "messages": {},
        "attributes": {},
    }
    assert snap["mailboxes"]["P/Box"] == {
        "guid": b"\x01" * 16,
        "uid_validity": 9,
        "uid_next": 2,
        "messages": {1: ("g1", 0x08, frozenset({"k"}), b"body")},
        "attributes": {("p", "comment"): "hi"},
    }
    assert set(snap["mailboxes"]) == {"INBOX", "P", "P/Box"}


def test_views_change_only_on_refresh() -> None:
    s = MemoryStorage()
    box = s.open_mailbox("INBOX")
    s.deliver("INBOX", b"x")
    assert box.messages() == [] and box.status().uid_next == 1
    with box.transaction() as t:
        t.save(msg(2))
    assert box.messages() == []
    box.refresh()
    assert [m.uid for m in box.messages()] == [1, 2]


def test_conflicting_save_moves_to_next_uid() -> None:
    s = MemoryStorage()
    box = s.open_mailbox("INBOX")
    t = box.transaction()
    t.save(msg(3, b"three"))
    t.save(msg(1, b"one"))
    t.update_flags(1, add_flags=0x08)
    s.deliver("INBOX", b"delivered")  # takes UID 1
    t.commit()
    box.refresh()
    got = {m.uid: (box.open_message(m.uid).read(), m.flags) for m in box.messages()}
    assert got == {1: (b"delivered", 0), 2: (b"one", 0x08), 3: (b"three", 0)}


def test_truncated_change_log() -> None:
    s = MemoryStorage()
    s.deliver("INBOX", b"a")
    s.deliver("INBOX", b"b")
    s.client_set_flags("INBOX", 1, 0x08)
    s.client_set_flags("INBOX", 2, 0x08)
    box = s.open_mailbox("INBOX")
    first = box.changes_since(0)
    assert first is not None and [c.uid for c in first] == [1, 2]
    s.truncate_change_log("INBOX", first[0].modseq)
    box.refresh()
    assert box.changes_since(first[0].modseq - 1) is None
    assert box.changes_since(0) == box.changes_since(first[0].modseq) == first[1:]


def test_truncated_log_forgets_old_attribute_deletions() -> None:
    clock = FakeClock(100)
    s = MemoryStorage(clock=clock)
    for key, value in (("old", None), ("kept", "v"), ("new", None)):
        clock.now += 1
        s.client_set_attribute("INBOX", "p", key, value)
    box = s.open_mailbox("INBOX")
    modseqs = {a.key: (a.modseq, a.last_change) for a in box.attributes()}
    assert sorted(modseqs.values()) == [(2, 101), (3, 102), (4, 103)]
    s.truncate_change_log("INBOX", modseqs["kept"][0])
    box.refresh()
    assert [(a.key, a.value) for a in box.attributes()] == [("kept", "v"), ("new", None)]


def test_client_set_attribute_checks_its_input() -> None:
    s = MemoryStorage()
    with pytest.raises(StorageError) as err:
        s.client_set_attribute("INBOX", "x", "comment", "v")
    assert err.value.mail_error == MailError.PARAMS
    with pytest.raises(MailboxNotFoundError):
        s.client_set_attribute("Nope", "p", "comment", "v")
    assert s.open_mailbox("INBOX").attributes() == []


def test_client_methods_need_existing_messages() -> None:
    s = MemoryStorage()
    with pytest.raises(StorageError) as err:
        s.client_set_flags("INBOX", 1, 0)
    assert err.value.mail_error == MailError.EXPUNGED
    with pytest.raises(StorageError) as err:
        s.client_expunge("INBOX", 1)
    assert err.value.mail_error == MailError.EXPUNGED


def test_unchanged_client_flags_leave_no_record() -> None:
    s = MemoryStorage()
    s.deliver("INBOX", b"a", flags=0x08, keywords=["k"])
    s.client_set_flags("INBOX", 1, 0x28, ["k"])  # \Recent is not stored
    box = s.open_mailbox("INBOX")
    assert box.changes_since(0) == [] and box.status().highest_modseq == 2


def test_client_expunge_record() -> None:
    s = MemoryStorage()
    s.deliver("INBOX", b"a", guid="abc")
    s.client_expunge("INBOX", 1)
    box = s.open_mailbox("INBOX")
    # guid128("abc"): the last 16 bytes of SHA-1("abc") = a9993e36 4706816a...9cd0d89d
    sha_tail = bytes.fromhex("4706816aba3e25717850c26c9cd0d89d")
    assert box.changes_since(0) == [MessageChange(1, 3, expunged=True, guid128=sha_tail)]


@pytest.mark.parametrize("separator", [".", "/", "\\"])
def test_other_separators(separator: str) -> None:
    s = MemoryStorage(separator=separator)
    s.create_mailbox(f"a{separator}b")
    assert [e.vname for e in s.list_mailboxes()] == ["INBOX", "a", f"a{separator}b"]
    with pytest.raises(InvalidMailboxNameError):
        s.create_mailbox(f"a{separator}{separator}b")
    other = "/" if separator != "/" else "."
    s.create_mailbox(f"x{other}y")  # the other character is an ordinary one here
    assert s.open_mailbox(f"x{other}y").vname == f"x{other}y"


def test_bad_separator() -> None:
    for bad in ("", "//", "\0"):
        with pytest.raises(ValueError):
            MemoryStorage(separator=bad)


def test_inbox_prefix_is_case_insensitive() -> None:
    s = MemoryStorage()
    s.create_mailbox("inbox/Sub")
    assert s.open_mailbox("Inbox/sub".replace("sub", "Sub")).vname == "INBOX/Sub"
    s.create_mailbox("inboxes")  # only a whole first level is INBOX
    assert "inboxes" in {e.vname for e in s.list_mailboxes()}


def test_save_reads_the_body_at_once() -> None:
    s = MemoryStorage()
    box = s.open_mailbox("INBOX")
    body = io.BytesIO(b"payload")
    with box.transaction() as t:
        t.save(NewMessage(1, "g", body))
        body.seek(0)
        body.write(b"changed")
    box.refresh()
    assert box.open_message(1).read() == b"payload"
