"""Mail matched by header hash when a side cannot save GUIDs (§3.3, §6; e.g. mbox, IMAP)."""

from __future__ import annotations

from pydsync_server.brain.run import run_local
from pydsync_server.brain.settings import SyncMode, SyncSettings
from pydsync_server.storage.memory import MemoryStorage


class NoSaveGuids(MemoryStorage):
    have_save_guids = False


def bodies(store: MemoryStorage) -> list[bytes]:
    return sorted(m[3] for m in store.snapshot()["mailboxes"]["INBOX"]["messages"].values())


def mail(n: int) -> bytes:
    return b"Subject: %d\nDate: Mon, %d Jan 2024 10:00:00 +0000\nMessage-ID: <%d@x>\n\nbody\n" % (
        n,
        n,
        n,
    )


def test_two_way_sync_matches_by_header_hash() -> None:
    a, b = NoSaveGuids(), MemoryStorage()
    for n in (1, 2, 3):
        a.deliver("INBOX", mail(n))
    settings = SyncSettings(mode=SyncMode.TWOWAY, full_sync=True)
    assert run_local(a, b, settings, timeout=30).exit_code == 0
    assert bodies(b) == bodies(a)
    b.deliver("INBOX", mail(4))
    a.client_set_flags("INBOX", 2, 0x08)
    for _ in range(2):
        result = run_local(a, b, settings, timeout=30)
        assert result.exit_code in (0, 2), result.errors
    assert bodies(a) == bodies(b) == sorted(mail(n) for n in (1, 2, 3, 4))
    flags_b = {m[3]: m[1] for m in b.snapshot()["mailboxes"]["INBOX"]["messages"].values()}
    assert flags_b[mail(2)] == 0x08
    # Nothing is duplicated by repeated runs: the hashes keep matching.
    assert run_local(a, b, settings, timeout=30).exit_code == 0
    assert len(bodies(a)) == len(bodies(b)) == 4


def test_empty_header_workaround_matches_header_less_mail() -> None:
    a, b = NoSaveGuids(), MemoryStorage()
    a.deliver("INBOX", b"no headers at all\n")
    settings = SyncSettings(mode=SyncMode.TWOWAY, full_sync=True, empty_hdr_workaround=True)
    assert run_local(a, b, settings, timeout=30).exit_code == 0
    assert run_local(a, b, settings, timeout=30).exit_code == 0
    assert bodies(a) == bodies(b) == [b"no headers at all\n"]
