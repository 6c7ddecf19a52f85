"""Options of `sync`/`backup` as the brain sees them: -n, -P, -m, -x, -g, -1."""

from __future__ import annotations

import pytest

from pydsync_server.brain.run import run_local
from pydsync_server.brain.settings import SyncMode, SyncResult, SyncSettings
from pydsync_server.errors import UsageError
from pydsync_server.storage.memory import MemoryStorage


class PurgeCounting(MemoryStorage):
    purges = 0

    def purge(self) -> None:
        self.purges += 1


def run(a: MemoryStorage, b: MemoryStorage, **options: object) -> SyncResult:
    options.setdefault("mode", SyncMode.TWOWAY)
    return run_local(a, b, SyncSettings(**options), timeout=30)  # type: ignore[arg-type]


def filled() -> MemoryStorage:
    store = MemoryStorage()
    for name in ("Work", "Work/Sub", "Junk", "Archive"):
        store.create_mailbox(name)
        store.deliver(name, f"Subject: {name}\n\n".encode())
    store.deliver("INBOX", b"Subject: inbox\n\n")
    return store


def names(store: MemoryStorage) -> set[str]:
    return {n for n, box in store.snapshot()["mailboxes"].items() if box["guid"] is not None}


def test_unknown_namespace_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="Namespace not found"):
        run(filled(), MemoryStorage(), namespace_prefixes=("Shared/",))
    assert run(filled(), MemoryStorage(), namespace_prefixes=("",)).exit_code == 0


def test_purge_runs_on_the_slave_only_after_success() -> None:
    a, b = PurgeCounting(), PurgeCounting()
    assert run(a, b, purge_remote=True).exit_code == 0
    assert (a.purges, b.purges) == (0, 1)
    assert run(a, b).exit_code == 0
    assert b.purges == 1


def test_mailbox_pattern_and_excludes_limit_the_tree() -> None:
    b = MemoryStorage()
    assert run(filled(), b, mode=SyncMode.BACKUP, mailbox="Work*").exit_code == 0
    assert names(b) == {"INBOX", "Work", "Work/Sub"}
    c = MemoryStorage()
    assert run(filled(), c, mode=SyncMode.BACKUP, exclude=("Junk", "Work/*")).exit_code == 0
    assert names(c) == {"INBOX", "Work", "Archive"}


def test_mailbox_guid_selects_one_mailbox() -> None:
    a, b = filled(), MemoryStorage()
    guid = a.snapshot()["mailboxes"]["Archive"]["guid"]
    assert guid is not None
    assert run(a, b, mode=SyncMode.BACKUP, mailbox_guid=guid.hex()).exit_code == 0
    assert "Archive" in names(b) and "Work" not in names(b)
    assert b.snapshot()["mailboxes"]["Archive"] == a.snapshot()["mailboxes"]["Archive"]


def test_empty_mailbox_option_syncs_only_the_tree() -> None:
    a, b = filled(), MemoryStorage()
    assert run(a, b, mode=SyncMode.BACKUP, mailbox="").exit_code == 0
    assert names(b) == names(a)
    assert all(not box["messages"] for box in b.snapshot()["mailboxes"].values())


def test_oneway_keeps_destination_changes() -> None:
    a, b = filled(), MemoryStorage()
    assert run(a, b, mode=SyncMode.BACKUP).exit_code == 0
    b.deliver("Work", b"Subject: only on b\n\n")
    b.create_mailbox("OnlyB")
    a.deliver("Work", b"Subject: new on a\n\n")
    result = run(a, b, mode=SyncMode.ONEWAY, full_sync=True)  # counters look alike (§3.1)
    assert result.exit_code == 0, result.errors
    bodies_b = {m[3] for m in b.snapshot()["mailboxes"]["Work"]["messages"].values()}
    assert {b"Subject: only on b\n\n", b"Subject: new on a\n\n"} <= bodies_b
    assert "OnlyB" in names(b) and "OnlyB" not in names(a)
    bodies_a = {m[3] for m in a.snapshot()["mailboxes"]["Work"]["messages"].values()}
    assert b"Subject: only on b\n\n" not in bodies_a


def test_all_mail_box_saves_transfers() -> None:
    a, b = MemoryStorage(), MemoryStorage()
    a.create_mailbox("Work")
    a.create_mailbox("All")
    b.create_mailbox("All")
    guid = "0123456789abcdef0123456789abcdef"
    a.deliver("Work", b"Subject: as sent\n\n", guid=guid)
    # Same GUID, other bytes: the copy shows the body came from b's own All mailbox.
    b.deliver("All", b"Subject: local copy\n\n", guid=guid)
    result = run(a, b, mode=SyncMode.ONEWAY, virtual_all_box="All", mailbox="Work")
    assert result.exit_code == 0, result.errors
    work = b.snapshot()["mailboxes"]["Work"]["messages"]
    assert [m[3] for m in work.values()] == [b"Subject: local copy\n\n"]
    c = MemoryStorage()
    assert run(a, c, mode=SyncMode.ONEWAY, virtual_all_box="Nowhere", mailbox="Work").exit_code == 0
    assert [m[3] for m in c.snapshot()["mailboxes"]["Work"]["messages"].values()] == [
        b"Subject: as sent\n\n"
    ]
