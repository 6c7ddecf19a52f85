"""The sdbox driver: the conformance suite (external changes made as another mail
program would: a `u.N` file plus a non-dsync index-log transaction), plus sdbox's own
on-disk details, force-resync and damage."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_conformance import StorageConformance, msg
from storage_conformance_mail import MailConformance
from storage_conformance_model import OPS, Op
from storage_conformance_tree import TreeConformance
from test_storage_maildir import client_set_attribute

from pydsync_server.errors import StorageError
from pydsync_server.storage.base import NewMessage, Storage, guid128
from pydsync_server.storage.dbox_file import Metadata, encode_file, virtual_size
from pydsync_server.storage.dovecot_index import (
    AttributeChange,
    IndexPaths,
    Transaction,
    locked_log,
    read_index,
)
from pydsync_server.storage.sdbox import SdboxStorage
from pydsync_server.storage.sdbox_mailbox import read_file_info

FIXTURES = Path(__file__).parent / "data" / "fixtures" / "dovecot-2.3.19"
SEEN, FLAGGED, ANSWERED, DRAFT = 0x08, 0x02, 0x01, 0x10


def _sdbox(storage: Storage) -> SdboxStorage:
    assert isinstance(storage, SdboxStorage)
    return storage


def client_commit(box_dir: Path, build: Callable[[Transaction, int, dict], None]) -> None:
    """A mail program's index transaction: build(t, next_uid, messages) under the lock."""
    paths = IndexPaths(box_dir)
    with locked_log(paths.log) as locked:
        state = read_index(paths, locked.data).state
        t = Transaction()
        build(t, state.next_uid, state.messages)
        if t:
            locked.append(t)


class _SdboxHooks:
    alt = False

    def make_storage(self, tmp_path: Path) -> Storage:
        return SdboxStorage(tmp_path / "sdbox", alt_root=tmp_path / "alt" if self.alt else None)

    def reopen_storage(self, storage: Storage, tmp_path: Path) -> Storage:
        return self.make_storage(tmp_path)

    def external_deliver(
        self,
        storage: Storage,
        vname: str,
        body: bytes,
        flags: int = 0,
        keywords: frozenset[str] = frozenset(),
    ) -> None:
        box_dir = _sdbox(storage).box_dir(vname)

        def build(t: Transaction, uid: int, _messages: dict) -> None:
            meta = Metadata(secrets.token_hex(16), int(time.time()), virtual_size(body))
            (box_dir / f"u.{uid}").write_bytes(encode_file(int(time.time()), [(body, meta)]))
            t.append([(uid, flags)])
            for kw in sorted(keywords):
                t.keyword_update(kw, True, [uid])

        client_commit(box_dir, build)

    def external_set_flags(
        self, storage: Storage, vname: str, uid: int, flags: int, keywords: frozenset[str]
    ) -> None:
        def build(t: Transaction, _next: int, messages: dict) -> None:
            old = messages[uid]
            if old.flags != flags:
                t.flag_update(uid, uid, flags & ~old.flags, old.flags & ~flags)
            for kw in sorted(keywords ^ old.keywords):
                t.keyword_update(kw, kw in keywords, [uid])

        client_commit(_sdbox(storage).box_dir(vname), build)

    def external_expunge(self, storage: Storage, vname: str, uid: int) -> None:
        box_dir = _sdbox(storage).box_dir(vname)

        def build(t: Transaction, _next: int, _messages: dict) -> None:
            guid = read_file_info(box_dir / f"u.{uid}").guid
            t.expunge_guid([(uid, guid128(guid))])
            (box_dir / f"u.{uid}").unlink()

        client_commit(box_dir, build)

    def external_set_attribute(
        self, storage: Storage, vname: str, type_: str, key: str, value: str | None
    ) -> None:
        s = _sdbox(storage)
        box = s.open_mailbox(vname)
        client_set_attribute(s.root / "dovecot-attributes", box.status().guid, type_, key, value)
        change = AttributeChange(value is not None, type_, key, int(time.time()), len(value or ""))
        client_commit(s.box_dir(vname), lambda t, _n, _m: t.attribute_update([change]))


def _own_model_test() -> Callable[..., None]:
    """The suite's model test under its own name (hypothesis refuses one @given
    function in several classes)."""
    inner = StorageConformance.test_changes_match_model.hypothesis.inner_test  # type: ignore[attr-defined]

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=st.lists(OPS, max_size=12))
    def test_changes_match_model(self: StorageConformance, ops: list[Op]) -> None:
        inner(self, ops)

    return test_changes_match_model


