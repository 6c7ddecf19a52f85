"""Mailbox attributes shared with the real Dovecot through its file dict: what pydsync
writes `doveadm mailbox metadata get` reads, and what doveadm writes pydsync notices as
a client's change (storage-formats.md §7.7, dsync-algorithm.md §5).

Needs doveadm and the `vmail` user; the tests fail (never skip) without them.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dovecot import DovecotEnv, DovecotUser, require_dovecot

from pydsync_server.storage.base import Attribute
from pydsync_server.storage.maildir import MaildirStorage

pytestmark = pytest.mark.dovecot

STAMP = 1_700_000_000


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DovecotEnv]:
    """Dovecot with `mail_attribute_dict = file:%h/Maildir/dovecot-attributes` (2.3; the
    2.4 equivalent likewise), where the maildir driver keeps the dict by default."""
    require_dovecot()
    with DovecotEnv(tmp_path, attributes=True) as env:
        text = env.config.read_text()
        assert "/dovecot-attributes" in text
        env.config.write_text(text.replace("/dovecot-attributes", "/Maildir/dovecot-attributes"))
        yield env


def _chown_vmail(root: Path) -> None:
    """pydsync runs as root here; Dovecot as vmail must be able to rewrite the files."""
    entry = pwd.getpwnam("vmail")
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for name in filenames:
            os.lchown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)


def _pydsync_store(user: DovecotUser, attribute_dict: Path | None = None) -> MaildirStorage:
    storage = MaildirStorage(user.mail_path, attribute_dict=attribute_dict)
    storage.create_mailbox("Work")
    _chown_vmail(user.home)
    return storage


def test_dovecot_reads_what_pydsync_wrote(env: DovecotEnv) -> None:
    user = env.user("a")
    storage = _pydsync_store(user)
    values = {
        ("INBOX", "/private/comment"): "hello world",
        ("INBOX", "/shared/comment"): "shared \u00e9t\u00e9 \u65e5\u672c",
        ("Work", "/private/vendor/vendor.example/x"): "w",
    }
    for vname in ("INBOX", "Work"):
        box = storage.open_mailbox(vname)
        with box.transaction() as t:
            for (name, key), value in values.items():
                if name == vname:
                    type_, _, bare = key[1:].partition("/")
                    t.set_attribute(type_[0], bare, value, STAMP)
    _chown_vmail(user.home)
    for (vname, key), value in values.items():
        assert user.metadata_get(vname, key) == value

    box = storage.open_mailbox("INBOX")
    with box.transaction() as t:
        t.set_attribute("p", "comment", None, STAMP)
    _chown_vmail(user.home)
    assert user.metadata_get("INBOX", "/private/comment") == ""
    assert user.metadata_get("INBOX", "/shared/comment") == values["INBOX", "/shared/comment"]
    # Dovecot can still change the file pydsync wrote, through the same dotlock.
    user.metadata_set("Work", "/shared/comment", "from dovecot")
    work = storage.open_mailbox("Work")
    assert [(a.key, a.value) for a in work.attributes()] == [
        ("vendor/vendor.example/x", "w"),
        ("comment", "from dovecot"),
    ]


def test_pydsync_notices_dovecot_changes(env: DovecotEnv) -> None:
    user = env.user("b")
    storage = _pydsync_store(user)
    box = storage.open_mailbox("INBOX")
    before = box.status().highest_modseq
    _chown_vmail(user.home)

    start = int(time.time())
    user.metadata_set("INBOX", "/private/comment", "set by dovecot")
    user.metadata_set("INBOX", "/shared/comment", "tab\there")
    box.refresh()
    modseq = box.status().highest_modseq
    # both seen by one refresh: one change, stepped randomly (pitfall 22)
    assert before < modseq <= before + (1 << 16)
    attributes = box.attributes()
    assert [(a.type, a.key, a.value, a.modseq, a.from_dsync) for a in attributes] == [
        ("p", "comment", "set by dovecot", modseq, False),
        ("s", "comment", "tab\there", modseq, False),
    ]
    assert all(start <= a.last_change <= int(time.time()) + 1 for a in attributes)

    user.doveadm("mailbox", "metadata", "unset", "INBOX", "/private/comment")
    box.refresh()
    deleted = box.attributes()[0]
    assert (deleted.key, deleted.value, deleted.from_dsync) == ("comment", None, False)
    assert deleted.modseq == box.status().highest_modseq > modseq


def test_dovecot_rename_and_delete(env: DovecotEnv) -> None:
    user = env.user("c")
    storage = _pydsync_store(user)
    storage.create_mailbox("Gone")
    for vname in ("Work", "Gone"):
        box = storage.open_mailbox(vname)
        with box.transaction() as t:
            t.set_attribute("p", "comment", vname, STAMP)
    work = storage.open_mailbox("Work")
    expected = work.attributes()
    assert expected == [Attribute("p", "comment", "Work", STAMP, expected[0].modseq, True)]
    _chown_vmail(user.home)

    user.mailbox_rename("Work", "Renamed")
    user.mailbox_delete("Gone")
    assert storage.open_mailbox("Renamed").attributes() == expected
    storage.create_mailbox("Gone")
    assert storage.open_mailbox("Gone").attributes() == []


def test_dict_at_the_harness_path(tmp_path: Path) -> None:
    """Dovecot's dict may live anywhere (here `%h/dovecot-attributes`); the driver is
    told where."""
    require_dovecot()
    with DovecotEnv(tmp_path, attributes=True) as env:
        user = env.user("d")
        storage = _pydsync_store(user, attribute_dict=user.home / "dovecot-attributes")
        box = storage.open_mailbox("Work")
        with box.transaction() as t:
            t.set_attribute("s", "comment", "at home", STAMP)
        _chown_vmail(user.home)
        assert user.metadata_get("Work", "/shared/comment") == "at home"
        user.metadata_set("Work", "/private/comment", "back")
        box.refresh()
        assert [(a.type, a.value) for a in box.attributes()] == [("p", "back"), ("s", "at home")]
