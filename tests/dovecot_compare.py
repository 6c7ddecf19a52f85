"""What a read of a mail store yields (StoreSnapshot), and how two reads are compared."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class MessageSnapshot:
    uid: int
    guid: str
    flags: tuple[str, ...]  # system flags, sorted, without \Recent (session state)
    keywords: tuple[str, ...]  # sorted
    size: int
    sha256: str


@dataclass(frozen=True)
class MailboxSnapshot:
    name: str
    guid: str
    uidvalidity: int
    uidnext: int
    messages: tuple[MessageSnapshot, ...]  # by uid


@dataclass(frozen=True)
class StoreSnapshot:
    mailbox_list: tuple[str, ...]  # `mailbox list`, sorted (includes non-selectable parents)
    subscriptions: tuple[str, ...]  # `mailbox list -s`, sorted
    mailboxes: tuple[MailboxSnapshot, ...]  # selectable mailboxes, by name

    def mailbox(self, name: str) -> MailboxSnapshot:
        for box in self.mailboxes:
            if box.name == name:
                return box
        raise KeyError(name)


_MAILBOX_FIELDS = {"mailbox_guid": "guid", "uidvalidity": "uidvalidity", "uidnext": "uidnext"}
_MESSAGE_FIELDS = {"message_guid": "guid", "uid": "uid", "flags": "flags", "keywords": "keywords"}
_STORE_FIELDS = {"subscriptions", "mailbox_list"}


def normalize_for_compare(
    snap: StoreSnapshot, ignore: Iterable[str] = ("uidnext",)
) -> StoreSnapshot:
    """Blank fields that legitimately differ, so == compares the rest.

    Names: uidnext, uidvalidity, mailbox_guid, message_guid, uid, flags, keywords,
    subscriptions, mailbox_list.
    """
    ignore = set(ignore)
    unknown = ignore - set(_MAILBOX_FIELDS) - set(_MESSAGE_FIELDS) - _STORE_FIELDS
    if unknown:
        raise ValueError(f"unknown snapshot fields: {sorted(unknown)}")
    blank = {"guid": "", "uidvalidity": 0, "uidnext": 0, "uid": 0, "flags": (), "keywords": ()}
    msg_changes = {
        _MESSAGE_FIELDS[f]: blank[_MESSAGE_FIELDS[f]] for f in ignore & set(_MESSAGE_FIELDS)
    }
    box_changes = {
        _MAILBOX_FIELDS[f]: blank[_MAILBOX_FIELDS[f]] for f in ignore & set(_MAILBOX_FIELDS)
    }
    boxes = []
    for box in snap.mailboxes:
        msgs = tuple(dataclasses.replace(m, **msg_changes) for m in box.messages)
        if "uid" in ignore:  # without UIDs, compare messages as a multiset
            msgs = tuple(sorted(msgs, key=lambda m: (m.sha256, m.guid, m.flags, m.keywords)))
        boxes.append(dataclasses.replace(box, messages=msgs, **box_changes))
    return StoreSnapshot(
        mailbox_list=() if "mailbox_list" in ignore else snap.mailbox_list,
        subscriptions=() if "subscriptions" in ignore else snap.subscriptions,
        mailboxes=tuple(boxes),
    )


def _field_diffs(label: str, a: object, b: object, fields: Iterable[str]) -> Iterator[str]:
    for field in fields:
        va, vb = getattr(a, field), getattr(b, field)
        if va != vb:
            yield f"  {label} {field}: {va!r} != {vb!r}"


def diff(a: StoreSnapshot, b: StoreSnapshot, *, limit: int = 60) -> str:
    """Readable differences between two snapshots (empty string when equal)."""
    out: list[str] = []
    for field in ("mailbox_list", "subscriptions"):
        sa, sb = set(getattr(a, field)), set(getattr(b, field))
        if sa != sb:
            out.append(f"  {field}: only left {sorted(sa - sb)}, only right {sorted(sb - sa)}")
    left = {box.name: box for box in a.mailboxes}
    right = {box.name: box for box in b.mailboxes}
    for name in sorted(left.keys() | right.keys()):
        if name not in left or name not in right:
            out.append(f"  mailbox {name!r}: only {'left' if name in left else 'right'}")
            continue
        ba, bb = left[name], right[name]
        out += _field_diffs(f"mailbox {name!r}", ba, bb, ("guid", "uidvalidity", "uidnext"))
        ma = {m.uid: m for m in ba.messages}
        mb = {m.uid: m for m in bb.messages}
        for uid in sorted(ma.keys() | mb.keys()):
            if uid not in ma or uid not in mb:
                out.append(f"  {name!r} uid {uid}: only {'left' if uid in ma else 'right'}")
            else:
                fields = ("guid", "flags", "keywords", "size", "sha256")
                out += _field_diffs(f"{name!r} uid {uid}", ma[uid], mb[uid], fields)
    if len(out) > limit:
        out = out[:limit] + [f"  ... {len(out) - limit} more"]
    return "\n".join(out)
