"""dovecot-uidlist keeps the lines of expunged mail until a quarter of its lines are
stale, as Dovecot does (maildir_uidlist_want_compress): a commit that expunges a few
messages and adds others appends, and a later rescan shows the same folder."""

from __future__ import annotations

import io
from pathlib import Path

from pydsync_server.storage.base import NewMessage
from pydsync_server.storage.maildir import MaildirStorage


def _save(storage: MaildirStorage, count: int) -> None:
    box = storage.open_mailbox("INBOX")
    with box.transaction() as tx:
        for i in range(count):
            uid = box.status().uid_next + i
            tx.save(NewMessage(uid, f"guid-{uid}", io.BytesIO(b"Subject: %d\n\nx\n" % uid)))


def _lines(root: Path) -> list[str]:
    return (root / "dovecot-uidlist").read_text().splitlines()[1:]


def _expunge_and_add(storage: MaildirStorage, uids: list[int]) -> None:
    box = storage.open_mailbox("INBOX")
    with box.transaction() as tx:
        for uid in uids:
            tx.expunge(uid)
        tx.save(NewMessage(box.status().uid_next, "new-one", io.BytesIO(b"Subject: n\n\ny\n")))


def test_a_few_expunges_leave_stale_lines_and_append(tmp_path: Path) -> None:
    storage = MaildirStorage(tmp_path)
    _save(storage, 20)
    before = _lines(tmp_path)
    _expunge_and_add(storage, [3, 7])
    after = _lines(tmp_path)
    assert after[:20] == before  # appended: the expunged lines are still there
    assert len(after) == 21 and after[20].startswith("21 ")
    fresh = MaildirStorage(tmp_path).open_mailbox("INBOX")
    assert [m.uid for m in fresh.messages()] == [u for u in range(1, 22) if u not in (3, 7)]
    assert fresh.status().uid_next == 22


def test_past_a_quarter_stale_the_uidlist_is_rewritten(tmp_path: Path) -> None:
    storage = MaildirStorage(tmp_path)
    _save(storage, 8)
    _expunge_and_add(storage, [1, 2, 3])
    lines = _lines(tmp_path)
    assert [int(line.split()[0]) for line in lines] == [4, 5, 6, 7, 8, 9]
    assert MaildirStorage(tmp_path).open_mailbox("INBOX").status().uid_next == 10
