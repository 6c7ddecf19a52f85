"""Conformance tests of mailbox attributes (IMAP METADATA): values, deletions remembered
as tombstones, and the change stamps dsync orders them by (dsync-algorithm.md §5)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from storage_conformance_base import ConformanceBase, msg

from pydsync_server.errors import StorageError
from pydsync_server.storage.base import Attribute, Mailbox, Storage

STAMP = 1_700_000_000  # a last_change as a peer sends it


class AttributeConformance(ConformanceBase):
    """`Mailbox.attributes()`, `Transaction.set_attribute` and clients' changes."""

    # -- helpers

    @staticmethod
    def set_attributes(
        box: Mailbox, *changes: tuple[str, str, str | None], last_change: int = STAMP
    ) -> None:
        """Write (type, key, value) in one dsync transaction, then refresh the view."""
        with box.transaction() as t:
            for type_, key, value in changes:
                t.set_attribute(type_, key, value, last_change)
        box.refresh()

    @staticmethod
    def by_key(box: Mailbox) -> dict[tuple[str, str], Attribute]:
        found = {(a.type, a.key): a for a in box.attributes()}
        assert len(found) == len(box.attributes()), "an attribute listed twice"
        return found

    @staticmethod
    def external(box: Mailbox, change: Callable[[], None]) -> int:
        """Run a client's change; the view's highest modseq before it. Checks that the
        change shows only after refresh()."""
        before, attributes = box.status().highest_modseq, box.attributes()
        change()
        assert box.attributes() == attributes
        box.refresh()
        return before

    # -- dsync writes

    def test_new_mailbox_has_none(self, storage: Storage) -> None:
        storage.create_mailbox("Work")
        assert storage.open_mailbox("Work").attributes() == []
        assert storage.open_mailbox("INBOX").attributes() == []

    def test_set_and_read(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        before = box.status().highest_modseq
        values = {
            ("s", "comment"): "shared one",
            ("p", "comment"): "hello world",
            ("p", "vendor/vendor.example/multi"): "tab\there\nnew line\x01 ctrl \u00e9\u65e5",
            ("p", "empty"): "",
        }
        self.set_attributes(box, *((t, k, v) for (t, k), v in values.items()))
        attributes = box.attributes()
        assert [(a.type, a.key) for a in attributes] == sorted(values)  # private first
        modseq = box.status().highest_modseq
        assert modseq > before
        for a in attributes:
            assert (a.value, a.last_change, a.modseq, a.from_dsync) == (
                values[a.type, a.key], STAMP, modseq, True,
            )  # fmt: skip
        assert box.changes_since(0) == []  # attributes are no message changes

    def test_each_change_gets_a_new_modseq(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1))
        message_modseq = self.infos(box)[1].modseq
        seen = [box.status().highest_modseq]
        for value in ("one", "two", None, "three"):
            self.set_attributes(box, ("p", "comment", value))
            attribute = self.by_key(box)["p", "comment"]
            assert attribute.modseq == box.status().highest_modseq > seen[-1]
            assert attribute.value == value
            seen.append(attribute.modseq)
        assert self.infos(box)[1].modseq == message_modseq

    def test_last_change_zero_stays_unknown(self, storage: Storage) -> None:
        """A dsync write keeps the peer's stamp; Dovecot sends none (0) for values its
        dict holds without a logged change (vector g2), and 0 must stay "unknown"."""
        box = storage.open_mailbox("INBOX")
        self.set_attributes(box, ("p", "comment", "x"), last_change=0)
        assert self.by_key(box)["p", "comment"].last_change == 0

    def test_unset_is_remembered(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        self.set_attributes(box, ("p", "comment", "x"), ("s", "comment", "y"))
        set_modseq = box.status().highest_modseq
        self.set_attributes(box, ("p", "comment", None), last_change=STAMP + 5)
        found = self.by_key(box)
        assert found["p", "comment"] == Attribute(
            "p", "comment", None, STAMP + 5, box.status().highest_modseq, True
        )
        assert found["p", "comment"].modseq > set_modseq
        assert found["s", "comment"].value == "y"  # the shared key is another attribute

    def test_unset_of_unknown_key_is_remembered(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        self.set_attributes(box, ("s", "never", None))
        assert box.attributes() == [
            Attribute("s", "never", None, STAMP, box.status().highest_modseq, True)
        ]

    def test_last_write_in_a_transaction_wins(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        self.set_attributes(box, ("p", "a", "1"), ("p", "a", "2"), ("p", "b", "x"))
        self.set_attributes(box, ("p", "b", "y"), ("p", "b", None), ("p", "a", "3"))
        found = self.by_key(box)
        assert (found["p", "a"].value, found["p", "b"].value) == ("3", None)

    def test_attributes_belong_to_one_mailbox(self, storage: Storage) -> None:
        storage.create_mailbox("Work")
        work = storage.open_mailbox("Work")
        self.set_attributes(work, ("p", "comment", "work"))
        assert storage.open_mailbox("INBOX").attributes() == []
        self.set_attributes(storage.open_mailbox("INBOX"), ("p", "comment", "inbox"))
        work.refresh()
        assert [a.value for a in work.attributes()] == ["work"]

    def test_invalid_writes_are_refused(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        for type_, key in (("x", "comment"), ("", "comment"), ("p", "")):
            t = box.transaction()
            with pytest.raises(StorageError):
                t.set_attribute(type_, key, "v", STAMP)
                t.commit()
            t.rollback()
        box.refresh()
        assert box.attributes() == []

    # -- transactions

    def test_nothing_visible_before_commit(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        before = box.status()
        t = box.transaction()
        t.set_attribute("p", "comment", "x", STAMP)
        other = storage.open_mailbox("INBOX")
        for view in (box, other):
            view.refresh()
            assert view.attributes() == [] and view.status() == before
        t.commit()
        other.refresh()
        assert [a.value for a in other.attributes()] == ["x"]

    def test_rollback_leaves_nothing(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        self.set_attributes(box, ("p", "kept", "v"))
        before, attributes = box.status(), box.attributes()
        with pytest.raises(RuntimeError), box.transaction() as t:
            t.set_attribute("p", "new", "x", STAMP)
            t.set_attribute("p", "kept", None, STAMP)
            raise RuntimeError("abort")
        t = box.transaction()
        t.set_attribute("s", "other", "y", STAMP)
        t.rollback()
        with pytest.raises(StorageError):
            t.set_attribute("s", "other", "y", STAMP)
        box.refresh()
        assert box.status() == before and box.attributes() == attributes
        reopened = self.reopen(storage).open_mailbox("INBOX")
        assert reopened.attributes() == attributes

    def test_finished_transaction_refuses_writes(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        t = box.transaction()
        t.set_attribute("p", "a", "1", STAMP)
        t.commit()
        with pytest.raises(StorageError):
            t.set_attribute("p", "b", "2", STAMP)

    def test_together_with_messages(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        with box.transaction() as t:
            t.save(msg(1))
            t.set_attribute("p", "comment", "x", STAMP)
            t.raise_highest_modseq(500)
        box.refresh()
        assert [m.uid for m in box.messages()] == [1]
        attribute = self.by_key(box)["p", "comment"]
        assert attribute.value == "x"
        assert 0 < attribute.modseq <= box.status().highest_modseq
        assert box.status().highest_modseq >= 500

    def test_commit_after_delete_fails(self, storage: Storage) -> None:
        storage.create_mailbox("Doomed")
        t = storage.open_mailbox("Doomed").transaction()
        t.set_attribute("p", "comment", "x", STAMP)
        storage.delete_mailbox("Doomed")
        with pytest.raises(StorageError):
            t.commit()
        t.rollback()
        storage.create_mailbox("Doomed")
        assert storage.open_mailbox("Doomed").attributes() == []

    # -- persistence and the mailbox tree

    def test_survive_reopen(self, storage: Storage) -> None:
        storage.create_mailbox("Work")
        box = storage.open_mailbox("Work")
        self.set_attributes(box, ("p", "a", "1"), ("s", "b", "line\none"), ("p", "gone", None))
        self.set_attributes(box, ("p", "c", ""), last_change=STAMP + 1)
        attributes, status = box.attributes(), box.status()
        box = self.reopen(storage).open_mailbox("Work")
        assert box.attributes() == attributes and box.status() == status

    def test_rename_keeps_them(self, storage: Storage) -> None:
        storage.create_mailbox("Work/Sub")
        storage.create_mailbox("Work")
        for name, value in (("Work", "parent"), ("Work/Sub", "child")):
            self.set_attributes(storage.open_mailbox(name), ("p", "comment", value))
            self.set_attributes(storage.open_mailbox(name), ("s", "gone", None))
        expected = {n: storage.open_mailbox(n).attributes() for n in ("Work", "Work/Sub")}
        storage.rename_mailbox("Work", "Moved")
        assert storage.open_mailbox("Moved").attributes() == expected["Work"]
        assert storage.open_mailbox("Moved/Sub").attributes() == expected["Work/Sub"]
        storage = self.reopen(storage)
        assert storage.open_mailbox("Moved/Sub").attributes() == expected["Work/Sub"]

    def test_delete_drops_them(self, storage: Storage) -> None:
        for name in ("Work", "Keep"):
            storage.create_mailbox(name)
            self.set_attributes(storage.open_mailbox(name), ("p", "comment", name))
        storage.delete_mailbox("Work")
        storage.create_mailbox("Work")
        assert storage.open_mailbox("Work").attributes() == []
        assert [a.value for a in storage.open_mailbox("Keep").attributes()] == ["Keep"]
        storage = self.reopen(storage)
        assert storage.open_mailbox("Work").attributes() == []

    def test_deleting_inbox_drops_them(self, storage: Storage) -> None:
        self.set_attributes(storage.open_mailbox("INBOX"), ("p", "comment", "x"))
        storage.delete_mailbox("INBOX")
        assert storage.open_mailbox("INBOX").attributes() == []

    def test_new_guid_keeps_them(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        self.set_attributes(box, ("p", "comment", "x"), ("s", "gone", None))
        attributes = box.attributes()
        guid = bytes(range(1, 17))
        with box.transaction() as t:
            t.set_guid(guid)
        box.refresh()
        assert box.status().guid == guid and box.attributes() == attributes
        box = self.reopen(storage).open_mailbox("INBOX")
        assert box.status().guid == guid and box.attributes() == attributes

    # -- clients' changes

    def test_client_set_is_a_new_non_dsync_change(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        start = int(self.now())
        before = self.external(
            box, lambda: self.external_set_attribute(storage, "INBOX", "p", "c", "v")
        )
        (attribute,) = box.attributes()
        assert (attribute.type, attribute.key, attribute.value) == ("p", "c", "v")
        assert attribute.modseq == box.status().highest_modseq > before
        assert not attribute.from_dsync
        assert start <= attribute.last_change <= int(self.now()) + 1

    def test_client_changes_a_dsync_value(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        self.set_attributes(box, ("p", "c", "dsync"), ("s", "c", "shared"))
        before = self.external(
            box, lambda: self.external_set_attribute(storage, "INBOX", "p", "c", "mine")
        )
        found = self.by_key(box)
        assert (found["p", "c"].value, found["p", "c"].from_dsync) == ("mine", False)
        assert found["p", "c"].modseq == box.status().highest_modseq > before
        assert found["p", "c"].last_change != STAMP
        assert found["s", "c"] == Attribute("s", "c", "shared", STAMP, before, True)

    def test_client_unset_is_remembered(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        self.set_attributes(box, ("p", "c", "dsync"))
        before = self.external(
            box, lambda: self.external_set_attribute(storage, "INBOX", "p", "c", None)
        )
        (attribute,) = box.attributes()
        assert (attribute.value, attribute.from_dsync) == (None, False)
        assert attribute.modseq == box.status().highest_modseq > before
        assert self.reopen(storage).open_mailbox("INBOX").attributes() == [attribute]

    def test_dsync_write_after_client_change(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        self.external(box, lambda: self.external_set_attribute(storage, "INBOX", "s", "c", "v"))
        client_modseq = box.attributes()[0].modseq
        self.set_attributes(box, ("s", "c", "w"))
        assert box.attributes() == [
            Attribute("s", "c", "w", STAMP, box.status().highest_modseq, True)
        ]
        assert box.status().highest_modseq > client_modseq
