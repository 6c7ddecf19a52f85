"""One-way backup between two in-memory stores through two local brains."""

from __future__ import annotations

import pytest

from pydsync_server.brain.run import run_local
from pydsync_server.brain.settings import SyncMode, SyncResult, SyncSettings
from pydsync_server.storage.memory import MemoryStorage


def backup(src: MemoryStorage, dst: MemoryStorage, **options: object) -> SyncResult:
    settings = SyncSettings(mode=SyncMode.BACKUP, **options)  # type: ignore[arg-type]
    return run_local(src, dst, settings, timeout=30)


def backup_reverse(src: MemoryStorage, dst: MemoryStorage) -> SyncResult:
    """`backup -R`: the master (here dst) pulls from the slave (src)."""
    return run_local(dst, src, SyncSettings(mode=SyncMode.BACKUP_REVERSE), timeout=30)


@pytest.fixture
def src() -> MemoryStorage:
    store = MemoryStorage()
    store.create_mailbox("Work")
    store.create_mailbox("Work/Sub")
    store.create_mailbox("Été/Ünïcode")
    store.set_subscribed("Work", True)
    store.deliver("INBOX", b"Subject: one\r\n\r\nCRLF body\r\n", flags=0x08)
    store.deliver("INBOX", b"Subject: two\n\n.\n..double\nno final newline", keywords=("$Label1",))
    store.deliver("INBOX", b"", flags=0x02 | 0x01)
    store.deliver("Work/Sub", b"Subject: 8bit\n\n\xe9t\xe9 \xff\x00 binary\n")
    store.deliver("Été/Ünïcode", b"Subject: x\n\nbody\n", flags=0x10)
    return store


@pytest.mark.parametrize("run", [backup, backup_reverse])
def test_initial_backup_copies_everything(src: MemoryStorage, run: object) -> None:
    dst = MemoryStorage()
    result = run(src, dst)  # type: ignore[operator]
    assert result.exit_code == 0, result.errors
    assert dst.snapshot() == src.snapshot()


@pytest.mark.parametrize("run", [backup, backup_reverse])
def test_incremental_backup_follows_source_changes(src: MemoryStorage, run: object) -> None:
    dst = MemoryStorage()
    run(src, dst)  # type: ignore[operator]
    src.client_expunge("INBOX", 2)
    src.client_set_flags("INBOX", 1, 0x02, ("todo",))
    src.deliver("INBOX", b"Subject: new\n\nnew mail\n")
    src.rename_mailbox("Work/Sub", "Work/Renamed")
    src.delete_mailbox("Été/Ünïcode")
    src.create_mailbox("Fresh")
    src.set_subscribed("Work", False)
    src.set_subscribed("Fresh", True)
    result = run(src, dst)  # type: ignore[operator]
    assert result.exit_code == 0, result.errors
    assert dst.snapshot() == src.snapshot()


def test_backup_reverts_destination_changes(src: MemoryStorage) -> None:
    dst = MemoryStorage()
    backup(src, dst)
    dst.client_set_flags("INBOX", 1, 0, ("local",))
    dst.client_expunge("Work/Sub", 1)
    dst.create_mailbox("OnlyOnDestination")
    dst.set_subscribed("Work", False)
    result = backup(src, dst)
    assert result.exit_code in (0, 75), result.errors
    if result.exit_code:
        result = backup(src, dst)  # Dovecot also needs a second run after a revert
    assert result.exit_code == 0, result.errors
    assert dst.snapshot() == src.snapshot()


def test_new_mail_on_destination_is_removed(src: MemoryStorage) -> None:
    dst = MemoryStorage()
    backup(src, dst)
    dst.deliver("Work", b"Subject: stray\n\nonly here\n")
    for _ in range(2):
        result = backup(src, dst)
        if result.exit_code == 0:
            break
    assert result.exit_code == 0, result.errors
    assert dst.snapshot() == src.snapshot()


def test_run_without_changes_changes_nothing(src: MemoryStorage) -> None:
    dst = MemoryStorage()
    backup(src, dst)
    before = dst.snapshot()
    result = backup(src, dst)
    assert result.exit_code == 0
    assert dst.snapshot() == before == src.snapshot()


def test_stateful_backup_chain(src: MemoryStorage) -> None:
    dst = MemoryStorage()
    first = backup(src, dst, state="")
    assert first.state
    src.deliver("INBOX", b"Subject: later\n\nx\n")
    src.client_set_flags("INBOX", 1, 0, ())
    second = backup(src, dst, state=first.state)
    assert second.exit_code == 0, second.errors
    assert second.state and second.state != first.state
    assert dst.snapshot() == src.snapshot()
    third = backup(src, dst, state=second.state)
    assert third.exit_code == 0 and third.state == second.state


def test_invalid_state_falls_back_to_full_sync(src: MemoryStorage) -> None:
    dst = MemoryStorage()
    result = backup(src, dst, state="not base64 !!")
    assert result.exit_code == 0
    assert result.state
    assert dst.snapshot() == src.snapshot()
