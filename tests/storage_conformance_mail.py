"""Conformance tests of messages: transactions, status, modseqs and change tracking."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from storage_conformance_base import ConformanceBase, msg

from pydsync_server.errors import MailboxNotFoundError, StorageError
from pydsync_server.storage.base import MessageChange, NewMessage, Storage, Transaction, guid128

SEEN, FLAGGED, ANSWERED, DELETED, DRAFT, RECENT = 0x08, 0x02, 0x01, 0x04, 0x10, 0x20

BODIES = {
    "crlf": b"From: a@example.org\r\nSubject: hi\r\n\r\nline 1\r\nline 2\r\n",
    "bare-lf": b"From: a@example.org\nSubject: hi\n\nline 1\nline 2\n",
    "mixed": b"Subject: m\r\n\nx\ry\r\n\n",
    "no-final-newline": b"Subject: n\r\n\r\nno newline at the end",
    "empty": b"",
    "8bit": b"Subject: caf\xc3\xa9\r\n\r\n\xff\xfe\x00\x80\x1b\r\n",
    "from-lines": b"Subject: f\n\nFrom here\n>From there\n.\n..\n",
    "large": b"Subject: big\r\n\r\n" + b"0123456789abcdef" * 20000,
}


class MailConformance(ConformanceBase):
    """Transactions and what status()/messages()/open_message() report afterwards."""

    @pytest.mark.parametrize("name", sorted(BODIES))
    def test_body_is_byte_exact(self, storage: Storage, name: str) -> None:
        body = BODIES[name]
        box = self.save(storage, "INBOX", msg(1, body))
        assert self.body(box, 1) == body
        info = self.infos(box)[1]
        assert info.physical_size == len(body)
        assert info.virtual_size == len(body) + body.count(b"\n") - body.count(b"\r\n")
        assert self.body(self.reopen(storage).open_mailbox("INBOX"), 1) == body

    def test_save_keeps_what_was_given(self, storage: Storage) -> None:
        kws = frozenset({"$Forwarded", "Work", "$label1"})
        box = self.save(
            storage,
            "INBOX",
            msg(1, guid="0123456789abcdef0123456789abcdef", flags=SEEN | FLAGGED),
            msg(2, guid="1795913349.M1P2.host", keywords=kws, received_date=1_000_000_000),
            msg(3, guid="x", flags=ANSWERED | DELETED | DRAFT | SEEN | FLAGGED),
        )
        infos = self.infos(box)
        assert sorted(infos) == [1, 2, 3]
        assert (infos[1].guid, infos[1].flags, infos[1].keywords) == (
            "0123456789abcdef0123456789abcdef",
            SEEN | FLAGGED,
            frozenset(),
        )
        assert (infos[2].guid, infos[2].keywords, infos[2].received_date) == (
            "1795913349.M1P2.host",
            kws,
            1_000_000_000,
        )
        assert infos[3].flags == 0x1F
        assert self.reopen(storage).open_mailbox("INBOX").messages() == box.messages()

    def test_save_without_guid_gets_unique_ones(self, storage: Storage) -> None:
        box = storage.open_mailbox("INBOX")
        with box.transaction() as t:
            for uid in (1, 2, 3):
                t.save(NewMessage(uid=uid, guid="", body=io.BytesIO(b"same body")))
        box.refresh()
        guids = [m.guid for m in box.messages()]
        assert all(guids) and len(set(guids)) == len(guids) == 3

    def test_recent_is_never_stored(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1, flags=SEEN | RECENT))
        with box.transaction() as t:
            t.update_flags(1, add_flags=RECENT | FLAGGED)
        box.refresh()
        assert self.infos(box)[1].flags == SEEN | FLAGGED

    def test_pop3_fields(self, storage: Storage) -> None:
        if not self.supports_pop3_fields:
            pytest.skip("driver cannot store POP3 UIDL/order")
        message = NewMessage(1, "g", io.BytesIO(b"x"), pop3_uidl="uidl-1", pop3_order=7)
        self.save(storage, "INBOX", message)
        info = self.infos(self.reopen(storage).open_mailbox("INBOX"))[1]
        assert (info.pop3_uidl, info.pop3_order) == ("uidl-1", 7)

    def test_uids_any_order_and_gaps(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(9, b"nine"), msg(3, b"three"), msg(5, b"five"))
        assert [m.uid for m in box.messages()] == [3, 5, 9]
        assert [self.body(box, u) for u in (3, 5, 9)] == [b"three", b"five", b"nine"]
        st = box.status()
        assert (st.uid_next, st.messages) == (10, 3)

    def test_save_refuses_used_uids(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1), msg(2))
        for bad in ([msg(2)], [msg(1)], [msg(4), msg(4)]):
            t = box.transaction()
            with pytest.raises(StorageError):
                for message in bad:
                    t.save(message)
                t.commit()
            t.rollback()
        box.refresh()
        assert [m.uid for m in box.messages()] == [1, 2] and box.status().uid_next == 3

    def test_nothing_visible_before_commit(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1))
        before, messages = box.status(), box.messages()
        t = box.transaction()
        t.save(msg(2))
        t.update_flags(1, add_flags=SEEN, add_keywords=frozenset({"kw"}))
        t.expunge(1)
        t.set_uid_validity(before.uid_validity + 1)
        t.raise_uid_next(50)
        t.raise_highest_modseq(before.highest_modseq + 100)
        t.raise_first_recent_uid(2)
        other = storage.open_mailbox("INBOX")
        for view in (box, other):
            view.refresh()
            assert view.status() == before and view.messages() == messages
        t.commit()
        box.refresh()
        st = box.status()
        assert [m.uid for m in box.messages()] == [2]
        assert (st.uid_validity, st.uid_next, st.first_recent_uid) == (
            before.uid_validity + 1,
            50,
            2,
        )
        assert st.highest_modseq >= before.highest_modseq + 100

    def test_rollback_leaves_nothing(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1))
        before, messages = box.status(), box.messages()
        with pytest.raises(RuntimeError), box.transaction() as t:
            t.save(msg(2))
            t.expunge(1)
            t.set_guid(b"\x09" * 16)
            raise RuntimeError("abort")
        t = box.transaction()
        t.update_flags(1, add_flags=SEEN)
        t.move(1, 7)
        t.raise_uid_next(90)
        t.rollback()
        with pytest.raises(StorageError):
            t.commit()
        box.refresh()
        assert box.status() == before and box.messages() == messages
        assert box.changes_since(0) == []

    def test_finished_transaction_refuses_writes(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1))
        t = box.transaction()
        t.commit()
        with pytest.raises(StorageError):
            t.save(msg(2))
        with pytest.raises(StorageError):
            t.commit()

    def test_update_flags(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1, flags=SEEN, keywords=frozenset({"a", "b"})))
        old = self.infos(box)[1]
        with box.transaction() as t:
            t.update_flags(1, add_flags=FLAGGED | ANSWERED, remove_flags=SEEN)
            t.update_flags(1, add_keywords=frozenset({"c"}), remove_keywords=frozenset({"a"}))
        box.refresh()
        new = self.infos(box)[1]
        assert (new.flags, new.keywords) == (FLAGGED | ANSWERED, frozenset({"b", "c"}))
        assert new.modseq > old.modseq and new.guid == old.guid
        assert box.status().highest_modseq >= new.modseq

    def test_update_flags_min_modseq(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1), msg(2, min_modseq=500))
        assert self.infos(box)[2].modseq >= 500
        with box.transaction() as t:
            t.update_flags(1, min_modseq=1000)  # raises the modseq even without a flag change
        box.refresh()
        assert self.infos(box)[1].modseq >= 1000 and box.status().highest_modseq >= 1000

    def test_writes_to_missing_uids_are_dropped(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1))
        before = box.messages()
        with box.transaction() as t:
            t.update_flags(42, add_flags=SEEN)
            t.expunge(43)
        box.refresh()
        assert box.messages() == before and box.changes_since(0) == []

    def test_expunge(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1), msg(2))
        with box.transaction() as t:
            t.expunge(1)
        box.refresh()
        assert [m.uid for m in box.messages()] == [2] and box.status().messages == 1
        assert box.status().uid_next == 3
        with pytest.raises(MailboxNotFoundError):
            self.body(box, 1)
        assert [m.uid for m in self.reopen(storage).open_mailbox("INBOX").messages()] == [2]

    def test_move_gives_new_uid(self, storage: Storage) -> None:
        box = self.save(
            storage,
            "INBOX",
            msg(1, b"moved", flags=SEEN, keywords=frozenset({"k"}), received_date=12345678),
        )
        old = self.infos(box)[1]
        with box.transaction() as t:
            t.move(1, 5)
        box.refresh()
        new = self.infos(box)
        assert list(new) == [5] and self.body(box, 5) == b"moved"
        assert (new[5].guid, new[5].flags, new[5].keywords, new[5].received_date) == (
            old.guid,
            old.flags,
            old.keywords,
            old.received_date,
        )
        assert box.status().uid_next == 6

    def test_mailbox_identity_updates(self, storage: Storage) -> None:
        storage.create_mailbox("Box")
        box = storage.open_mailbox("Box")
        with box.transaction() as t:
            t.set_uid_validity(4242)
            t.set_guid(b"\x42" * 16)
        for s in (storage, self.reopen(storage)):
            st = s.open_mailbox("Box").status()
            e = self.entry(s, "Box")
            assert (st.guid, st.uid_validity) == (b"\x42" * 16, 4242)
            assert e is not None and (e.guid, e.uid_validity) == (b"\x42" * 16, 4242)

    def test_raises_only_raise(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1))
        with box.transaction() as t:
            t.raise_uid_next(20)
            t.raise_first_recent_uid(8)
            t.raise_highest_modseq(300)
        with box.transaction() as t:
            t.raise_uid_next(10)
            t.raise_first_recent_uid(4)
            t.raise_highest_modseq(200)
        box.refresh()
        st = box.status()
        assert (st.uid_next, st.first_recent_uid, st.highest_modseq) == (20, 8, 300)
        with box.transaction() as t:
            t.update_flags(1, add_flags=SEEN)
        box.refresh()
        assert self.infos(box)[1].modseq > 300 and box.status().highest_modseq > 300
        st = self.reopen(storage).open_mailbox("INBOX").status()
        assert (st.uid_next, st.first_recent_uid) == (20, 8) and st.highest_modseq > 300

    def test_modseqs_strictly_increase(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1), msg(2))
        steps: list[Callable[[Transaction], None]] = [
            lambda t: t.save(msg(3)),
            lambda t: t.update_flags(1, add_flags=SEEN),
            lambda t: t.update_flags(2, add_keywords=frozenset({"x"})),
            lambda t: t.expunge(1),
            lambda t: t.move(3, 10),
        ]
        for step in steps:
            box.refresh()
            before = box.status().highest_modseq
            with box.transaction() as t:
                step(t)
            box.refresh()
            after = box.status().highest_modseq
            assert after > before
            assert max(m.modseq for m in box.messages()) <= after

    def test_status_matches_messages(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(2), msg(4), msg(7))
        self.external_expunge(storage, "INBOX", 4)
        self.deliver(storage, "INBOX", b"new")
        box.refresh()
        st, messages = box.status(), box.messages()
        assert st.messages == len(messages) == 3
        assert [m.uid for m in messages] == sorted(m.uid for m in messages)
        assert st.uid_next > messages[-1].uid
        assert st.highest_modseq >= max(m.modseq for m in messages)
        e = self.entry(storage, "INBOX")
        assert e is not None and (e.guid, e.uid_validity, e.uid_next) == (
            st.guid,
            st.uid_validity,
            st.uid_next,
        )

    def test_delivery_during_transaction_keeps_both(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1))
        t = box.transaction()
        t.save(msg(2, b"from dsync", guid="d" * 32))
        delivered = self.deliver(storage, "INBOX", b"from the MDA")
        t.commit()
        box.refresh()
        bodies = {self.body(box, m.uid): m.uid for m in box.messages()}
        assert set(bodies) == {msg(1).body.read(), b"from dsync", b"from the MDA"}
        assert bodies[b"from the MDA"] == delivered
        assert bodies[b"from dsync"] >= 2 and bodies[b"from dsync"] != delivered
        assert box.status().uid_next > max(bodies.values())

    def test_commit_after_delete_fails(self, storage: Storage) -> None:
        storage.create_mailbox("Doomed")
        box = storage.open_mailbox("Doomed")
        t = box.transaction()
        t.save(msg(1))
        storage.delete_mailbox("Doomed")
        with pytest.raises(StorageError):
            t.commit()
        t.rollback()
        with pytest.raises(MailboxNotFoundError):
            box.refresh()
        assert self.entry(storage, "Doomed") is None


class ChangeConformance(ConformanceBase):
    """`changes_since`: only non-dsync changes and expunges, merged per UID (§3.4)."""

    def test_dsync_writes_are_not_reported(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1), msg(2))
        with box.transaction() as t:
            t.update_flags(1, add_flags=SEEN, add_keywords=frozenset({"k"}))
            t.save(msg(3))
            t.raise_highest_modseq(77)
        box.refresh()
        assert box.changes_since(0) == []

    def test_dsync_expunge_is_reported_with_guid128(self, storage: Storage) -> None:
        hex_guid, name_guid = "00112233445566778899aabbccddeeff", "1795913349.M1P2.host"
        box = self.save(storage, "INBOX", msg(1, guid=hex_guid), msg(2, guid=name_guid))
        start = box.status().highest_modseq
        with box.transaction() as t:
            t.expunge(1)
            t.expunge(2)
        box.refresh()
        changes = box.changes_since(start)
        assert changes is not None
        assert [(c.uid, c.expunged, c.guid128) for c in changes] == [
            (1, True, bytes.fromhex(hex_guid)),
            (2, True, guid128(name_guid)),
        ]
        for c in changes:
            assert start < c.modseq <= box.status().highest_modseq
            assert (c.add_flags, c.remove_flags, c.keyword_ops) == (0, 0, ())

    def test_move_reports_old_uid_expunged(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1, guid="m" * 5))
        with box.transaction() as t:
            t.move(1, 4)
        box.refresh()
        changes = box.changes_since(0)
        assert changes is not None
        assert [(c.uid, c.expunged, c.guid128) for c in changes] == [(1, True, guid128("mmmmm"))]

    def test_delivery_is_not_reported(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1))
        start = box.status().highest_modseq
        uid = self.deliver(storage, "INBOX", b"Subject: new\r\n\r\n", SEEN, frozenset({"k"}))
        box.refresh()
        info = self.infos(box)[uid]
        assert uid >= 2 and (info.flags, info.keywords) == (SEEN, frozenset({"k"}))
        assert info.modseq > start and box.status().highest_modseq >= info.modseq
        assert box.changes_since(start) == [] and box.changes_since(0) == []

    def test_client_flag_change_is_reported(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1, flags=SEEN, keywords=frozenset({"old"})))
        start = box.status().highest_modseq
        self.external_set_flags(storage, "INBOX", 1, FLAGGED, frozenset({"new"}))
        box.refresh()
        info = self.infos(box)[1]
        assert (info.flags, info.keywords) == (FLAGGED, frozenset({"new"}))
        assert info.modseq > start and box.status().highest_modseq == info.modseq
        changes = box.changes_since(start)
        assert changes is not None and len(changes) == 1
        c = changes[0]
        assert (c.uid, c.modseq, c.expunged, c.add_flags, c.remove_flags) == (
            1,
            info.modseq,
            False,
            FLAGGED,
            SEEN,
        )
        assert sorted(c.keyword_ops) == ["+new", "-old"]
        assert box.changes_since(info.modseq) == []

    def test_client_changes_merge_per_uid(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1), msg(2))
        start = box.status().highest_modseq
        for flags, kws in [
            (SEEN, frozenset({"a"})),
            (SEEN | FLAGGED, frozenset({"a", "b"})),
            (FLAGGED, frozenset({"b"})),
        ]:
            self.external_set_flags(storage, "INBOX", 1, flags, kws)
            box.refresh()
        changes = box.changes_since(start)
        assert changes is not None and len(changes) == 1
        c = changes[0]
        assert (c.add_flags, c.remove_flags) == (FLAGGED, SEEN)
        assert sorted(c.keyword_ops) == ["+b", "-a"]
        assert c.modseq == self.infos(box)[1].modseq == box.status().highest_modseq

    def test_expunge_replaces_flag_record(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1, guid="e" * 32), msg(2))
        self.external_set_flags(storage, "INBOX", 1, SEEN, frozenset({"x"}))
        box.refresh()
        self.external_expunge(storage, "INBOX", 1)
        box.refresh()
        assert box.changes_since(0) == [
            MessageChange(1, box.status().highest_modseq, expunged=True, guid128=b"\xee" * 16)
        ]

    def test_changes_since_is_a_window(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1), msg(2), msg(3))
        self.external_set_flags(storage, "INBOX", 3, SEEN, frozenset())
        box.refresh()
        first = box.status().highest_modseq
        self.external_set_flags(storage, "INBOX", 1, DRAFT, frozenset())
        box.refresh()
        self.external_set_flags(storage, "INBOX", 3, SEEN | FLAGGED, frozenset())
        box.refresh()
        changes = box.changes_since(first)
        assert changes is not None
        assert [(c.uid, c.add_flags, c.remove_flags) for c in changes] == [
            (1, DRAFT, 0),
            (3, FLAGGED, 0),
        ]
        everything = box.changes_since(0)
        assert everything is not None
        assert [(c.uid, c.add_flags) for c in everything] == [(1, DRAFT), (3, SEEN | FLAGGED)]
        assert box.changes_since(box.status().highest_modseq) == []

    def test_changes_survive_reopen(self, storage: Storage) -> None:
        box = self.save(storage, "INBOX", msg(1), msg(2), msg(3))
        start = box.status().highest_modseq
        self.external_set_flags(storage, "INBOX", 1, SEEN, frozenset({"k"}))
        self.external_expunge(storage, "INBOX", 2)
        with box.transaction() as t:
            t.expunge(3)
        box.refresh()
        changes, messages = box.changes_since(start), box.messages()
        st = box.status()
        box = self.reopen(storage).open_mailbox("INBOX")
        assert box.changes_since(start) == changes and box.messages() == messages
        assert box.status() == st
