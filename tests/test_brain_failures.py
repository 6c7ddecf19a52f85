"""Storage failures during a backup: Dovecot's exit code, and nothing half-written."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from pydsync_server.brain.run import run_local
from pydsync_server.brain.settings import SyncMode, SyncSettings
from pydsync_server.storage import maildir_transaction
from pydsync_server.storage.maildir import MaildirStorage
from pydsync_server.storage.memory import MemoryStorage


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(("failure", "exit_code"), [(errno.ENOSPC, 73), (errno.EACCES, 77)])
def test_full_or_unwritable_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: int, exit_code: int
) -> None:
    source = MemoryStorage()
    source.deliver("INBOX", b"Subject: first\n\nfirst\n")
    dest = MaildirStorage(tmp_path / "Maildir")
    settings = SyncSettings(mode=SyncMode.BACKUP)
    assert run_local(source, dest, settings, timeout=30).exit_code == 0
    source.deliver("INBOX", b"Subject: second\n\nsecond\n")
    source.create_mailbox("Other")
    source.deliver("Other", b"Subject: third\n\nthird\n")
    before = digest(tmp_path / "Maildir")

    def failing_fsync(fd: int) -> None:
        raise OSError(failure, os.strerror(failure))

    monkeypatch.setattr(maildir_transaction.os, "fsync", failing_fsync)
    result = run_local(source, MaildirStorage(tmp_path / "Maildir"), settings, timeout=30)
    monkeypatch.undo()
    assert result.exit_code == exit_code, result.errors
    inbox = MaildirStorage(tmp_path / "Maildir").open_mailbox("INBOX")
    assert [m.uid for m in inbox.messages()] == [1]
    assert not os.listdir(tmp_path / "Maildir" / "tmp")

    # Mail and INBOX's files are untouched; only the tree sync's empty "Other" mailbox
    # (and the UIDVALIDITY allocator it used) may exist now.
    def mail_files(tree: dict[str, str]) -> dict[str, str]:
        return {
            k: v for k, v in tree.items() if not k.startswith((".Other", "dovecot-uidvalidity"))
        }

    assert mail_files(digest(tmp_path / "Maildir")) == mail_files(before)