class TestSdbox(_SdboxHooks, StorageConformance):
    test_changes_match_model = _own_model_test()


# -- on disk ---------------------------------------------------------------------------


def test_layout_on_disk(tmp_path: Path) -> None:
    s = SdboxStorage(tmp_path / "sdbox")
    s.create_mailbox("Été/Sub")
    box = s.open_mailbox("Été/Sub")
    with box.transaction() as t:
        t.save(NewMessage(3, "g" * 32, io.BytesIO(b"Subject: x\n\nbody\n"), flags=SEEN))
    box_dir = tmp_path / "sdbox/mailboxes/&AMk-t&AOk-/Sub/dbox-Mails"
    assert sorted(os.listdir(box_dir)) == ["dovecot.index.log", "u.3"]
    data = (box_dir / "u.3").read_bytes()
    assert data.startswith(b"2 M1e C") and b"\x01\x02N " + b" " * 8 + b" 0000000000000011\n" in data
    assert data.endswith(b"\n\x01\x03\nR%x\nV13\nG" % int(time.time()) + b"g" * 32 + b"\n\n") or (
        b"\nG" + b"g" * 32 + b"\n\n" in data
    )
    assert (tmp_path / "sdbox/dovecot-uidvalidity").exists()
    assert [e.vname for e in s.list_mailboxes()] == ["Été", "Été/Sub"]


def test_reads_the_dovecot_fixture(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "sdbox" / "sdbox", tmp_path / "sdbox")
    s = SdboxStorage(tmp_path / "sdbox")
    entries = {e.vname: e for e in s.list_mailboxes()}
    assert sorted(entries) == ["INBOX", "Work", "Work/Projects"]
    assert entries["INBOX"].guid == bytes.fromhex("ff6a793388760b6b0707000083ecc375")
    assert (entries["INBOX"].uid_validity, entries["INBOX"].uid_next) == (1795913354, 4)
    inbox = s.open_mailbox("INBOX")
    got = [(m.uid, m.guid, m.flags, m.keywords, m.modseq) for m in inbox.messages()]
    assert got == [
        (1, "016b793388760b6b0707000083ecc375", SEEN, frozenset(), 7),
        (2, "f358ae3689760b6b6107000083ecc375", ANSWERED | FLAGGED, frozenset({"todo"}), 7),
        (3, "bdd4f2398a760b6b9907000083ecc375", 0, frozenset(), 7),
    ]
    assert inbox.status().highest_modseq == 7
    with inbox.open_message(1) as f:
        assert f.read() == (FIXTURES / "input" / "1.eml").read_bytes()
    assert s.subscriptions() == {"INBOX", "Work"}


# -- force-resync and damage ------------------------------------------------------------


def _filled(tmp_path: Path) -> tuple[SdboxStorage, Path]:
    s = SdboxStorage(tmp_path / "sdbox")
    box = s.open_mailbox("INBOX")
    with box.transaction() as t:
        for uid in (1, 2, 3):
            t.save(msg(uid, b"Subject: %d\n\nbody\n" % uid, flags=SEEN if uid == 2 else 0))
        t.update_flags(3, add_keywords=frozenset({"kw"}))
    return s, s.box_dir("INBOX")


def test_force_resync_keeps_flags_and_identity(tmp_path: Path) -> None:
    s, box_dir = _filled(tmp_path)
    before = s.open_mailbox("INBOX")
    status, messages = before.status(), before.messages()
    assert s.force_resync("INBOX") == []
    after = s.open_mailbox("INBOX")
    assert after.messages() == messages
    st = after.status()
    assert (st.guid, st.uid_validity, st.uid_next) == (status.guid, status.uid_validity, 4)
    assert st.highest_modseq >= status.highest_modseq
    hdr = read_index(IndexPaths(box_dir)).state.ext_header("dbox-hdr")
    assert hdr is not None and struct.unpack_from("<I", hdr)[0] == 1  # rebuild_count


def test_lost_index_is_rebuilt_from_the_files(tmp_path: Path) -> None:
    s, box_dir = _filled(tmp_path)
    old = s.open_mailbox("INBOX").status()
    (box_dir / "dovecot.index.log").unlink()
    box = s.open_mailbox("INBOX")
    assert [(m.uid, m.flags) for m in box.messages()] == [(1, 0), (2, 0), (3, 0)]
    assert box.status().uid_validity != old.uid_validity and box.status().guid != old.guid


