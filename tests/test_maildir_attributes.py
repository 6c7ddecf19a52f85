"""Mailbox attributes of the maildir driver on disk: Dovecot's file dict
`dovecot-attributes` (storage-formats.md §7.7), its dotlock, and the change stamps kept
in the pydsync-changes sidecar. The behaviour every driver shares is in
storage_conformance_attributes.py."""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from pathlib import Path

import pytest

from pydsync_server.errors import MailError, StorageError
from pydsync_server.storage import maildir_attributes, maildir_folder, maildir_tracker
from pydsync_server.storage.base import Attribute
from pydsync_server.storage.maildir import MaildirStorage
from pydsync_server.storage.maildir_mailbox import MaildirMailbox

STAMP = 1_700_000_000


def _set(box: MaildirMailbox, *changes: tuple[str, str, str | None]) -> None:
    with box.transaction() as t:
        for type_, key, value in changes:
            t.set_attribute(type_, key, value, STAMP)
    box.refresh()


def _pairs(data: bytes) -> set[tuple[bytes, bytes]]:
    """A dict file's entries; their order means nothing."""
    lines = data.split(b"\n")[:-1]
    return set(zip(lines[::2], lines[1::2], strict=True))


def _dict_file(storage: MaildirStorage) -> Path:
    return storage.root / "dovecot-attributes"


def test_file_is_dovecots_dict_format(tmp_path: Path) -> None:
    storage = MaildirStorage(tmp_path / "Maildir")
    box = storage.open_mailbox("INBOX")
    guid = box.status().guid.hex()
    _set(box, ("p", "comment", "hello world"), ("s", "comment", "multi\tline\nvalue\x01"))
    _set(box, ("p", "empty", ""))
    # Alternating key/value lines, tab-escaped, as Dovecot 2.3.19 writes it (§7.7).
    assert (
        _dict_file(storage).read_bytes()
        == (
            f"priv/{guid}/comment\nhello world\n"
            f"shared/{guid}/comment\nmulti\x01tline\x01nvalue\x011\n"
            f"priv/{guid}/empty\n\n"
        ).encode()
    )
    assert stat.S_IMODE(_dict_file(storage).stat().st_mode) == 0o600
    assert not (storage.root / "dovecot-attributes.lock").exists()
    _set(box, ("p", "comment", None), ("p", "empty", None), ("s", "comment", None))
    assert _dict_file(storage).read_bytes() == b""


def test_values_dovecot_wrote_have_unknown_stamps(tmp_path: Path) -> None:
    storage = MaildirStorage(tmp_path / "Maildir")
    storage.create_mailbox("Work")
    guids = {n: storage.open_mailbox(n).status().guid.hex() for n in ("INBOX", "Work")}
    for path in storage.root.rglob("pydsync-changes"):
        path.unlink()  # as if pydsync never looked at the store
    _dict_file(storage).write_bytes(
        f"priv/{guids['Work']}/comment\nhello world\n"
        f"shared/{guids['INBOX']}/vendor/vendor.dovecot/pvt/server/vendor/x\nsrv\n"
        f"shared/{guids['Work']}/comment\nshared c\n"
        f"priv/{'0' * 32}/comment\nan orphan\n"
        f"torn/{guids['Work']}\n".encode()  # a key without its value line
    )
    storage = MaildirStorage(tmp_path / "Maildir")  # a run that never looked before
    box = storage.open_mailbox("Work")
    assert box.attributes() == [
        Attribute("p", "comment", "hello world", 0, 0, False),
        Attribute("s", "comment", "shared c", 0, 0, False),
    ]
    assert box.status().highest_modseq == 1
    (inbox,) = storage.open_mailbox("INBOX").attributes()
    assert (inbox.key, inbox.value) == ("vendor/vendor.dovecot/pvt/server/vendor/x", "srv")


def test_other_entries_are_kept(tmp_path: Path) -> None:
    storage = MaildirStorage(tmp_path / "Maildir")
    foreign = b"priv/" + b"0" * 32 + b"/comment\nan orphan\nvendor/other\nx\x01ty\n"
    _dict_file(storage).write_bytes(foreign)
    box = storage.open_mailbox("INBOX")
    _set(box, ("p", "comment", "mine"))
    guid = box.status().guid.hex()
    assert _dict_file(storage).read_bytes() == foreign + f"priv/{guid}/comment\nmine\n".encode()


def test_delete_removes_only_that_mailboxs_entries(tmp_path: Path) -> None:
    storage = MaildirStorage(tmp_path / "Maildir")
    storage.create_mailbox("Work")
    _set(storage.open_mailbox("Work"), ("p", "a", "1"), ("s", "b", "2"))
    _set(storage.open_mailbox("INBOX"), ("p", "a", "inbox"))
    inbox_guid = storage.open_mailbox("INBOX").status().guid.hex()
    storage.delete_mailbox("Work")
    assert _dict_file(storage).read_bytes() == f"priv/{inbox_guid}/a\ninbox\n".encode()
    storage.delete_mailbox("INBOX")
    assert _dict_file(storage).read_bytes() == b""


