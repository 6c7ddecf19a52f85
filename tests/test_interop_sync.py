"""Two-way `sync` and `sync -1` across {doveadm, pydsync} master × {doveadm, pydsync} server.

Every scenario first runs doveadm<->doveadm on a pair of users, then the combination under
test on another pair with the same steps; the outcomes (exit codes, and both stores as
Dovecot reads them) must match, up to the GUIDs and UIDVALIDITYs each run invents.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from dovecot import (
    SAFE_PATH,
    DovecotEnv,
    DovecotUser,
    MailboxSnapshot,
    StoreSnapshot,
    diff,
    dovecot_version,
    snapshot,
)

pytestmark = pytest.mark.dovecot

REPO = Path(__file__).resolve().parent.parent
LOCATION = "mail_location=maildir:~/Maildir"

Step = Callable[[DovecotUser, DovecotUser], None]


@dataclass(frozen=True)
class Combo:
    master: str
    server: str

    @property
    def id(self) -> str:
        return f"{self.master}->{self.server}"


COMBOS = [Combo("pydsync", "doveadm"), Combo("doveadm", "pydsync"), Combo("pydsync", "pydsync")]


def run_sync(
    env: DovecotEnv, combo: Combo, a: DovecotUser, b: DovecotUser, *options: str
) -> subprocess.CompletedProcess[bytes]:
    if combo.server == "doveadm":
        destination = b.dsync_server_destination()
    else:
        destination = env.command_destination(
            [sys.executable, "-m", "pydsync_server", "-o", LOCATION, "dsync-server"],
            {"USER": b.name, "HOME": str(b.home), "PYTHONPATH": str(REPO), "PYDSYNC_CONFIG": ""},
        )
    if combo.master == "doveadm":
        return a.sync(destination, *options, check=False)
    environ = {"PATH": SAFE_PATH, "USER": a.name, "HOME": str(a.home), "PYTHONPATH": str(REPO)}
    environ["PYDSYNC_CONFIG"] = ""
    argv = [sys.executable, "-m", "pydsync_server", "-o", LOCATION, "sync", *options, *destination]
    return subprocess.run(argv, env=environ, capture_output=True, timeout=300, check=False)


def shape(snap: StoreSnapshot, *, renumbered: bool = False) -> object:
    """What must match between two runs: names, UIDs, flags, bodies (not invented GUIDs).

    With `renumbered`, which of two conflicting mails gets which new UID is left open:
    Dovecot orders them by GUID, and GUIDs differ from run to run.
    """

    def messages(box: MailboxSnapshot) -> object:
        mails = tuple((m.uid, m.flags, m.keywords, m.sha256) for m in box.messages)
        if renumbered:
            return tuple(m.uid for m in box.messages), sorted(m[1:] for m in mails)
        return mails

    return (
        snap.mailbox_list,
        snap.subscriptions,
        tuple((box.name, box.uidnext, messages(box)) for box in snap.mailboxes),
    )


def base(a: DovecotUser, b: DovecotUser) -> None:
    a.mailbox_create("Work", "Lists/Dev", subscribe=True)
    for i in range(3):
        a.save("INBOX", b"Subject: inbox %d\nMessage-ID: <i%d@x>\n\nbody %d\n" % (i, i, i))
    a.save("Work", b"Subject: work\n\nwork\n")
    a.save("Lists/Dev", b"Subject: dev\n\ndev\n")
    a.flags_add("INBOX", 1, "\\Seen")


def both_sides_change(a: DovecotUser, b: DovecotUser) -> None:
    a.save("INBOX", b"Subject: new on a\n\nA\n")
    b.save("Work", b"Subject: new on b\n\nB\n")
    a.flags_add("INBOX", 2, "\\Flagged $Label1")
    b.flags_add("INBOX", 3, "\\Answered")
    b.expunge("INBOX", 1)
    a.mailbox_create("FromA")
    b.mailbox_create("FromB", subscribe=True)


def uid_conflict(a: DovecotUser, b: DovecotUser) -> None:
    a.save("INBOX", b"Subject: a's uid 4\n\nA\n")
    b.save("INBOX", b"Subject: b's uid 4\n\nB\n")
    b.save("INBOX", b"Subject: b's uid 5\n\nB\n")


def flag_conflict(a: DovecotUser, b: DovecotUser) -> None:
    a.flags_remove("INBOX", 1, "\\Seen")
    a.flags_add("INBOX", 1, "\\Flagged")
    b.flags_add("INBOX", 1, "\\Answered keyword1")
    b.flags_add("INBOX", 2, "\\Seen")
    a.flags_add("INBOX", 2, "\\Seen \\Deleted")


# uid 1 after flag_conflict: a's -\\Seen +\\Flagged and b's +\\Answered keyword1, merged.
FLAG_CONFLICT_MERGED = "(1, ('\\\\Answered', '\\\\Flagged'), ('keyword1',)"


def renames_both_sides(a: DovecotUser, b: DovecotUser) -> None:
    a.mailbox_rename("Work", "Job")
    b.mailbox_rename("Lists/Dev", "Lists/Development")
    b.mailbox_delete("Lists/Development")  # then deleted on b


def delete_vs_new_mail(a: DovecotUser, b: DovecotUser) -> None:
    a.mailbox_delete("Work")
    b.save("Lists/Dev", b"Subject: more dev\n\n")


SCENARIOS: dict[str, tuple[list[str], Step]] = {
    "both-sides-change": ([], both_sides_change),
    "uid-conflict": ([], uid_conflict),
    "flag-conflict": ([], flag_conflict),
    "renames": ([], renames_both_sides),
    "delete-vs-new-mail": ([], delete_vs_new_mail),
    "oneway": (["-1"], both_sides_change),
    "full": (["-f"], both_sides_change),
}


def play(
    env: DovecotEnv, combo: Combo, prefix: str, options: list[str], step: Step
) -> tuple[list[int], object, object]:
    a, b = env.user(f"{prefix}a"), env.user(f"{prefix}b")
    base(a, b)
    codes = [run_sync(env, combo, a, b).returncode]
    step(a, b)
    for _ in range(2):  # a second run settles what the first reported as "run again"
        codes.append(run_sync(env, combo, a, b, *options).returncode)
    renumbered = step is uid_conflict
    return (
        codes,
        shape(snapshot(a), renumbered=renumbered),
        shape(snapshot(b), renumbered=renumbered),
    )


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: c.id)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_same_outcome_as_dovecot(dovecot_env: DovecotEnv, combo: Combo, scenario: str) -> None:
    options, step = SCENARIOS[scenario]
    ref_codes, ref_a, ref_b = play(dovecot_env, Combo("doveadm", "doveadm"), "r", options, step)
    codes, got_a, got_b = play(dovecot_env, combo, "t", options, step)
    assert codes == ref_codes
    if step is flag_conflict and dovecot_version() >= (2, 4, 0):
        # 2.4.1 skips the mailbox here (both sides' counters come out equal, pitfall 22)
        # and keeps b's flags apart; pydsync merges them as 2.3 does.
        assert got_a == got_b
        assert FLAG_CONFLICT_MERGED in str(got_a)
        return
    assert got_a == ref_a, f"master side differs from doveadm<->doveadm: {got_a} != {ref_a}"
    assert got_b == ref_b, f"server side differs from doveadm<->doveadm: {got_b} != {ref_b}"


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: c.id)
def test_state_handed_across_implementations(dovecot_env: DovecotEnv, combo: Combo) -> None:
    """A state printed by one implementation drives the next run of the other."""
    a, b = dovecot_env.user("a"), dovecot_env.user("b")
    base(a, b)
    dovecot = Combo("doveadm", "doveadm")
    first = run_sync(dovecot_env, dovecot, a, b, "-s", "")
    assert first.returncode == 0 and first.stdout.strip()
    a.save("INBOX", b"Subject: after state 1\n\n")
    b.flags_add("INBOX", 1, "\\Flagged")
    second = run_sync(dovecot_env, combo, a, b, "-s", first.stdout.decode().strip())
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip()
    a.save("Work", b"Subject: after state 2\n\n")
    third = run_sync(dovecot_env, dovecot, a, b, "-s", second.stdout.decode().strip())
    assert third.returncode == 0, third.stderr
    sa, sb = snapshot(a), snapshot(b)
    assert sa == sb, diff(sa, sb)
    assert any(m.flags == ("\\Flagged", "\\Seen") for m in sa.mailbox("INBOX").messages)
