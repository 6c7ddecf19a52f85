"""`mailbox list`, `mailbox status` and `fetch` print what the real doveadm prints.

Two stores: one written through MaildirStorage (the bundled sample plus awkward
messages) and the Maildir fixture Dovecot 2.3.19 wrote itself. For each store doveadm
runs every command first (as vmail, on the store itself, so file ctimes - the maildir
save dates - are the same for both tools), then pydsync runs the same commands.

Compared byte for byte: exit code and standard output. Not compared: modseqs (pydsync
keeps its own, Dovecot its index's) and the order of mailboxes (doveadm follows its
mailbox list index), so commands that print several mailboxes compare sorted lines
or run per mailbox. The tests fail, not skip, without Dovecot.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dovecot import DovecotEnv, DovecotUser, dovecot_version, require_dovecot

from pydsync_server.cli.main import main
from pydsync_server.sample import fill, mark_seen_by_a_session
from pydsync_server.storage.base import NewMessage
from pydsync_server.storage.maildir import MaildirStorage

pytestmark = pytest.mark.dovecot

# A copy of fixtures/dovecot-2.3.19/maildir/store.tar.gz (see tests/data/README.md).
FIXTURE = Path(__file__).parent / "data" / "dovecot-2.3.19-maildir.tar.gz"
FETCH_FIELDS = (
    "uid guid flags mailbox mailbox-guid seq size.physical size.virtual date.received "
    "date.saved date.sent date.sent.unixtime hdr.subject hdr.x-multi hdr.x-missing hdr body text"
)


def fetch_fields() -> str:
    """pydsync prints date.sent as Dovecot 2.3 does (UTC time, then the zone); 2.4 prints
    the sender's local time instead, so against 2.4 only date.sent.unixtime is compared."""
    if dovecot_version() >= (2, 4, 0):
        return FETCH_FIELDS.replace("date.sent ", "")
    return FETCH_FIELDS


STATUS_FIELDS = "messages recent uidnext uidvalidity unseen vsize guid firstsaved"
FORMATS = ("pager", "flow", "tab", "json")

# Messages that exercise the formatters and header parsing (saved into INBOX).
AWKWARD = (
    b"Subject: no body\nX-Multi: a\n b\nX-Multi: second  \n",
    b"Subject: crlf  \r\nX-A:\ttabbed\r\nDate: Tue, 02 Jan 2024 11:00:00 +0100\r\n\r\nline\r\n",
    b"Subject: nonl\n\nno newline at end",
    b"Subject: big\nDate: garbage\n\n" + b"".join(b"line %06d ........\n" % i for i in range(1500)),
    b'Subject: =?utf-8?q?r=C3=A9sum=C3=A9?= \xc3\xa9 \x01 "q" \\ /\n\nb\n',
)


def _commands(boxes: list[str]) -> dict[str, tuple[str, list[str]]]:
    """id -> (how to compare, argv after the global options)."""
    cases: dict[str, tuple[str, list[str]]] = {
        "list": ("sorted", ["mailbox", "list"]),
        "list -s": ("sorted", ["mailbox", "list", "-s"]),
        "list pattern": ("sorted", ["mailbox", "list", "W*", "I*"]),
        "list one name": ("exact", ["mailbox", "list", "Work"]),
        "list missing name": ("exact", ["mailbox", "list", "nonexistent/x"]),
        "list -7": ("sorted", ["mailbox", "list", "-7"]),
        "status -t": ("exact", ["mailbox", "status", "-t", "all", "*"]),
        "status missing": ("exact", ["mailbox", "status", "all", "Nope"]),
        "status bad field": ("exact", ["mailbox", "status", "bogus", "INBOX"]),
        "status -t guid": ("exact", ["mailbox", "status", "-t", "guid", "INBOX"]),
        "fetch bad field": ("exact", ["fetch", "bogus", "all"]),
        "fetch bad uid set": ("exact", ["fetch", "uid", "mailbox", "INBOX", "uid", "x"]),
        "fetch no such box": ("exact", ["fetch", "uid", "mailbox", "Nope"]),
    }
    for box in boxes:
        for fmt in FORMATS:
            cases[f"status {fmt} {box}"] = (
                "exact",
                ["-f", fmt, "mailbox", "status", STATUS_FIELDS, box],
            )
            cases[f"fetch {fmt} {box}"] = (
                "exact",
                ["-f", fmt, "fetch", fetch_fields(), "mailbox", box],
            )
    for query in (
        ["uid", "2:3"],
        ["uid", "4:*"],
        ["uid", "*:2"],
        ["uid", "*"],
        ["2:3"],
        ["4:*"],
        ["*"],
        ["3:1"],
        ["seen"],
        ["unseen"],
        ["flagged"],
        ["keyword", "todo"],
        ["unkeyword", "todo"],
        ["larger", "1000"],
        ["smaller", "300"],
        ["all"],
    ):
        cases[f"search {' '.join(query)}"] = (
            "exact",
            ["-f", "tab", "fetch", "uid guid", "mailbox", "INBOX", *query],
        )
    return cases


