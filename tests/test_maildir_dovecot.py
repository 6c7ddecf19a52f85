"""The maildir driver against the real Dovecot 2.3.19: (a) pydsync reads a store Dovecot
wrote, (b) Dovecot reads exactly what pydsync wrote, (c) pydsync notices Dovecot's changes.

Needs doveadm and the `vmail` user; the tests fail (never skip) without them.
"""

from __future__ import annotations

import hashlib
import io
import os
import pwd
import re
import shutil
import tarfile
import time
from pathlib import Path

import pytest
from dovecot import (
    DovecotEnv,
    DovecotUser,
    MailboxSnapshot,
    MessageSnapshot,
    StoreSnapshot,
    require_dovecot,
    snapshot,
)

from pydsync_server.cli.mailboxes import listed_entries
from pydsync_server.storage.base import (
    LogType,
    MessageChange,
    NewMessage,
    guid128,
    name_hash,
)
from pydsync_server.storage.maildir import MaildirStorage

pytestmark = pytest.mark.dovecot

FIXTURE = Path(__file__).resolve().parent / "data" / "fixtures" / "dovecot-2.3.19" / "maildir"
FLAG_NAMES = {
    0x01: "\\Answered",
    0x02: "\\Flagged",
    0x04: "\\Deleted",
    0x08: "\\Seen",
    0x10: "\\Draft",
}
SEEN, FLAGGED, ANSWERED, DRAFT = 0x08, 0x02, 0x01, 0x10


def _flag_names(flags: int) -> tuple[str, ...]:
    return tuple(sorted(name for bit, name in FLAG_NAMES.items() if flags & bit))


def _chown_vmail(root: Path) -> None:
    entry = pwd.getpwnam("vmail")
    os.chown(root, entry.pw_uid, entry.pw_gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)


def _blocks(text: str) -> list[dict[str, str]]:
    """`key: value` blocks separated by form feeds (doveadm's pager formatter)."""
    blocks: list[dict[str, str]] = []
    for chunk in re.split(r"\n\f?\n|\f\n", text):
        fields = dict(
            line.split(": ", 1)
            for line in chunk.splitlines()
            if ": " in line and not line.startswith("$")
        )
        if "uid" in fields:
            blocks.append(fields)
    return blocks


def _pydsync_view(storage: MaildirStorage) -> StoreSnapshot:
    """What pydsync sees, in the shape tests/dovecot.py gives Dovecot's view."""
    boxes = []
    entries = storage.list_mailboxes()
    for entry in entries:
        if entry.guid is None:
            continue
        box = storage.open_mailbox(entry.vname)
        messages = []
        for m in box.messages():
            with box.open_message(m.uid) as fh:
                body = fh.read()
            messages.append(
                MessageSnapshot(
                    m.uid, m.guid, _flag_names(m.flags), tuple(sorted(m.keywords)), len(body),
                    hashlib.sha256(body).hexdigest(),
                )
            )  # fmt: skip
        st = box.status()
        boxes.append(
            MailboxSnapshot(
                entry.vname, st.guid.hex(), st.uid_validity, st.uid_next, tuple(messages)
            )
        )
    return StoreSnapshot(
        tuple(sorted(e.vname for e in listed_entries(storage))),  # with implicit parents
        tuple(sorted(storage.subscriptions())),
        tuple(sorted(boxes, key=lambda b: b.name)),
    )


# -- (a) a store written by Dovecot -----------------------------------------------------


def _extract_fixture(dest: Path) -> Path:
    with tarfile.open(FIXTURE / "store.tar.gz") as tar:
        tar.extractall(dest, filter="tar")
    return dest / "Maildir"


