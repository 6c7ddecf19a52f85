"""Stateful sync (-s): states that no longer fit fall back to a full sync, never to an
endless "run again" with an empty state."""

from __future__ import annotations

from pydsync_server.brain.run import run_local
from pydsync_server.brain.settings import SyncMode, SyncResult, SyncSettings
from pydsync_server.protocol.state import decode_state
from pydsync_server.storage.memory import MemoryStorage


def sync(a: MemoryStorage, b: MemoryStorage, state: str | None, **kw: object) -> SyncResult:
    settings = SyncSettings(mode=SyncMode.TWOWAY, state=state, **kw)  # type: ignore[arg-type]
    return run_local(a, b, settings, timeout=30)


def stores() -> tuple[MemoryStorage, MemoryStorage]:
    a, b = MemoryStorage(), MemoryStorage()
    a.create_mailbox("Work")
    for i in range(3):
        a.deliver("INBOX", b"Subject: %d\n\nx\n" % i)
    a.deliver("Work", b"Subject: w\n\ny\n")
    return a, b


def test_chain_of_states_syncs_both_ways() -> None:
    a, b = stores()
    first = sync(a, b, "")
    assert first.exit_code == 0 and first.state
    a.deliver("INBOX", b"Subject: a-new\n\n")
    second = sync(a, b, first.state)
    assert second.exit_code == 0
    assert (
        b.snapshot()["mailboxes"]["INBOX"]["messages"]
        == a.snapshot()["mailboxes"]["INBOX"]["messages"]
    )
    assert {s.mailbox_guid for s in decode_state(second.state or "")} == {
        s.mailbox_guid for s in decode_state(first.state or "")
    }


def test_state_from_before_a_uidvalidity_change_falls_back_to_full_sync() -> None:
    a, b = stores()
    first = sync(a, b, "")
    box = a.open_mailbox("INBOX")
    with box.transaction() as tx:
        tx.set_uid_validity(12345)
    a.deliver("INBOX", b"Subject: after\n\n")
    result = sync(a, b, first.state)
    assert result.exit_code in (0, 2), result.errors
    if result.exit_code == 2:
        result = sync(a, b, result.state)
    assert result.exit_code == 0, result.errors
    assert result.state  # a fresh, non-empty state
    again = sync(a, b, result.state)
    assert again.exit_code == 0 and again.state
    assert (
        a.snapshot()["mailboxes"]["INBOX"]["messages"]
        == b.snapshot()["mailboxes"]["INBOX"]["messages"]
    )


def test_state_of_another_store_is_not_trusted() -> None:
    a, b = stores()
    other_a, other_b = stores()
    foreign = sync(other_a, other_b, "").state
    result = sync(a, b, foreign)
    assert result.exit_code == 0 and result.state
    assert (
        a.snapshot()["mailboxes"]["INBOX"]["messages"]
        == b.snapshot()["mailboxes"]["INBOX"]["messages"]
    )


def test_state_newer_than_the_store_is_dropped() -> None:
    """A store restored from an old backup: its modseqs are below the saved state."""
    a, b = stores()
    sync(a, b, "")
    for i in range(5):
        a.client_set_flags("INBOX", 1, i % 2 * 8)
    later = sync(a, b, "").state
    restored_a, restored_b = stores()
    sync(restored_a, restored_b, "")
    result = sync(restored_a, restored_b, later)
    assert result.exit_code == 0 and result.state


def test_states_are_marked_and_foreign_modseqs_are_not_trusted() -> None:
    from pydsync_server.brain.brain import parse_saved_state
    from pydsync_server.protocol.state import written_by_pydsync

    a, b = stores()
    ours = sync(a, b, "").state
    assert ours and written_by_pydsync(ours)
    _, mine = parse_saved_state(SyncSettings(state=ours), print)
    assert any(s.last_common_modseq for s in mine.values())
    doveadm_d1 = "AQAAAIT0/A78dAtrwD8AAIPsw3X8dAtrAwAAAAkAAAAAAAAAAAAAAAAAAAACAAAAJHeX+Q=="
    assert not written_by_pydsync(doveadm_d1)
    sync_type, foreign = parse_saved_state(SyncSettings(state=doveadm_d1), print)
    assert sync_type == "s"
    [state] = foreign.values()
    assert (state.last_common_uid, state.last_common_modseq) == (3, 0)