@dataclass
class Outcome:
    code: int
    out: bytes


@dataclass
class Comparison:
    doveadm: dict[str, Outcome]
    ours: dict[str, Outcome]


def _chown(root: Path) -> None:
    import pwd

    vmail = pwd.getpwnam("vmail")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, vmail.pw_uid, vmail.pw_gid)


def _run_both(user: DovecotUser, cases: dict[str, tuple[str, list[str]]]) -> Comparison:
    """Every doveadm command first, then ours (which may add files doveadm cannot read)."""
    theirs = {}
    for name, (_, args) in cases.items():
        proc = user.doveadm(*args, check=False)
        theirs[name] = Outcome(proc.returncode, proc.stdout)
    ours = {}
    environ = {"USER": user.name, "HOME": str(user.home)}
    for name, (_, args) in cases.items():
        out, err = io.BytesIO(), io.StringIO()
        code = main(
            ["-o", "mail_location=maildir:~/Maildir", *args],
            stdout=out,
            stderr=err,
            environ=environ,
        )
        ours[name] = Outcome(code, out.getvalue())
    return Comparison(theirs, ours)


@pytest.fixture(scope="module")
def local_time() -> Iterator[None]:
    """doveadm runs with a cleared environment: compare in the system's own time zone."""
    saved = os.environ.pop("TZ", None)
    time.tzset()
    yield
    if saved is not None:
        os.environ["TZ"] = saved
    time.tzset()


def _write_store(root: Path) -> None:
    storage = MaildirStorage(root, hostname="pydsync-test")
    fill(storage)
    for name in ("Empty", "Été/Sous"):
        storage.create_mailbox(name)
    storage.set_subscribed("Été/Sous", True)
    box = storage.open_mailbox("INBOX")
    with box.transaction() as tx:
        uid = box.status().uid_next
        for i, body in enumerate(AWKWARD):
            tx.save(
                NewMessage(
                    uid=uid + i,
                    guid=f"awkward{i}",
                    body=io.BytesIO(body),
                    flags=0x08 if i % 2 else 0,
                    received_date=1700000000 + i,
                )
            )
    box.close()
    mark_seen_by_a_session(storage)
    storage.close()


@pytest.fixture(scope="module")
def written(local_time: None) -> Iterator[tuple[Comparison, dict[str, tuple[str, list[str]]]]]:
    require_dovecot()
    with DovecotEnv() as env:
        user = env.user("a")
        _write_store(user.home / "Maildir")
        _chown(user.home)
        cases = _commands(["INBOX", "Work", "Archive/2023", "Empty", "Été/Sous"])
        yield _run_both(user, cases), cases


@pytest.fixture(scope="module")
def fixture_store(
    local_time: None,
) -> Iterator[tuple[Comparison, dict[str, tuple[str, list[str]]]]]:
    require_dovecot()
    with DovecotEnv() as env:
        user = env.user("a")
        with tarfile.open(FIXTURE) as tar:
            tar.extractall(user.home, filter="tar")
        _chown(user.home)
        cases = _commands(["INBOX", "Work", "Work/Projects"])
        yield _run_both(user, cases), cases


def _check(result: Comparison, cases: dict[str, tuple[str, list[str]]], name: str) -> None:
    mode, _ = cases[name]
    theirs, ours = result.doveadm[name], result.ours[name]
    assert ours.code == theirs.code, name
    if mode == "sorted":
        assert sorted(ours.out.splitlines()) == sorted(theirs.out.splitlines())
    else:
        assert ours.out == theirs.out


WRITTEN_IDS = list(_commands(["INBOX", "Work", "Archive/2023", "Empty", "Été/Sous"]))
FIXTURE_IDS = list(_commands(["INBOX", "Work", "Work/Projects"]))


@pytest.mark.parametrize("name", WRITTEN_IDS)
def test_store_written_by_pydsync(
    written: tuple[Comparison, dict[str, tuple[str, list[str]]]], name: str
) -> None:
    _check(*written, name)


@pytest.mark.parametrize("name", FIXTURE_IDS)
def test_store_written_by_dovecot(
    fixture_store: tuple[Comparison, dict[str, tuple[str, list[str]]]], name: str
) -> None:
    _check(*fixture_store, name)


def test_outputs_are_not_trivial(
    written: tuple[Comparison, dict[str, tuple[str, list[str]]]],
) -> None:
    """Guard against comparing two empty outputs: the key commands print something."""
    result, _ = written
    assert result.ours["fetch pager INBOX"].out.count(b"\f\n") == 7  # 8 messages
    assert b"Subject: big" in result.ours["fetch tab INBOX"].out
    assert result.ours["status missing"].code == 68
    assert result.ours["fetch bad field"].code == 75
