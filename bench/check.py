"""Correctness checks: snapshot a mail home through doveadm and compare snapshots.

A backup must reproduce the source exactly. A two-way sync must leave both sides equal
to each other (mailboxes, UIDs, UIDNEXT, …) and, message by message (mailbox, GUID),
equal to the merge of what each side changed since the last sync.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness import BenchError, Dovecot, chown_vmail, clone_tree, sh

FETCH_FIELDS = ("mailbox", "uid", "guid", "flags", "date.received", "size.physical")
MAIL_FIELDS = ("guid", "flags", "date.received", "body sha1")

MailKey = tuple[str, int]  # (mailbox, uid)
Mail = tuple[str, str, str, str]  # MAIL_FIELDS
Content = dict[tuple[str, str], tuple[str, str, str]]  # (mailbox, guid) -> flags, date, sha1


@dataclass(frozen=True)
class Snapshot:
    """What doveadm shows of one mail home."""

    mailboxes: dict[str, dict[str, str]]  # name -> messages, uidnext, uidvalidity, guid
    subscriptions: list[str]
    mails: dict[MailKey, Mail]

    def content(self) -> Content:
        return {(box, m[0]): m[1:] for (box, _), m in self.mails.items()}


def parse_fetch(stream: IO[bytes]) -> Iterator[dict[str, str]]:
    """Records of `doveadm -f pager fetch '<FETCH_FIELDS> text'`.

    pager prints `key: value` lines, then `text:` and the raw message, and "\\f\\n"
    between records; size.physical says how many bytes the message takes.
    """
    while True:
        rec: dict[str, str] = {}
        for key in FETCH_FIELDS:
            line = stream.readline()
            if not line and not rec:
                return
            k, _, v = line.decode("utf-8", "replace").rstrip("\n").partition(":")
            if k != key:
                raise BenchError(f"fetch output: expected {key!r}, got {line[:80]!r}")
            rec[key] = v.strip()
        if stream.readline() != b"text:\n":
            raise BenchError(f"fetch output: no text after {rec}")
        body = stream.read(int(rec["size.physical"]))
        # Dovecot stores LF line ends when it saves (mail_save_crlf=no): hash them alike.
        rec["sha1"] = hashlib.sha1(body.replace(b"\r\n", b"\n")).hexdigest()
        sep = stream.read(2)
        if sep not in (b"", b"\f\n"):
            raise BenchError(f"fetch output out of step after {rec['mailbox']} uid {rec['uid']}")
        yield rec


def tab_rows(out: bytes) -> list[dict[str, str]]:
    lines = out.decode("utf-8", "replace").splitlines()
    if not lines:
        return []
    names = lines[0].split("\t")
    return [dict(zip(names, ln.split("\t"), strict=False)) for ln in lines[1:]]


def snapshot(dc: Dovecot, home: Path, strict: bool = False) -> Snapshot:
    """Mailbox list/status, subscriptions and every mail (GUID, flags, body hash).

    `strict`: any word on doveadm's stderr fails the read. A dbox store that Dovecot
    must rebuild ("rebuilding indexes", "corrupted") is still readable afterwards, so
    only the messages of its first reads tell (storage-formats §3.7, §4.4).
    """
    said: list[str] = []

    def run(cmd: list[str], rest: list[str]) -> bytes:
        p = sh(dc.argv("check", home, cmd, rest, fmt="tab"))
        said.append(p.stderr.decode(errors="replace").strip())
        return p.stdout

    status = run(["mailbox", "status"], ["messages uidnext uidvalidity guid", "*"])
    subs = run(["mailbox", "list"], ["-s"])
    if strict and any(said):
        raise BenchError("doveadm printed: " + " | ".join(x for x in said if x)[-600:])
    argv = dc.argv("check", home, ["fetch"], [" ".join(FETCH_FIELDS) + " text", "all"], fmt="pager")
    mails: dict[MailKey, Mail] = {}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        assert p.stdout is not None and p.stderr is not None
        for r in parse_fetch(p.stdout):
            flags = " ".join(sorted(f for f in r["flags"].split() if f != "\\Recent"))
            key = (r["mailbox"], int(r["uid"]))
            mails[key] = (r["guid"], flags, r["date.received"], r["sha1"])
        err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0 or err.strip():
        raise BenchError(f"doveadm fetch exited {p.returncode}: {err.strip()[-600:]}")
    return Snapshot(
        {r["mailbox"]: r for r in tab_rows(status)},
        sorted(r["mailbox"] for r in tab_rows(subs)),
        mails,
    )


def snapshot_clone(dc: Dovecot, home: Path, scratch: Path) -> Snapshot:
    """Snapshot a reference home through a clone, so doveadm leaves its index alone."""
    clone_tree(home, scratch)
    chown_vmail(scratch)
    try:
        return snapshot(dc, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def compare(src: Snapshot, dst: Snapshot, what: str = "") -> list[str]:
    """Human-readable differences, empty when dst equals src mailbox for mailbox, UID for UID."""
    probs: list[str] = []
    if src.mailboxes.keys() != dst.mailboxes.keys():
        probs.append(f"mailboxes {sorted(src.mailboxes)} != {sorted(dst.mailboxes)}")
    for name, row in src.mailboxes.items():
        other = dst.mailboxes.get(name, row)
        diff = [f"{k} {v} != {other.get(k)}" for k, v in row.items() if other.get(k) != v]
        if diff:
            probs.append(f"mailbox {name}: " + ", ".join(diff))
    if src.subscriptions != dst.subscriptions:
        probs.append(f"subscriptions {src.subscriptions} != {dst.subscriptions}")
    sm, dm = src.mails, dst.mails
    missing, extra = sm.keys() - dm.keys(), dm.keys() - sm.keys()
    if missing:
        probs.append(f"{len(missing)} mails missing, e.g. {sorted(missing)[:3]}")
    if extra:
        probs.append(f"{len(extra)} extra mails, e.g. {sorted(extra)[:3]}")
    for i, name in enumerate(MAIL_FIELDS):
        bad = sorted(k for k in sm.keys() & dm.keys() if sm[k][i] != dm[k][i])
        if bad:
            k = bad[0]
            probs.append(
                f"{len(bad)} mails differ in {name}, e.g. {k}: {sm[k][i]!r} != {dm[k][i]!r}"
            )
    return [f"{what}{p}" for p in probs]


def merge(base: Snapshot, side_a: Snapshot, side_b: Snapshot) -> Content:
    """What a two-way sync must end with, given the last synced state and each side now.

    A mail expunged on either side is gone; a changed flag set wins over an unchanged
    one (the benchmark never changes one mail on both sides); new mails of both sides
    are kept (dsync-algorithm: expunges and flag changes since the last sync).
    """
    old, a, b = base.content(), side_a.content(), side_b.content()
    out: Content = {}
    for key, was in old.items():
        if key in a and key in b:
            out[key] = a[key] if a[key] != was else b[key]
    for side in (a, b):
        out.update((k, v) for k, v in side.items() if k not in old)
    return out


def compare_content(want: Content, got: Snapshot, what: str) -> list[str]:
    """Differences between the expected mails (by mailbox and GUID) and one side."""
    have = got.content()
    probs: list[str] = []
    missing, extra = want.keys() - have.keys(), have.keys() - want.keys()
    if missing:
        probs.append(f"{what}{len(missing)} mails missing, e.g. {sorted(missing)[:2]}")
    if extra:
        probs.append(f"{what}{len(extra)} unexpected mails, e.g. {sorted(extra)[:2]}")
    for i, name in enumerate(MAIL_FIELDS[1:]):
        bad = sorted(k for k in want.keys() & have.keys() if want[k][i] != have[k][i])
        if bad:
            k = bad[0]
            probs.append(
                f"{what}{len(bad)} mails differ in {name}, e.g. {k}: "
                f"{want[k][i]!r} != {have[k][i]!r}"
            )
    return probs


def check_sync(
    want: Content, side_a: Snapshot, side_b: Snapshot, exact: Snapshot | None
) -> list[str]:
    """Both sides hold `want` and equal each other; with `exact`, both also equal it."""
    probs = compare_content(want, side_a, "side a: ") + compare_content(want, side_b, "side b: ")
    probs += compare(side_a, side_b, "a vs b: ")
    if exact is not None:
        probs += compare(exact, side_a, "a vs before: ")
    return probs
