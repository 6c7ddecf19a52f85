"""mdbox between real Dovecot and pydsync: doveadm backup/sync into `pydsync dsync-server`
on mdbox, pydsync backup maildir->mdbox->maildir, Dovecot-written mdbox read by pydsync,
Dovecot reading while pydsync appends, purge and force-resync, damaged m.N files. Every
pydsync-written store is read by Dovecot without a rebuild (doveadm's stderr must stay
empty: no "rebuilding" or "corrupted")."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dovecot import SAFE_PATH, DovecotEnv, _chown_tree
from dovecot import snapshot as dovecot_snapshot
from test_interop_backup import fill
from test_interop_sdbox import (
    REPO,
    assert_same,
    change,
    clean_snapshot,
    pydsync,
    server_destination,
)

from pydsync_server.storage.mdbox import MdboxStorage

pytestmark = pytest.mark.dovecot

MDBOX = "mdbox:~/mdbox"
FIXTURE = Path(__file__).parent / "data" / "fixtures" / "dovecot-2.3.19" / "mdbox"


def stored_copies(home: Path) -> tuple[int, int]:
    """(map records, messages in all mailboxes) of an mdbox under `home`."""
    storage = MdboxStorage(home / "mdbox")
    records = len(storage.ctx.map.read().records)
    messages = sum(
        len(storage.open_mailbox(e.vname).messages())
        for e in storage.list_mailboxes()
        if e.guid is not None
    )
    return records, messages


def test_doveadm_backup_into_pydsync_mdbox(dovecot_env: DovecotEnv) -> None:
    src, dst = dovecot_env.user("src"), dovecot_env.user("dst", location=MDBOX)
    fill(src)
    src.doveadm("copy", "Archive/2024", "mailbox", "INBOX", "uid", "1:3")  # same GUIDs
    destination = server_destination(dovecot_env, dst, MDBOX)
    for step in range(2):
        proc = src.backup(destination, check=False)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert_same(dovecot_snapshot(src), clean_snapshot(dst.home, MDBOX))
        assert not list(dst.home.rglob("dovecot.index")), "pydsync wrote a dovecot.index"
        if step == 0:
            records, messages = stored_copies(dst.home)
            assert records == messages - 3  # the copies share the stored message
            change(src)


def test_pydsync_backup_maildir_to_mdbox_and_back(dovecot_env: DovecotEnv) -> None:
    user = dovecot_env.user("a")
    fill(user)
    user.mailbox_create("Copy")
    user.save("Copy", b"Subject: work 0\n\nwork body\n")  # same text, its own GUID
    proc = pydsync(user, "maildir:~/Maildir", "backup", f"mdbox:{user.home}/mdbox")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_same(dovecot_snapshot(user), clean_snapshot(user.home, MDBOX))
    change(user)
    proc = pydsync(user, "maildir:~/Maildir", "backup", f"mdbox:{user.home}/mdbox")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    source = dovecot_snapshot(user)
    assert_same(source, clean_snapshot(user.home, MDBOX))
    proc = pydsync(user, MDBOX, "backup", f"maildir:{user.home}/Back:LAYOUT=fs")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_same(source, clean_snapshot(user.home, "maildir:~/Back:LAYOUT=fs"))


def test_small_rotate_size_and_shared_copies(dovecot_env: DovecotEnv) -> None:
    """Many m.N files (mdbox_rotate_size) and a message held by two mailboxes, which a
    two-way sync copies by GUID: Dovecot reads it all, and purges it cleanly."""
    a = dovecot_env.user("a")
    fill(a)
    location = f"mdbox:{a.home}/mdbox"
    proc = pydsync(a, "maildir:~/Maildir", "-o", "mdbox_rotate_size=2k", "backup", location)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    files = list((a.home / "mdbox" / "storage").glob("m.*"))
    assert len(files) >= 3
    assert_same(dovecot_snapshot(a), clean_snapshot(a.home, MDBOX))
    b = dovecot_env.user("b", location=MDBOX)
    shutil.copytree(a.home / "mdbox", b.home / "mdbox")
    _chown_tree(b.home)
    b.doveadm("copy", "Work", "mailbox", "INBOX", "uid", "1")
    b.doveadm("expunge", "mailbox", "Archive/2024", "all")
    b.doveadm("purge")
    proc = b.doveadm("fetch", "uid guid", "mailbox", "*", "all")
    assert proc.stderr == b""


def test_dovecot_written_mdbox_read_by_pydsync(dovecot_env: DovecotEnv) -> None:
    user = dovecot_env.user("a", location=MDBOX)
    fill(user)
    user.doveadm("mailbox", "status", "highestmodseq", "INBOX")  # modseqs on, as dsync does
    user.flags_add("INBOX", 3, "\\Seen")
    user.doveadm("copy", "Work", "mailbox", "INBOX", "uid", "1")  # one copy, refcount 2
    proc = pydsync(user, MDBOX, "backup", f"maildir:{user.home}/Copy:LAYOUT=fs")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_same(dovecot_snapshot(user), clean_snapshot(user.home, "maildir:~/Copy:LAYOUT=fs"))


def test_fixture_read_by_pydsync(dovecot_env: DovecotEnv) -> None:
    user = dovecot_env.user("a", location=MDBOX)
    # the tarball keeps Dovecot's modes (the tree beside it was made world-readable)
    subprocess.run(["tar", "xzf", str(FIXTURE / "store.tar.gz"), "-C", str(user.home)], check=True)
    _chown_tree(user.home)
    proc = pydsync(user, MDBOX, "backup", f"maildir:{user.home}/Copy:LAYOUT=fs")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_same(dovecot_snapshot(user), clean_snapshot(user.home, "maildir:~/Copy:LAYOUT=fs"))


def test_two_way_doveadm_sync_with_pydsync_mdbox(dovecot_env: DovecotEnv) -> None:
    a, b = dovecot_env.user("a"), dovecot_env.user("b", location=MDBOX)
    fill(a)
    destination = server_destination(dovecot_env, b, MDBOX)
    proc = a.sync(destination, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    _chown_tree(b.home)
    a.flags_add("INBOX", 1, "\\Answered")
    a.save("Work", b"Subject: from a\n\n")
    b.flags_add("INBOX", 3, "\\Flagged fromb")
    b.save("INBOX", b"Subject: from b\n\n")
    b.expunge("Work", 1)
    for _ in range(2):
        proc = a.sync(destination, check=False)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        _chown_tree(b.home)
    assert_same(dovecot_snapshot(a), clean_snapshot(b.home, MDBOX))


def test_purge_and_force_resync_checked_by_dovecot(dovecot_env: DovecotEnv) -> None:
    user = dovecot_env.user("a")
    fill(user)
    proc = pydsync(user, "maildir:~/Maildir", "backup", f"mdbox:{user.home}/mdbox")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    mdbox = dovecot_env.user("m", location=MDBOX)
    shutil.copytree(user.home / "mdbox", mdbox.home / "mdbox")
    _chown_tree(mdbox.home)
    mdbox.expunge("INBOX", 2)
    mdbox.mailbox_delete("Archive/2024")
    before = clean_snapshot(mdbox.home, MDBOX)
    size = sum(p.stat().st_size for p in (mdbox.home / "mdbox/storage").glob("m.*"))
    proc = pydsync(mdbox, MDBOX, "purge")
    assert (proc.returncode, proc.stderr) == (0, b"")
    after = sum(p.stat().st_size for p in (mdbox.home / "mdbox/storage").glob("m.*"))
    assert after < size
    assert_same(before, clean_snapshot(mdbox.home, MDBOX))
    for index in (mdbox.home / "mdbox" / "storage").glob("dovecot.map.index*"):
        index.unlink()  # the map lost: force-resync keeps UIDs, flags, GUIDs (§3.6 C)
    proc = pydsync(mdbox, MDBOX, "force-resync", "*")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    _chown_tree(mdbox.home)
    assert_same(before, clean_snapshot(mdbox.home, MDBOX))


def test_force_resync_of_a_dovecot_written_store(dovecot_env: DovecotEnv) -> None:
    """Dovecot's own indexes (snapshots, caches) replaced by pydsync's rebuild, compared
    with what `doveadm force-resync` makes of a copy: after the map is lost (an expunged,
    unpurged message comes back, as with Dovecot), and after a broken record in a
    mailbox log (the mailbox keeps its messages, GUID and UIDVALIDITY)."""
    user = dovecot_env.user("a", location=MDBOX)
    fill(user)
    for _ in range(3):
        user.doveadm("flags", "add", "\\Seen", "mailbox", "INBOX", "all")
        user.doveadm("flags", "remove", "\\Seen", "mailbox", "INBOX", "all")
    twin = dovecot_env.user("b", location=MDBOX)
    shutil.copytree(user.home / "mdbox", twin.home / "mdbox")
    _chown_tree(twin.home)
    for home in (user.home, twin.home):
        for index in (home / "mdbox/storage").glob("dovecot.map.index*"):
            index.unlink()
    twin.doveadm("force-resync", "*")
    proc = pydsync(user, MDBOX, "force-resync", "*")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    _chown_tree(user.home)
    before = clean_snapshot(twin.home, MDBOX)
    assert_same(before, clean_snapshot(user.home, MDBOX))
    log = user.home / "mdbox/mailboxes/Work/dbox-Mails/dovecot.index.log"
    data = bytearray(log.read_bytes())
    data[-12:-8] = b"\x00\x40\x00\x00"  # the last record's type: one that doesn't exist
    log.write_bytes(bytes(data))
    proc = pydsync(user, MDBOX, "backup", f"maildir:{user.home}/Copy")
    assert proc.returncode != 0 and b"force-resync" in proc.stderr
    proc = pydsync(user, MDBOX, "force-resync", "*")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    _chown_tree(user.home)
    work, old = clean_snapshot(user.home, MDBOX).mailbox("Work"), before.mailbox("Work")
    assert (work.guid, work.uidvalidity) == (old.guid, old.uidvalidity)
    assert [m.guid for m in work.messages] == [m.guid for m in old.messages]


def test_force_resync_without_any_index_as_dovecot(dovecot_env: DovecotEnv) -> None:
    """Every index lost (§3.6 B): pydsync and doveadm force-resync, each on a copy, give
    the same UIDs, GUIDs, flags (none) and UIDNEXTs; GUIDs and UIDVALIDITYs are new."""
    user = dovecot_env.user("a", location=MDBOX)
    fill(user)
    twin = dovecot_env.user("b", location=MDBOX)
    shutil.copytree(user.home / "mdbox", twin.home / "mdbox")
    _chown_tree(twin.home)
    for home in (user.home, twin.home):
        for index in (home / "mdbox").rglob("dovecot*index*"):
            index.unlink()
    twin.doveadm("force-resync", "*")
    proc = pydsync(user, MDBOX, "force-resync", "*")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    _chown_tree(user.home)
    ours, theirs = clean_snapshot(user.home, MDBOX), clean_snapshot(twin.home, MDBOX)
    assert ours.mailbox_list == theirs.mailbox_list
    for box in theirs.mailboxes:
        mine = ours.mailbox(box.name)
        assert mine.uidnext == box.uidnext
        assert [(m.uid, m.guid, m.flags) for m in mine.messages] == [
            (m.uid, m.guid, m.flags) for m in box.messages
        ]


def test_backup_with_purge_flag_purges_the_mdbox(dovecot_env: DovecotEnv) -> None:
    user = dovecot_env.user("a")
    fill(user)
    location = f"mdbox:{user.home}/mdbox"
    assert pydsync(user, "maildir:~/Maildir", "backup", location).returncode == 0
    storage = user.home / "mdbox" / "storage"
    before = sum(p.stat().st_size for p in storage.glob("m.*"))
    user.expunge("INBOX", "1:*")
    proc = pydsync(user, "maildir:~/Maildir", "backup", "-P", location)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    after = sum(p.stat().st_size for p in storage.glob("m.*"))
    assert after < before / 2  # INBOX held the big message
    assert_same(dovecot_snapshot(user), clean_snapshot(user.home, MDBOX))


def test_damaged_files_reported_readable_mail_kept_and_resync_recovers(
    dovecot_env: DovecotEnv,
) -> None:
    user = dovecot_env.user("a")
    for i in range(6):
        user.save("INBOX", b"Subject: m%d\n\nbody %d\n" % (i, i))
    location = f"mdbox:{user.home}/mdbox"
    proc = pydsync(user, "maildir:~/Maildir", "-o", "mdbox_rotate_size=200", "backup", location)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    files = sorted((user.home / "mdbox/storage").glob("m.*"), key=lambda p: int(p.name[2:]))
    assert len(files) >= 3
    files[0].write_bytes(files[0].read_bytes()[:-30])  # truncated
    data = bytearray(files[1].read_bytes())
    data[data.index(b"\x01\x02N")] = 0x07  # wrong magic
    files[1].write_bytes(bytes(data))
    proc = pydsync(user, MDBOX, "backup", f"maildir:{user.home}/Copy")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0 and "Corrupted dbox file" in err, err
    proc = pydsync(user, MDBOX, "force-resync", "*")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert "m.1" in proc.stderr.decode() and "m.2" in proc.stderr.decode()
    after = clean_snapshot(user.home, MDBOX)
    assert len(after.mailbox("INBOX").messages) == 4  # the two damaged ones gone, the rest kept
    proc = pydsync(user, MDBOX, "backup", f"maildir:{user.home}/Copy")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


WRITER = """
import io, os, pwd, sys
from pydsync_server.storage.mdbox import MdboxStorage
from pydsync_server.storage.base import NewMessage
vmail = pwd.getpwnam("vmail")  # write as the mail user, as Dovecot would
os.setgid(vmail.pw_gid)
os.setuid(vmail.pw_uid)
box = MdboxStorage(sys.argv[1], rotate_size=64 * 1024).open_mailbox("INBOX")
uid = 1
for batch in range(40):
    with box.transaction() as t:
        for _ in range(10):
            body = b"Subject: %d\\n\\n" % uid + b"x" * 3000
            t.save(NewMessage(uid, "%032x" % uid, io.BytesIO(body), flags=8 if uid % 2 else 0))
            uid += 1
    with box.transaction() as t:
        t.update_flags(uid - 1, add_flags=2, add_keywords=frozenset({"k%d" % batch}))
    box.refresh()
"""


def test_dovecot_reads_while_pydsync_appends(dovecot_env: DovecotEnv) -> None:
    """doveadm reads the store again and again while pydsync appends to the m.N files
    and the map: it never sees a broken index, and the message count only grows."""
    user = dovecot_env.user("a", location=MDBOX)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(user.home / "mdbox")],
        env={"PYTHONPATH": str(REPO), "PATH": SAFE_PATH},
        stderr=subprocess.PIPE,
    )
    counts = []
    while writer.poll() is None or not counts:
        proc = user.doveadm("fetch", "uid", "mailbox", "INBOX", "all", check=False)
        assert proc.stderr == b"", proc.stderr.decode(errors="replace")
        if proc.returncode == 0:
            counts.append(proc.stdout.count(b"uid: "))
    assert writer.wait() == 0, writer.stderr.read() if writer.stderr else ""
    assert counts == sorted(counts) and len(counts) > 2
    final = clean_snapshot(user.home, MDBOX).mailbox("INBOX")
    assert len(final.messages) == 400
    assert len(list((user.home / "mdbox/storage").glob("m.*"))) > 10
