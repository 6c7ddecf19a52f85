"""A local stateful sync between two Maildirs changed by Dovecot on both sides.

The benchmark's check found each side re-adding the flags it had removed (flags of
mail seen before tracking began were all treated as "added"); this pins the fix.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dovecot import SAFE_PATH, DovecotEnv, DovecotUser, diff, snapshot

pytestmark = pytest.mark.dovecot

REPO = Path(__file__).resolve().parent.parent


def pydsync(user: DovecotUser, *args: str) -> subprocess.CompletedProcess[bytes]:
    environ = {
        "PATH": SAFE_PATH,
        "USER": user.name,
        "HOME": str(user.home),
        "PYTHONPATH": str(REPO),
        "PYDSYNC_CONFIG": "",
    }
    argv = [sys.executable, "-m", "pydsync_server", "-o", "mail_location=maildir:~/Maildir"]
    return subprocess.run(
        [*argv, *args], env=environ, capture_output=True, timeout=120, check=False
    )


def test_stateful_local_sync_keeps_both_sides_flag_changes(dovecot_env: DovecotEnv) -> None:
    a = dovecot_env.user("a")
    other = f"maildir:{a.home}/B"
    for i in range(30):
        a.save("INBOX", b"Subject: %d\nMessage-ID: <%d@x>\n\nbody\n" % (i, i))
    a.flags_add("INBOX", "1:10", "\\Seen")
    first = pydsync(a, "sync", "-s", "", other)
    assert first.returncode == 0, first.stderr
    a.flags_remove("INBOX", "1,2", "\\Seen")
    a.flags_add("INBOX", 20, "\\Flagged")
    a.save("INBOX", b"Subject: new on a\n\n")
    on_b = ["-o", f"mail_location={other}"]
    a.doveadm(*on_b, "flags", "remove", "\\Seen", "mailbox", "INBOX", "uid", "3,4")
    a.doveadm(*on_b, "flags", "add", "\\Answered", "mailbox", "INBOX", "uid", "25")
    a.doveadm(*on_b, "save", "-m", "INBOX", input=b"Subject: new on b\n\n")
    second = pydsync(a, "sync", "-s", first.stdout.decode().strip(), other)
    assert second.returncode == 0, second.stderr
    sa, sb = snapshot(a), snapshot(a.home, location=other)
    assert sa.mailboxes[0].messages == sb.mailboxes[0].messages, diff(sa, sb)
    flags = {m.uid: m.flags for m in sa.mailbox("INBOX").messages}
    assert [flags[uid] for uid in (1, 2, 3, 4, 5)] == [(), (), (), (), ("\\Seen",)]
    assert flags[20] == ("\\Flagged",) and flags[25] == ("\\Answered",)
    assert len(flags) == 32
