"""sdbox between real Dovecot and pydsync: doveadm backup/sync into `pydsync dsync-server`
on sdbox, pydsync backup maildir->sdbox->maildir, Dovecot-written sdbox read by pydsync,
and `pydsync force-resync`/`purge` — every pydsync-written store read by Dovecot without
a rebuild (doveadm's stderr must stay empty: no "rebuilding"/"corrupted")."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dovecot import (
    SAFE_PATH,
    DovecotEnv,
    DovecotUser,
    StoreSnapshot,
    _chown_tree,
    _read_store,
    diff,
)
from dovecot import snapshot as dovecot_snapshot
from test_interop_backup import fill

pytestmark = pytest.mark.dovecot

REPO = Path(__file__).resolve().parent.parent
SDBOX = "sdbox:~/sdbox"


def pydsync(user: DovecotUser, location: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    environ = {
        "PATH": SAFE_PATH,
        "USER": user.name,
        "HOME": str(user.home),
        "PYTHONPATH": str(REPO),
        "PYDSYNC_CONFIG": "",
    }
    argv = [sys.executable, "-m", "pydsync_server", "-o", f"mail_location={location}", *args]
    return subprocess.run(argv, env=environ, capture_output=True, timeout=300, check=False)


def server_destination(env: DovecotEnv, user: DovecotUser, location: str) -> list[str]:
    argv = [sys.executable, "-m", "pydsync_server", "-o", f"mail_location={location}"]
    environ = {"USER": user.name, "HOME": str(user.home), "PYTHONPATH": str(REPO)}
    return env.command_destination([*argv, "dsync-server"], environ)


def clean_snapshot(home: Path, location: str) -> StoreSnapshot:
    """Dovecot's view of a store (on a copy), failing on any warning or error it prints:
    a store Dovecot had to rebuild or found corrupted does not pass."""
    with DovecotEnv() as env:
        reader = env.user("reader", location=location)
        shutil.copytree(home, reader.home, symlinks=True, dirs_exist_ok=True)
        _chown_tree(reader.home)
        for args in (
            ("mailbox", "list"),
            ("mailbox", "status", "messages uidnext uidvalidity highestmodseq guid", "*"),
            ("fetch", "uid guid flags modseq date.received text", "mailbox", "*", "all"),
        ):
            proc = reader.doveadm(*args)
            assert proc.stderr == b"", proc.stderr.decode(errors="replace")
        return _read_store(reader)


def assert_same(a: StoreSnapshot, b: StoreSnapshot) -> None:
    assert a == b, "stores differ:\n" + diff(a, b)


def change(user: DovecotUser) -> None:
    user.save("INBOX", b"Subject: new\n\nnew mail\n")
    user.flags_remove("INBOX", 1, "\\Flagged")
    user.flags_add("INBOX", 4, "\\Seen $Label3")
    user.expunge("INBOX", 2)
    user.mailbox_create("New", subscribe=True)
    user.mailbox_rename("Work/Projects", "Work/Proj2")
    user.mailbox_delete("Trash")


def test_doveadm_backup_into_pydsync_sdbox(dovecot_env: DovecotEnv) -> None:
    src, dst = dovecot_env.user("src"), dovecot_env.user("dst", location=SDBOX)
    fill(src)
    destination = server_destination(dovecot_env, dst, SDBOX)
    for step in range(2):
        proc = src.backup(destination, check=False)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert_same(dovecot_snapshot(src), clean_snapshot(dst.home, SDBOX))
        assert not list(dst.home.rglob("dovecot.index")), "pydsync wrote a dovecot.index"
        if step == 0:
            change(src)


def test_pydsync_backup_maildir_to_sdbox_and_back(dovecot_env: DovecotEnv) -> None:
    user = dovecot_env.user("a")
    fill(user)
    proc = pydsync(user, "maildir:~/Maildir", "backup", f"sdbox:{user.home}/sdbox")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    source = dovecot_snapshot(user)
    assert_same(source, clean_snapshot(user.home, SDBOX))
    change(user)
    proc = pydsync(user, "maildir:~/Maildir", "backup", f"sdbox:{user.home}/sdbox")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_same(dovecot_snapshot(user), clean_snapshot(user.home, SDBOX))
    # LAYOUT=fs keeps sdbox's \NoSelect parents as they are (Maildir++ has none)
    proc = pydsync(user, SDBOX, "backup", f"maildir:{user.home}/Copy:LAYOUT=fs")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_same(dovecot_snapshot(user), clean_snapshot(user.home, "maildir:~/Copy:LAYOUT=fs"))


def test_dovecot_written_sdbox_read_by_pydsync(dovecot_env: DovecotEnv) -> None:
    user = dovecot_env.user("a", location=SDBOX)
    fill(user)
    user.doveadm("mailbox", "status", "highestmodseq", "INBOX")  # modseqs enabled, as dsync does
    user.flags_add("INBOX", 3, "\\Seen")
    proc = pydsync(user, SDBOX, "backup", f"maildir:{user.home}/Copy:LAYOUT=fs")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_same(dovecot_snapshot(user), clean_snapshot(user.home, "maildir:~/Copy:LAYOUT=fs"))


def test_two_way_doveadm_sync_with_pydsync_sdbox(dovecot_env: DovecotEnv) -> None:
    a, b = dovecot_env.user("a"), dovecot_env.user("b", location=SDBOX)
    fill(a)
    destination = server_destination(dovecot_env, b, SDBOX)
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
    snap_a, snap_b = dovecot_snapshot(a), clean_snapshot(b.home, SDBOX)
    assert_same(snap_a, snap_b)
    inbox = {m.uid: m for m in snap_b.mailbox("INBOX").messages}
    assert "fromb" in inbox[3].keywords and "\\Answered" in inbox[1].flags


def test_force_resync_and_purge_checked_by_dovecot(dovecot_env: DovecotEnv) -> None:
    user = dovecot_env.user("a", location=SDBOX)
    fill(user)
    before = dovecot_snapshot(user)
    inbox = user.home / "sdbox/mailboxes/INBOX/dbox-Mails"
    (inbox / "dovecot.index.log").unlink()  # index lost: Dovecot would show INBOX empty
    (inbox / "dovecot.index.cache").unlink(missing_ok=True)
    (inbox / "u.3").write_bytes((inbox / "u.3").read_bytes()[:50])  # and one file broken
    proc = pydsync(user, SDBOX, "force-resync", "INBOX")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    warnings = proc.stderr.decode().splitlines()
    assert warnings[0].endswith("Warning: INBOX: Rebuilding index") and "u.3" in warnings[1]
    after = clean_snapshot(user.home, SDBOX)
    uids = [m.uid for m in after.mailbox("INBOX").messages]
    expected = [m.uid for m in before.mailbox("INBOX").messages if m.uid != 3]
    assert uids == expected  # UIDs kept (they are the file names), the broken file left out
    assert after.mailbox("Work") == before.mailbox("Work")
    proc = pydsync(user, SDBOX, "force-resync", "*")
    assert proc.returncode == 0 and proc.stderr.decode().count("Rebuilding index") == 6
    assert pydsync(user, SDBOX, "force-resync", "Nope").returncode == 0
    assert pydsync(user, SDBOX, "force-resync").returncode == 64
    proc = pydsync(user, SDBOX, "purge")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert clean_snapshot(user.home, SDBOX).mailbox("Work") == before.mailbox("Work")


WRITER = """
import io, os, pwd, sys
from pydsync_server.storage.sdbox import SdboxStorage
from pydsync_server.storage.base import NewMessage
import pydsync_server.storage.sdbox_transaction
vmail = pwd.getpwnam("vmail")  # write as the mail user, as Dovecot would
os.setgid(vmail.pw_gid)
os.setuid(vmail.pw_uid)
box = SdboxStorage(sys.argv[1]).open_mailbox("INBOX")
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


def test_dovecot_reads_while_pydsync_writes(dovecot_env: DovecotEnv) -> None:
    """doveadm reads the store again and again while pydsync appends: it never sees a
    broken index, and the message count only grows."""
    user = dovecot_env.user("a", location=SDBOX)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(user.home / "sdbox")],
        env={"PYTHONPATH": str(REPO), "PATH": SAFE_PATH},
        stderr=subprocess.PIPE,
    )
    counts = []
    while writer.poll() is None or not counts:
        proc = user.doveadm("mailbox", "status", "messages", "INBOX", check=False)
        assert proc.stderr == b"", proc.stderr.decode(errors="replace")
        if proc.returncode == 0:
            counts.append(int(proc.stdout.split(b"=")[1]))
    assert writer.wait() == 0, writer.stderr.read() if writer.stderr else ""
    assert counts == sorted(counts) and len(counts) > 2
    final = clean_snapshot(user.home, SDBOX).mailbox("INBOX")
    assert len(final.messages) == 400