def test_new_guid_moves_the_entries(tmp_path: Path) -> None:
    storage = MaildirStorage(tmp_path / "Maildir")
    box = storage.open_mailbox("INBOX")
    _set(box, ("p", "a", "1"), ("s", "b", "2"))
    new = bytes(range(16))
    stale = f"priv/{new.hex()}/orphan\nold\n"  # values an earlier mailbox left behind
    _dict_file(storage).write_bytes(_dict_file(storage).read_bytes() + stale.encode())
    with box.transaction() as t:
        t.set_guid(new)
        t.set_attribute("p", "c", "3", STAMP)
    box.refresh()
    text = _dict_file(storage).read_text()
    assert sorted(text.splitlines()[::2]) == [f"priv/{new.hex()}/a", f"priv/{new.hex()}/c",
                                              f"shared/{new.hex()}/b"]  # fmt: skip
    assert [(a.key, a.value) for a in box.attributes()] == [("a", "1"), ("c", "3"), ("b", "2")]


def test_elsewhere_when_configured(tmp_path: Path) -> None:
    path = tmp_path / "home" / "dovecot-attributes"
    storage = MaildirStorage(tmp_path / "home" / "Maildir", attribute_dict=path)
    _set(storage.open_mailbox("INBOX"), ("p", "a", "1"))
    assert path.read_text().endswith("/a\n1\n") and not _dict_file(storage).exists()


def test_sidecar_from_before_attributes(tmp_path: Path) -> None:
    storage = MaildirStorage(tmp_path / "Maildir")
    box = storage.open_mailbox("INBOX")
    _set(box, ("p", "a", "1"))
    status = box.status()
    sidecar = storage.paths("INBOX").sidecar
    doc = json.loads(sidecar.read_bytes())
    del doc["attrs"]
    sidecar.write_text(json.dumps(doc))
    box.refresh()  # the values are taken as they are, with unknown stamps
    assert box.attributes() == [Attribute("p", "a", "1", 0, 0, False)]
    assert box.status() == status


def test_lost_uidlist_orphans_them(tmp_path: Path) -> None:
    """A new mailbox GUID means other dict keys: Dovecot loses the values too (§7.7)."""
    storage = MaildirStorage(tmp_path / "Maildir")
    _set(storage.open_mailbox("INBOX"), ("p", "a", "1"))
    storage.paths("INBOX").uidlist.unlink()
    assert storage.open_mailbox("INBOX").attributes() == []


def test_deletions_remembered_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maildir_tracker, "MAX_TOMBSTONES", 3)
    box = MaildirStorage(tmp_path).open_mailbox("INBOX")
    _set(box, ("p", "live", "v"))
    for i in range(5):
        _set(box, ("p", f"gone{i}", None))
    assert [a.key for a in box.attributes()] == ["gone2", "gone3", "gone4", "live"]


# -- concurrency and failures ---------------------------------------------------------------


def test_failed_commit_restores_the_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = MaildirStorage(tmp_path / "Maildir")
    box = storage.open_mailbox("INBOX")
    _set(box, ("p", "a", "1"), ("p", "b", "2"))
    before, status, attributes = _dict_file(storage).read_bytes(), box.status(), box.attributes()
    real = maildir_folder.write_synced

    def fail_uidlist(path: Path, data: bytes, *, exclusive: bool = False) -> None:
        if path.name == "dovecot-uidlist.tmp":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data, exclusive=exclusive)

    monkeypatch.setattr(maildir_folder, "write_synced", fail_uidlist)
    t = box.transaction()
    t.set_attribute("p", "a", "changed", STAMP)
    t.set_attribute("p", "b", None, STAMP)
    t.set_attribute("s", "new", "x", STAMP)
    t.set_guid(bytes(range(16)))  # forces a uidlist rewrite
    with pytest.raises(StorageError) as err:
        t.commit()
    assert err.value.mail_error == MailError.NOQUOTA
    assert _pairs(_dict_file(storage).read_bytes()) == _pairs(before)
    box.refresh()
    assert box.status() == status and box.attributes() == attributes


def test_waits_for_a_live_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maildir_attributes, "_LOCK_TIMEOUT", 0.2)
    storage = MaildirStorage(tmp_path / "Maildir")
    box = storage.open_mailbox("INBOX")
    lock = storage.root / "dovecot-attributes.lock"
    lock.write_text("")  # Dovecot writing the dict
    with pytest.raises(StorageError, match="Timeout"):
        _set(box, ("p", "a", "1"))
    assert lock.exists() and not _dict_file(storage).exists()
    box.refresh()
    assert box.attributes() == []
    old = time.time() - 600
    os.utime(lock, (old, old))  # left behind by a crash: broken
    _set(box, ("p", "a", "1"))
    assert [a.value for a in box.attributes()] == ["1"] and not lock.exists()
