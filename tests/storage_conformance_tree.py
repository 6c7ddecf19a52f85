"""Conformance tests of the mailbox tree: names, directories, subscriptions, mailbox log."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from storage_conformance_base import ConformanceBase, msg

from pydsync_server.errors import (
    InvalidMailboxNameError,
    MailboxExistsError,
    MailboxNotFoundError,
    MailError,
    StorageError,
)
from pydsync_server.storage.base import LogType, Storage, name_hash

HOSTILE_NAMES = [
    "",
    "{s}",
    "{s}a",
    "a{s}",
    "a{s}{s}b",
    "a\0b",
    ".",
    "..",
    "a{s}.",
    "a{s}..{s}b",
    "\udcff",
    "a\ud800b",
]

UNUSUAL_NAMES = ["Été", "with space", "a~b", "&amp", "日本語{s}下"]


class TreeConformance(ConformanceBase):
    """Mailboxes, directories, names, subscriptions and the mailbox log."""

    def test_create_lists_mailbox_with_identity(self, storage: Storage) -> None:
        storage.create_mailbox("Work")
        e = self.entry(storage, "Work")
        assert e is not None and e.guid is not None
        assert len(e.guid) == 16 and e.guid != bytes(16)
        assert e.uid_validity > 0 and e.uid_next == 1
        box = storage.open_mailbox("Work")
        st = box.status()
        assert (st.guid, st.uid_validity, st.uid_next) == (e.guid, e.uid_validity, 1)
        assert st.messages == 0 and box.messages() == [] and st.first_recent_uid == 1

    def test_create_makes_parents_directories(self, storage: Storage) -> None:
        """Missing parents become directories; without directories (Maildir++) they are
        implicit and not listed at all, as Dovecot reports them nonexistent."""
        sep = storage.separator
        storage.create_mailbox(f"A{sep}B{sep}C")
        names = [e.vname for e in storage.list_mailboxes()]
        for parent in ("A", f"A{sep}B"):
            e = self.entry(storage, parent)
            if self.supports_dirs:
                assert e is not None and e.guid is None, parent
            else:
                assert e is None, parent
        if self.supports_dirs:
            assert names.index("A") < names.index(f"A{sep}B") < names.index(f"A{sep}B{sep}C")
        assert not self.logged(storage, lambda: storage.create_mailbox("D"))

    def test_list_is_parents_first(self, storage: Storage) -> None:
        sep = storage.separator
        for name in ("Z", f"B{sep}Y", "B", f"Z{sep}A", f"B{sep}Y{sep}Q", "A"):
            storage.create_mailbox(name)
        seen: set[str] = set()
        for e in storage.list_mailboxes():
            if sep in e.vname:
                assert e.vname.rsplit(sep, 1)[0] in seen, e.vname
            seen.add(e.vname)

    def test_create_existing_fails(self, storage: Storage) -> None:
        storage.create_mailbox("Work", guid=b"\x01" * 16)
        with pytest.raises(MailboxExistsError):
            storage.create_mailbox("Work")
        with pytest.raises(MailboxExistsError):
            storage.create_mailbox("Work", guid=b"\x02" * 16, uid_validity=7)
        e = self.entry(storage, "Work")
        assert e is not None and e.guid == b"\x01" * 16
        with pytest.raises(MailboxExistsError):
            storage.create_dir("Work")

    def test_create_keeps_given_guid_and_uid_validity(self, storage: Storage) -> None:
        guid = bytes(range(1, 17))
        storage.create_mailbox("Kept", guid=guid, uid_validity=12345)
        for s in (storage, self.reopen(storage)):
            e = self.entry(s, "Kept")
            assert e is not None and (e.guid, e.uid_validity) == (guid, 12345)
            st = s.open_mailbox("Kept").status()
            assert (st.guid, st.uid_validity) == (guid, 12345)

    def test_create_rejects_malformed_guid(self, storage: Storage) -> None:
        with pytest.raises(StorageError):
            storage.create_mailbox("Bad", guid=b"\x01" * 15)
        assert self.entry(storage, "Bad") is None

    def test_allocated_identities_never_repeat(self, storage: Storage) -> None:
        seen: list[tuple[bytes | None, int]] = []
        for i in range(4):
            storage.create_mailbox(f"M{i}")
            storage.create_mailbox("Again")
            for name in (f"M{i}", "Again"):
                e = self.entry(storage, name)
                assert e is not None
                seen.append((e.guid, e.uid_validity))
            storage.delete_mailbox("Again")
        assert len({g for g, _ in seen}) == len(seen)
        assert len({u for _, u in seen}) == len(seen)
        assert all(u > 0 for _, u in seen)

    def test_directories(self, storage: Storage) -> None:
        if not self.supports_dirs:
            pytest.skip("driver keeps no childless directories")
        assert not self.logged(storage, lambda: storage.create_dir("Dir"))
        e = self.entry(storage, "Dir")
        assert e is not None and e.guid is None
        with pytest.raises(MailboxExistsError):
            storage.create_dir("Dir")
        with pytest.raises(StorageError) as err:
            storage.open_mailbox("Dir")
        assert err.value.mail_error in (MailError.NOTFOUND, MailError.NOTPOSSIBLE)
        with pytest.raises(MailboxNotFoundError):
            storage.delete_mailbox("Dir")
        records = self.logged(storage, lambda: storage.delete_dir("Dir"))
        assert [(r.type, r.key) for r in records] == [(LogType.DELETE_DIR, name_hash("Dir"))]
        assert self.entry(storage, "Dir") is None
        with pytest.raises(MailboxNotFoundError):
            storage.delete_dir("Dir")

    def test_create_mailbox_over_directory(self, storage: Storage) -> None:
        sep = storage.separator
        storage.create_mailbox(f"P{sep}Child")
        storage.create_mailbox("P", uid_validity=99)
        e = self.entry(storage, "P")
        assert e is not None and e.guid is not None and e.uid_validity == 99
        assert storage.open_mailbox("P").status().uid_validity == 99

    def test_delete_dir_refuses_children_and_mailboxes(self, storage: Storage) -> None:
        sep = storage.separator
        storage.create_mailbox(f"P{sep}Child")
        with pytest.raises(StorageError) as err:
            storage.delete_dir("P")
        assert err.value.mail_error == MailError.EXISTS
        with pytest.raises(StorageError):
            storage.delete_dir(f"P{sep}Child")
        assert f"P{sep}Child" in self.names(storage)
        assert ("P" in self.names(storage)) == self.supports_dirs
        e = self.entry(storage, f"P{sep}Child")
        assert e is not None and e.guid is not None

    def test_delete_mailbox_logs_its_guid(self, storage: Storage) -> None:
        storage.create_mailbox("Trash")
        self.save(storage, "Trash", msg(1))
        e = self.entry(storage, "Trash")
        assert e is not None and e.guid is not None
        records = self.logged(storage, lambda: storage.delete_mailbox("Trash"))
        assert [(r.type, r.key) for r in records][:1] == [(LogType.DELETE_MAILBOX, e.guid)]
        # Dovecot also logs the removed directory (storage-formats.md §7.4).
        assert [(r.type, r.key) for r in records[1:]] in (
            [],
            [(LogType.DELETE_DIR, name_hash("Trash"))],
        )
        assert self.entry(storage, "Trash") is None
        with pytest.raises(MailboxNotFoundError):
            storage.open_mailbox("Trash")
        storage.create_mailbox("Trash")
        box = storage.open_mailbox("Trash")
        again = box.status()
        assert again.messages == 0 and box.messages() == []
        assert again.guid != e.guid and again.uid_validity != e.uid_validity

    def test_delete_mailbox_keeps_children(self, storage: Storage) -> None:
        sep = storage.separator
        storage.create_mailbox("P")
        storage.create_mailbox(f"P{sep}C")
        child = self.entry(storage, f"P{sep}C")
        storage.delete_mailbox("P")
        parent = self.entry(storage, "P")
        assert parent is None or parent.guid is None
        assert self.entry(storage, f"P{sep}C") == child
        with pytest.raises(StorageError):
            storage.open_mailbox("P")

    def test_delete_missing_fails(self, storage: Storage) -> None:
        with pytest.raises(MailboxNotFoundError):
            storage.delete_mailbox("Nope")
        assert storage.mailbox_log() == []

    def test_rename_moves_children_and_keeps_identity(self, storage: Storage) -> None:
        sep = storage.separator
        storage.create_mailbox("Old")
        storage.create_mailbox(f"Old{sep}Kid{sep}Grandkid")
        self.save(storage, "Old", msg(1, b"old body"))
        before = {e.vname: e for e in storage.list_mailboxes()}
        records = self.logged(storage, lambda: storage.rename_mailbox("Old", "New"))
        assert [(r.type, r.key) for r in records][:1] == [(LogType.RENAME, name_hash("New"))]
        for r in records[1:]:
            assert r.type == LogType.RENAME
        after = {e.vname: e for e in storage.list_mailboxes()}
        assert not any(n == "Old" or n.startswith(f"Old{sep}") for n in after)
        suffixes = ["", f"{sep}Kid{sep}Grandkid"] + ([f"{sep}Kid"] if self.supports_dirs else [])
        for suffix in suffixes:
            old, new = before["Old" + suffix], after["New" + suffix]
            assert (old.guid, old.uid_validity) == (new.guid, new.uid_validity)
        box = storage.open_mailbox("New")
        assert self.body(box, 1) == b"old body"

    def test_rename_creates_parents(self, storage: Storage) -> None:
        sep = storage.separator
        storage.create_mailbox("M")
        storage.rename_mailbox("M", f"X{sep}Y{sep}M")
        for parent in ("X", f"X{sep}Y"):
            e = self.entry(storage, parent)
            if self.supports_dirs:
                assert e is not None and e.guid is None
            else:
                assert e is None  # implicit parent, not listed
        assert self.entry(storage, f"X{sep}Y{sep}M") is not None
        assert self.entry(storage, "M") is None

    def test_rename_errors(self, storage: Storage) -> None:
        sep = storage.separator
        storage.create_mailbox("A")
        storage.create_mailbox("B")
        with pytest.raises(MailboxNotFoundError):
            storage.rename_mailbox("Missing", "C")
        with pytest.raises(MailboxExistsError):
            storage.rename_mailbox("A", "B")
        with pytest.raises(StorageError):
            storage.rename_mailbox("A", f"A{sep}Under")
        assert {"A", "B"} <= self.names(storage)
        assert not any(n.startswith(f"A{sep}") for n in self.names(storage))
        assert storage.mailbox_log() == []

    def test_inbox_is_case_insensitive_and_permanent(self, storage: Storage) -> None:
        box = storage.open_mailbox("inbox")
        assert box.vname == "INBOX"
        inbox = self.entry(storage, "INBOX")
        assert inbox is not None and inbox.guid == box.status().guid
        with pytest.raises(MailboxExistsError):
            storage.create_mailbox("inbox")
        with pytest.raises(StorageError):
            storage.rename_mailbox("INBOX", "Elsewhere")
        assert self.entry(storage, "INBOX") == inbox
        assert self.entry(storage, "Elsewhere") is None

    def test_deleting_inbox_resets_it(self, storage: Storage) -> None:
        """INBOX can't disappear; deleting it empties it and gives it a new identity, so a
        backup can rebuild it (Dovecot refuses instead and fails every later backup)."""
        self.save(storage, "INBOX", msg(1, b"gone"), msg(7, b"gone too"))
        old = storage.open_mailbox("INBOX").status()
        records = self.logged(storage, lambda: storage.delete_mailbox("Inbox"))
        assert [(r.type, r.key) for r in records][:1] == [(LogType.DELETE_MAILBOX, old.guid)]
        box = storage.open_mailbox("INBOX")
        new = box.status()
        assert box.messages() == [] and new.messages == 0 and new.uid_next == 1
        assert new.guid != old.guid and new.uid_validity != old.uid_validity
        self.save(storage, "INBOX", msg(1, b"fresh"))
        box.refresh()
        assert self.body(box, 1) == b"fresh"

    @pytest.mark.parametrize("template", HOSTILE_NAMES)
    def test_hostile_names_rejected(self, storage: Storage, template: str) -> None:
        bad = template.format(s=storage.separator)
        storage.create_mailbox("Good")
        before = storage.list_mailboxes()
        operations: list[Callable[[], object]] = [
            lambda: storage.create_mailbox(bad),
            lambda: storage.create_dir(bad),
            lambda: storage.rename_mailbox("Good", bad),
            lambda: storage.rename_mailbox(bad, "Other"),
            lambda: storage.delete_dir(bad),
            lambda: storage.set_subscribed(bad, True),
            lambda: storage.open_mailbox(bad),
            lambda: storage.delete_mailbox(bad),
        ]
        for operation in operations:
            with pytest.raises(InvalidMailboxNameError):
                operation()
        assert storage.list_mailboxes() == before
        assert storage.subscriptions() == set() and storage.mailbox_log() == []

    @pytest.mark.parametrize("template", UNUSUAL_NAMES)
    def test_unusual_names_work(self, storage: Storage, template: str) -> None:
        name = template.format(s=storage.separator)
        storage.create_mailbox(name)
        self.save(storage, name, msg(1, b"x"))
        storage.set_subscribed(name, True)
        storage = self.reopen(storage)
        assert name in self.names(storage) and name in storage.subscriptions()
        assert self.body(storage.open_mailbox(name), 1) == b"x"
        storage.rename_mailbox(name, name + "2")
        assert name + "2" in self.names(storage)

    def test_subscriptions_and_their_log(self, storage: Storage) -> None:
        storage.create_mailbox("Work")
        records = self.logged(storage, lambda: storage.set_subscribed("Work", True))
        assert [(r.type, r.key) for r in records] == [(LogType.SUBSCRIBE, name_hash("Work"))]
        assert storage.subscriptions() == {"Work"}
        # Unchanged state: no log record, as Dovecot's mailbox_set_subscribed().
        assert self.logged(storage, lambda: storage.set_subscribed("Work", True)) == []
        assert self.logged(storage, lambda: storage.set_subscribed("Other", False)) == []
        records = self.logged(storage, lambda: storage.set_subscribed("Work", False))
        assert [(r.type, r.key) for r in records] == [(LogType.UNSUBSCRIBE, name_hash("Work"))]
        assert storage.subscriptions() == set()

    def test_subscriptions_are_names(self, storage: Storage) -> None:
        sep = storage.separator
        storage.set_subscribed(f"Not{sep}There", True)
        storage.set_subscribed("inbox", True)
        storage.create_mailbox("Gone")
        storage.set_subscribed("Gone", True)
        storage.create_mailbox("Renamed")
        storage.set_subscribed("Renamed", True)
        storage.delete_mailbox("Gone")
        storage.rename_mailbox("Renamed", "Moved")
        expected = {f"Not{sep}There", "INBOX", "Gone", "Renamed"}
        assert storage.subscriptions() == expected
        assert self.reopen(storage).subscriptions() == expected

    def test_log_is_oldest_first_and_survives_reopen(self, storage: Storage) -> None:
        storage.create_mailbox("A")
        created = self.entry(storage, "A")
        assert created is not None
        storage.set_subscribed("A", True)
        storage.rename_mailbox("A", "B")
        storage.set_subscribed("A", False)
        storage.delete_mailbox("B")
        log = storage.mailbox_log()
        kinds = [(r.type, r.key) for r in log if r.type != LogType.DELETE_DIR]
        assert kinds == [
            (LogType.SUBSCRIBE, name_hash("A")),
            (LogType.RENAME, name_hash("B")),
            (LogType.UNSUBSCRIBE, name_hash("A")),
            (LogType.DELETE_MAILBOX, created.guid),
        ]
        assert [r.timestamp for r in log] == sorted(r.timestamp for r in log)
        assert self.reopen(storage).mailbox_log() == log

    def test_tree_survives_reopen(self, storage: Storage) -> None:
        sep = storage.separator
        storage.create_mailbox(f"A{sep}B", guid=b"\x05" * 16, uid_validity=5)
        storage.create_mailbox("C")
        if self.supports_dirs:
            storage.create_dir("D")
        storage.open_mailbox("INBOX").close()
        before = storage.list_mailboxes()
        assert self.reopen(storage).list_mailboxes() == before
