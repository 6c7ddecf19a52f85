"""A step's expectations checked against Dovecot's reading of the stores.

Each check returns readable problems (empty = as expected). Messages are named by the
subject they were saved with (ops.message_body makes the bytes, so their SHA-256 names them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .harness import StoreSnapshot, diff, normalize_for_compare
from .ops import message_body
from .scenario import SideExpect


class Subjects:
    """Subject of a stored message, found by the SHA-256 of its bytes."""

    def __init__(self, subjects: Iterable[str]) -> None:
        self._by_hash = {hashlib.sha256(message_body(s)).hexdigest(): s for s in subjects}

    def of(self, sha256: str) -> str:
        return self._by_hash.get(sha256, f"<unknown message {sha256[:12]}>")


def check_equal(a: StoreSnapshot, b: StoreSnapshot, ignore: tuple[str, ...]) -> list[str]:
    if ignore:
        a, b = normalize_for_compare(a, ignore), normalize_for_compare(b, ignore)
    return [] if a == b else ["a != b:\n" + diff(a, b)]


def check_unchanged(side: str, before: StoreSnapshot, after: StoreSnapshot) -> list[str]:
    return [] if before == after else [f"{side} changed by the run:\n" + diff(before, after)]


def check_side(side: str, snap: StoreSnapshot, expect: SideExpect, names: Subjects) -> list[str]:
    problems: list[str] = []
    if expect.mailboxes is not None and sorted(expect.mailboxes) != list(snap.mailbox_list):
        problems.append(f"mailboxes {list(snap.mailbox_list)}, expected {sorted(expect.mailboxes)}")
    subs = expect.subscriptions
    if subs is not None and sorted(subs) != list(snap.subscriptions):
        problems.append(f"subscriptions {list(snap.subscriptions)}, expected {sorted(subs)}")
    problems += _per_mailbox(snap, expect, names)
    problems += _flags(snap, expect, names)
    return [f"{side}: {p}" for p in problems]


def _messages(snap: StoreSnapshot, mailbox: str) -> list[tuple[int, str]] | None:
    """(uid, sha256) of a mailbox's messages by UID; None when it does not exist."""
    try:
        return [(m.uid, m.sha256) for m in snap.mailbox(mailbox).messages]
    except KeyError:
        return None


def _measure(label: str, msgs: list[tuple[int, str]], names: Subjects) -> object:
    if label == "count":
        return len(msgs)
    if label == "uids":
        return tuple(uid for uid, _ in msgs)
    subjects = tuple(names.of(h) for _, h in msgs)
    return tuple(sorted(subjects)) if label == "subjects" else subjects


def _matches(got: object, wanted: object) -> bool:
    """Equality where a ``*`` in an expected subject list matches any one subject."""
    if isinstance(got, tuple) and isinstance(wanted, tuple) and len(got) == len(wanted):
        return all(w == "*" or g == w for g, w in zip(got, wanted, strict=True))
    return got == wanted


def _per_mailbox(snap: StoreSnapshot, expect: SideExpect, names: Subjects) -> list[str]:
    problems: list[str] = []
    tables: dict[str, dict[str, object]] = {
        "count": dict(expect.count),
        "contents": dict(expect.contents),
        "subjects": {k: tuple(sorted(v)) for k, v in expect.subjects.items()},
        "uids": dict(expect.uids),
    }
    for label, table in tables.items():
        for mailbox, wanted in table.items():
            msgs = _messages(snap, mailbox)
            got = None if msgs is None else _measure(label, msgs, names)
            if not _matches(got, wanted):
                shown = "no such mailbox" if msgs is None else repr(got)
                problems.append(f"{label} {mailbox}: {shown}, expected {wanted!r}")
    return problems


def _flags(snap: StoreSnapshot, expect: SideExpect, names: Subjects) -> list[str]:
    problems: list[str] = []
    for key, wanted in expect.flags.items():
        mailbox, _, ref = key.rpartition(" ")
        try:
            box = snap.mailbox(mailbox)
        except KeyError:
            problems.append(f"flags {key}: no such mailbox")
            continue
        found = [
            m
            for m in box.messages
            if (str(m.uid) == ref if ref.isdigit() else names.of(m.sha256) == ref)
        ]
        if len(found) != 1:
            problems.append(f"flags {key}: {len(found)} messages match")
            continue
        got = sorted(found[0].flags + found[0].keywords)
        if got != sorted(wanted):
            problems.append(f"flags {key}: {got}, expected {sorted(wanted)}")
    return problems