def test_truncated_file_is_reported_not_fatal(tmp_path: Path) -> None:
    s, box_dir = _filled(tmp_path)
    data = (box_dir / "u.2").read_bytes()
    (box_dir / "u.2").write_bytes(data[:40])
    box = s.open_mailbox("INBOX")
    assert [m.uid for m in box.messages()] == [1, 3]
    with pytest.raises(StorageError, match="u.2"):
        box.open_message(2)
    skipped = s.force_resync("INBOX")
    assert len(skipped) == 1 and "u.2" in skipped[0]
    assert [m.uid for m in s.open_mailbox("INBOX").messages()] == [1, 3]


def test_wrong_magic_file_is_skipped(tmp_path: Path) -> None:
    s, box_dir = _filled(tmp_path)
    (box_dir / "u.1").write_bytes(b"garbage that is no dbox file\n")
    assert [m.uid for m in s.open_mailbox("INBOX").messages()] == [2, 3]


def test_broken_log_record_keeps_what_is_readable(tmp_path: Path) -> None:
    s, box_dir = _filled(tmp_path)
    box = s.open_mailbox("INBOX")
    with box.transaction() as t:
        t.update_flags(1, add_flags=FLAGGED)
    log = box_dir / "dovecot.index.log"
    data = bytearray(log.read_bytes())
    data[-16:-12] = b"\x80\x80\x80\x81"  # the tail update: a size below the minimum
    log.write_bytes(bytes(data))
    box.refresh()
    assert box.problem is not None and [m.uid for m in box.messages()] == [1, 2, 3]
    with pytest.raises(StorageError, match="force-resync"):
        with box.transaction() as t:
            t.update_flags(2, add_flags=FLAGGED)
    s.force_resync("INBOX")
    box = s.open_mailbox("INBOX")
    assert box.problem is None and [m.uid for m in box.messages()] == [1, 2, 3]


def test_wrong_log_magic_is_a_clear_error(tmp_path: Path) -> None:
    s, box_dir = _filled(tmp_path)
    log = box_dir / "dovecot.index.log"
    log.write_bytes(b"\x09" + log.read_bytes()[1:])
    with pytest.raises(StorageError, match="not a transaction log.*force-resync"):
        s.open_mailbox("INBOX")
    s.force_resync("INBOX")
    assert [m.uid for m in s.open_mailbox("INBOX").messages()] == [1, 2, 3]


class TestSdboxAlt(_SdboxHooks, TreeConformance, MailConformance):
    """With `:ALT=` the tree and mail operations keep both roots in step."""

    alt = True


def test_alt_storage_is_read_and_followed(tmp_path: Path) -> None:
    s = SdboxStorage(tmp_path / "sdbox", alt_root=tmp_path / "alt")
    assert os.readlink(tmp_path / "sdbox" / "dbox-alt-root") == str(tmp_path / "alt")
    s.create_mailbox("Box")
    box = s.open_mailbox("Box")
    with box.transaction() as t:
        t.save(msg(1, b"in alt"))
    alt_dir = tmp_path / "alt/mailboxes/Box/dbox-Mails"
    alt_dir.mkdir(parents=True)
    os.rename(s.box_dir("Box") / "u.1", alt_dir / "u.1")  # as `doveadm altmove` would
    box.refresh()
    assert self_body(box, 1) == b"in alt"
    s.rename_mailbox("Box", "Moved")
    assert (tmp_path / "alt/mailboxes/Moved/dbox-Mails/u.1").exists()
    assert self_body(s.open_mailbox("Moved"), 1) == b"in alt"
    s.delete_mailbox("Moved")
    assert not (tmp_path / "alt/mailboxes/Moved/dbox-Mails").exists()


def self_body(box: object, uid: int) -> bytes:
    from pydsync_server.storage.base import Mailbox

    assert isinstance(box, Mailbox)
    with box.open_message(uid) as f:
        return f.read()


def test_location_opens_sdbox(tmp_path: Path) -> None:
    from pydsync_server.storage.location import UserEnv, open_storage, parse_location

    loc = parse_location(f"sdbox:{tmp_path}/s:ALT={tmp_path}/a:UTF-8", UserEnv("u", str(tmp_path)))
    s = open_storage(loc, clock=time.time, hostname="h")
    assert isinstance(s, SdboxStorage) and s.alt_root == tmp_path / "a"
    s.create_mailbox("Été")
    assert (tmp_path / "s/mailboxes/Été/dbox-Mails").is_dir()
