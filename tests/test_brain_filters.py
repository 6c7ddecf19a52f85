"""Import filters (-t -e -I -O) and what a later unfiltered run does with the holes.

Dovecot 2.3.19 deletes the filtered-out mail on the source at the next plain sync
(dsync-algorithm.md §7.1, pitfall 24); pydsync keeps it and copies it over instead.
"""

from __future__ import annotations

import pytest

from pydsync_server.brain.run import run_local
from pydsync_server.brain.settings import SyncMode, SyncResult, SyncSettings
from pydsync_server.storage.memory import MemoryStorage

OLD, NEW = 1_000_000_000, 1_700_000_000


def sync(a: MemoryStorage, b: MemoryStorage, **options: object) -> SyncResult:
    settings = SyncSettings(mode=SyncMode.TWOWAY, **options)  # type: ignore[arg-type]
    return run_local(a, b, settings, timeout=30)


def bodies(store: MemoryStorage, box: str = "INBOX") -> set[bytes]:
    return {m[3] for m in store.snapshot()["mailboxes"][box]["messages"].values()}


def source() -> MemoryStorage:
    a = MemoryStorage()
    a.deliver("INBOX", b"Subject: new 1\n\n", received_date=NEW)
    a.deliver("INBOX", b"Subject: new 2\n\n", received_date=NEW, flags=0x02)
    a.deliver("INBOX", b"Subject: old and big\n\n" + b"x" * 5000, received_date=OLD)
    a.deliver("INBOX", b"Subject: new 4\n\n", received_date=NEW, flags=0x02)
    a.deliver("INBOX", b"Subject: new 5\n\n", received_date=NEW)
    return a


@pytest.mark.parametrize(
    ("options", "filtered"),
    [
        ({"since": NEW - 10}, {b"Subject: old and big\n\n" + b"x" * 5000}),
        ({"max_size": 1000}, {b"Subject: old and big\n\n" + b"x" * 5000}),
        (
            {"only_flag": "\\Flagged"},
            {
                b"Subject: new 1\n\n",
                b"Subject: old and big\n\n" + b"x" * 5000,
                b"Subject: new 5\n\n",
            },
        ),
        ({"only_flag": "-\\Flagged"}, {b"Subject: new 2\n\n", b"Subject: new 4\n\n"}),
    ],
)
def test_filtered_sync_then_plain_sync_loses_nothing(
    options: dict[str, object], filtered: set[bytes]
) -> None:
    a, b = source(), MemoryStorage()
    everything = bodies(a)
    first = sync(a, b, **options)
    assert first.exit_code == 0, first.errors
    assert bodies(b) == everything - filtered
    for _ in range(3):  # the holes are repaired within a few plain runs
        result = sync(a, b)
        assert result.exit_code in (0, 2), result.errors
        assert bodies(a) == everything, "a plain sync after a filtered one deleted mail"
        if bodies(b) == everything and result.exit_code == 0:
            break
    assert bodies(b) == everything
    assert (
        a.snapshot()["mailboxes"]["INBOX"]["messages"]
        == b.snapshot()["mailboxes"]["INBOX"]["messages"]
    )


def test_until_filter() -> None:
    a, b = source(), MemoryStorage()
    assert sync(a, b, until=OLD + 10).exit_code == 0
    assert bodies(b) == {b"Subject: old and big\n\n" + b"x" * 5000}