def test_reads_the_dovecot_fixture(tmp_path: Path) -> None:
    require_dovecot()
    root = _extract_fixture(tmp_path)
    uidlists = {p: p.read_bytes() for p in root.rglob("dovecot-uidlist")}
    index_files = sorted(root.rglob("dovecot.index*"))
    storage = MaildirStorage(root)
    details = (FIXTURE / "details.txt").read_text()

    assert [e.vname for e in storage.list_mailboxes()] == ["INBOX", "Work", "Work/Projects"]
    for line in details.splitlines():
        name, _, rest = line.partition(" messages=")
        if not rest:
            continue
        values = dict(item.split("=") for item in ("messages=" + rest).split())
        st = storage.open_mailbox(name).status()
        numbers = [int(values[k]) for k in ("messages", "uidnext", "uidvalidity")]
        assert [st.messages, st.uid_next, st.uid_validity, st.guid.hex()] == [
            *numbers,
            values["guid"],
        ]
        # no sidecar yet: modseqs restart (storage-formats.md §8), a random step up
        assert (st.highest_modseq == 1) == (st.messages == 0)
        assert st.highest_modseq <= 1 + (1 << 16)

    expected = _blocks(details)
    assert len(expected) == 4
    for fields in expected:
        box = storage.open_mailbox(fields["mailbox"])
        info = {m.uid: m for m in box.messages()}[int(fields["uid"])]
        flags = [f for f in fields["flags"].split() if f != "\\Recent"]
        assert info.guid == fields["guid"]
        assert _flag_names(info.flags) == tuple(sorted(f for f in flags if f.startswith("\\")))
        assert sorted(info.keywords) == sorted(f for f in flags if not f.startswith("\\"))
        received = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.received_date))
        assert received == fields["date.received"]
        assert info.modseq == 1 and box.changes_since(0) == []
    # expected.txt is the same fetch without mailbox names, in the same order
    assert [
        (b["uid"], b["guid"], b["flags"]) for b in _blocks((FIXTURE / "expected.txt").read_text())
    ] == [(b["uid"], b["guid"], b["flags"]) for b in expected]

    assert storage.subscriptions() == {"INBOX", "Work"}
    assert [(r.type, r.key) for r in storage.mailbox_log()] == [
        (LogType.SUBSCRIBE, name_hash("INBOX")),
        (LogType.SUBSCRIBE, name_hash("Work")),
    ]
    # reading wrote only the sidecars (when the store closes): uidlists untouched, no
    # index file of ours
    storage.close()
    assert {p: p.read_bytes() for p in root.rglob("dovecot-uidlist")} == uidlists
    assert sorted(root.rglob("dovecot.index*")) == index_files
    assert (root / "pydsync-changes").is_file() and (root / ".Work/pydsync-changes").is_file()
    # ... and Dovecot still reads the same store with them in place
    assert snapshot(tmp_path) == _pydsync_view(storage)


# -- (b) a store written by pydsync --------------------------------------------------------

BODIES = {
    "crlf": b"From: a@example.org\r\nSubject: crlf\r\n\r\nline 1\r\nline 2\r\n",
    "lf": b"From: a@example.org\nSubject: lf\n\nline 1\nFrom here\n",
    "empty": b"",
    "8bit": b"Subject: caf\xc3\xa9\r\n\r\n\xff\xfe\x80 bytes\r\n",
}


def _write_store(root: Path, layout: str, utf8: bool, separate: bool) -> MaildirStorage:
    storage = MaildirStorage(
        root,
        layout=layout,
        utf8_names=utf8,
        control_dir=root.parent / "control" if separate else None,
        index_dir=root.parent / "index" if separate else None,
    )
    for name in ("Été/Sub", "Work", "Work/Deep/Er", "a~b", "&amp"):
        storage.create_mailbox(name)
    usable = f"1795913345.M1P1.vm,S={len(BODIES['lf'])},W={len(BODIES['lf']) + 5}"
    plan = {
        "INBOX": [
            NewMessage(1, "0123456789abcdef0123456789abcdef", io.BytesIO(BODIES["crlf"]), SEEN),
            NewMessage(3, usable, io.BytesIO(BODIES["lf"]), ANSWERED | FLAGGED,
                       frozenset({"todo", "$Label1"}), received_date=1_600_000_000),
            NewMessage(7, "", io.BytesIO(BODIES["empty"]), DRAFT),
        ],
        "Été/Sub": [NewMessage(2, "g-été", io.BytesIO(BODIES["8bit"]), 0x1F, frozenset({"x"}))],
        "Work/Deep/Er": [NewMessage(1, "deep", io.BytesIO(BODIES["lf"]), received_date=86400)],
    }  # fmt: skip
    for vname, messages in plan.items():
        box = storage.open_mailbox(vname)
        with box.transaction() as t:
            for message in messages:
                t.save(message)
    for name in ("INBOX", "Été/Sub", "Work/Deep/Er"):
        storage.set_subscribed(name, True)
    return storage


def _dovecot_user(env: DovecotEnv, name: str, src_home: Path, location: str) -> DovecotUser:
    user = env.user(name, location=location)
    shutil.copytree(src_home, user.home, symlinks=True, dirs_exist_ok=True)
    _chown_vmail(user.home)
    return user


