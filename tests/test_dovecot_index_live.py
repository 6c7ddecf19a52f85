"""storage/dovecot_index against a live Dovecot: indexes doveadm writes (logs, rotated
logs, dovecot.index snapshots) read as doveadm reports them, and transactions pydsync
appends read by doveadm without any complaint."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from dovecot import DovecotEnv, DovecotUser

from pydsync_server.storage.dovecot_index import IndexPaths, Transaction, locked_log, read_index

pytestmark = pytest.mark.dovecot

FLAG_NAMES = {
    "\\Answered": 0x01,
    "\\Flagged": 0x02,
    "\\Deleted": 0x04,
    "\\Seen": 0x08,
    "\\Draft": 0x10,
}
# Make doveadm rotate its log and write dovecot.index at every chance.
ROTATE = (
    "-o", "mail_index_log_rotate_min_size=1", "-o", "mail_index_log_rotate_max_size=1",
    "-o", "mail_index_log_rotate_min_age=0", "-o", "mail_index_rewrite_min_log_bytes=1",
    "-o", "mail_index_rewrite_max_log_bytes=1", "-o", "mail_index_log2_max_age=0",
)  # fmt: skip


def inbox(user: DovecotUser) -> IndexPaths:
    return IndexPaths(user.mail_path / "mailboxes" / "INBOX" / "dbox-Mails")


def doveadm_view(user: DovecotUser, *opts: str) -> tuple[dict[str, int], dict[int, tuple]]:
    """(status, {uid: (flags, keywords, modseq)}) as doveadm reports them; stderr empty."""
    fields = "uidvalidity uidnext highestmodseq"
    out = user.doveadm(*opts, "-f", "tab", "mailbox", "status", fields, "INBOX")
    assert out.stderr == b""
    head, row = out.stdout.decode().splitlines()
    pairs = zip(head.split("\t"), row.split("\t"), strict=True)
    status = {k: int(v) for k, v in pairs if k != "mailbox"}
    out = user.doveadm(*opts, "-f", "tab", "fetch", "uid flags modseq", "mailbox", "INBOX", "all")
    assert out.stderr == b""
    messages = {}
    for line in out.stdout.decode().splitlines()[1:]:
        uid, flags, modseq = line.split("\t")
        names = [f for f in flags.split() if f != "\\Recent"]
        bits = sum(FLAG_NAMES[f] for f in names if f.startswith("\\"))
        kws = frozenset(f for f in names if not f.startswith("\\"))
        messages[int(uid)] = (bits, kws, int(modseq))
    return status, messages


def pydsync_view(paths: IndexPaths) -> tuple[dict[str, int], dict[int, tuple]]:
    view = read_index(paths)
    assert view.problem is None
    st = view.state
    status = {"uidvalidity": st.uid_validity, "uidnext": st.next_uid, "highestmodseq": st.modseq}
    messages = {
        m.uid: (m.flags & 0x1F, m.keywords, st.message_modseq(m)) for m in st.messages.values()
    }
    return status, messages


def fill(user: DovecotUser, count: int, *opts: str) -> None:
    for i in range(count):
        user.doveadm(*opts, "save", "-m", "INBOX", input=f"Subject: {i}\n\nbody {i}\n".encode())
    user.doveadm(*opts, "flags", "add", "\\Seen kw1", "mailbox", "INBOX", "uid", "1:2")
    user.doveadm(*opts, "flags", "add", "\\Flagged", "mailbox", "INBOX", "uid", "2")
    user.doveadm(*opts, "flags", "remove", "kw1", "mailbox", "INBOX", "uid", "1")
    user.doveadm(*opts, "expunge", "mailbox", "INBOX", "uid", "3")


def test_reads_what_doveadm_wrote(tmp_path: Path) -> None:
    with DovecotEnv(tmp_path) as env:
        user = env.user("a", location="sdbox:~/sdbox")
        fill(user, 5)
        # before modseqs are enabled every message reports the highest modseq
        assert pydsync_view(inbox(user)) == doveadm_view(user)
        user.flags_add("INBOX", 4, "\\Answered")  # after status enabled the modseq ext
        assert pydsync_view(inbox(user)) == doveadm_view(user)


def test_reads_rotated_logs_and_snapshots(tmp_path: Path) -> None:
    with DovecotEnv(tmp_path) as env:
        user = env.user("a", location="sdbox:~/sdbox")
        fill(user, 6, *ROTATE)
        user.doveadm(*ROTATE, "flags", "add", "\\Draft", "mailbox", "INBOX", "uid", "5")
        paths = inbox(user)
        assert paths.index.exists() and paths.log2.exists()
        assert read_index(paths).state.messages  # read through the snapshot
        assert pydsync_view(paths) == doveadm_view(user)
        state = read_index(paths).state  # and appended to after the rotation
        t = Transaction(sync=True)
        t.enable_modseqs(state)
        t.keyword_update("late", True, [4, 5])
        with locked_log(paths.log) as locked:
            locked.append(t)
        status, messages = doveadm_view(user)
        assert {uid for uid, m in messages.items() if "late" in m[1]} == {4, 5}
        assert (status, messages) == pydsync_view(paths)


def test_doveadm_reads_what_pydsync_appended(tmp_path: Path) -> None:
    with DovecotEnv(tmp_path) as env:
        user = env.user("a", location="sdbox:~/sdbox")
        fill(user, 4)
        paths = inbox(user)
        state = read_index(paths).state
        t = Transaction(sync=True)
        t.enable_modseqs(state)  # first: messages changed later get later modseqs
        t.flag_update(1, 1, 0x10, 0x08)  # +\Draft -\Seen
        t.keyword_update("from-pydsync", True, [1, 4])
        t.modseq_update([(4, state.modseq + 50)])
        t.set_first_recent_uid(5)
        with locked_log(paths.log) as locked:
            locked.append(t)
        status, messages = doveadm_view(user)
        assert messages[1][:2] == (0x10, frozenset({"from-pydsync"}))
        assert messages[4][1] == frozenset({"from-pydsync"}) and messages[4][2] >= state.modseq + 50
        assert (status, messages) == pydsync_view(paths)
        # Dovecot keeps working on top of it: no rebuild, no warning
        user.flags_add("INBOX", 2, "\\Answered")
        user.expunge("INBOX", 1)
        assert pydsync_view(paths) == doveadm_view(user)
        log = paths.log.read_bytes()
        assert struct.unpack_from("<I", log, 4)[0] == read_index(paths).indexid