@pytest.mark.parametrize(
    ("location", "layout", "utf8", "separate"),
    [
        ("maildir:~/Maildir", "maildir++", False, False),
        ("maildir:~/Maildir:LAYOUT=fs", "fs", False, False),
        ("maildir:~/Maildir:UTF-8", "maildir++", True, False),
        ("maildir:~/Maildir:CONTROL=~/control:INDEX=~/index", "maildir++", False, True),
        ("maildir:~/Maildir:LAYOUT=fs:CONTROL=~/control:INDEX=~/index", "fs", False, True),
    ],
)
def test_dovecot_reads_what_pydsync_wrote(
    tmp_path: Path,
    dovecot_env: DovecotEnv,
    location: str,
    layout: str,
    utf8: bool,
    separate: bool,
) -> None:
    home = tmp_path / "home"
    storage = _write_store(home / "Maildir", layout, utf8, separate)
    mine = _pydsync_view(storage)
    assert snapshot(home, location=location) == mine

    user = _dovecot_user(dovecot_env, "b", home, location)
    rows = user.doveadm("-f", "tab", "fetch", "mailbox uid date.received.unixtime", "all")
    received = {
        (r[0], int(r[1])): int(r[2])
        for r in (line.split("\t") for line in rows.stdout.decode().splitlines()[1:])
    }
    for entry in storage.list_mailboxes():
        if entry.guid is not None:
            for m in storage.open_mailbox(entry.vname).messages():
                assert received[(entry.vname, m.uid)] == m.received_date
    assert received[("INBOX", 3)] == 1_600_000_000
    # Dovecot took our uidlists as they are (a corrupt one would have been recreated)
    uidlists = list(home.rglob("dovecot-uidlist"))
    assert len(uidlists) == 6
    for path in uidlists:
        copy = user.home / path.relative_to(home)
        assert copy.read_text().splitlines()[0] == path.read_text().splitlines()[0]


# -- (c) Dovecot changes a pydsync store ----------------------------------------------------


def test_pydsync_notices_dovecot_changes(dovecot_env: DovecotEnv) -> None:
    user = dovecot_env.user("c")
    storage = MaildirStorage(user.mail_path)
    box = storage.open_mailbox("INBOX")
    with box.transaction() as t:
        t.save(NewMessage(1, "guid-one", io.BytesIO(b"Subject: 1\n\none\n")))
        t.save(NewMessage(2, "guid-two", io.BytesIO(b"Subject: 2\n\ntwo\n"), SEEN))
        t.save(NewMessage(3, "f" * 32, io.BytesIO(b"Subject: 3\n\nthree\n"), FLAGGED))
    storage.create_mailbox("Old")
    old_guid = storage.open_mailbox("Old").status().guid
    box.refresh()
    before = box.status()
    _chown_vmail(user.home)

    user.save("INBOX", b"Subject: from dovecot\n\nnew\n")
    user.flags_add("INBOX", 1, "\\Seen kw1")
    user.flags_remove("INBOX", 3, "\\Flagged")
    user.expunge("INBOX", 2)
    user.mailbox_rename("Old", "New")
    user.mailbox_delete("New")

    box.refresh()
    after = box.status()
    modseq = after.highest_modseq  # one change, stepped randomly (pitfall 22)
    assert before.highest_modseq < modseq <= before.highest_modseq + (1 << 16)
    assert (after.guid, after.uid_validity) == (before.guid, before.uid_validity)
    assert box.changes_since(before.highest_modseq) == [
        MessageChange(1, modseq, add_flags=SEEN, keyword_ops=("+kw1",)),
        MessageChange(2, modseq, expunged=True, guid128=guid128("guid-two")),
        MessageChange(3, modseq, remove_flags=FLAGGED),
    ]
    infos = {m.uid: m for m in box.messages()}
    assert sorted(infos) == [1, 3, 4] and infos[4].modseq == modseq
    assert (infos[1].guid, infos[1].flags, infos[1].keywords) == ("guid-one", SEEN, {"kw1"})
    assert box.open_message(4).read() == b"Subject: from dovecot\n\nnew\n"
    log = [(r.type, r.key) for r in storage.mailbox_log()]
    assert (LogType.RENAME, name_hash("New")) in log and (LogType.DELETE_MAILBOX, old_guid) in log

    # pydsync writes again on top of Dovecot's index; Dovecot follows
    with box.transaction() as t:
        t.update_flags(4, add_flags=FLAGGED, add_keywords=frozenset({"kw2"}))
        t.save(NewMessage(5, "guid-five", io.BytesIO(b"Subject: 5\n\nfive\n")))
    _chown_vmail(user.home)
    rows = user.doveadm("-f", "tab", "fetch", "uid guid flags", "mailbox", "INBOX", "all")
    got = [line.split("\t") for line in rows.stdout.decode().splitlines()[1:]]
    assert [(u, g, sorted(f.replace("\\Recent", "").split())) for u, g, f in got] == [
        ("1", "guid-one", ["\\Seen", "kw1"]),
        ("3", "f" * 32, []),
        ("4", infos[4].guid, ["\\Flagged", "kw2"]),
        ("5", "guid-five", []),
    ]
    box.refresh()
    assert box.changes_since(modseq) == []  # our own writes are not reported
