"""Mailboxes and transactions of the in-memory driver (see memory.py).

A `MemoryMailbox` reads a copy of its `Box` taken at open and at `refresh()`; a
`MemoryTransaction` records writes and `commit()` replays them on a copy of the box,
then swaps it in, so a transaction is atomic and invisible until committed. Attributes
live in the box, so a rename keeps them and a delete drops them (storage-formats.md §7.7).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import BinaryIO, Protocol

from ..errors import MailboxNotFoundError, MailError, StorageError
from .attributes import check_attribute
from .base import (
    Attribute,
    Mailbox,
    MailboxStatus,
    MessageChange,
    MessageInfo,
    NewMessage,
    Transaction,
    guid128,
)
from .changes import SYSTEM_FLAGS_MASK, merge_changes

UID_MAX = 0xFFFFFFFF


class StorageHost(Protocol):
    """What mailboxes need of their `MemoryStorage`."""

    def locate(self, box: Box) -> str:
        """The box's current name; MailboxNotFoundError once it was deleted."""

    def now(self) -> int: ...

    def new_message_guid(self) -> str: ...


@dataclass(frozen=True)
class StoredMessage:
    info: MessageInfo
    body: bytes


@dataclass
class Box:
    """One selectable mailbox: header values, messages and its log of changes."""

    guid: bytes
    uid_validity: int
    uid_next: int = 1
    highest_modseq: int = 1  # an empty Dovecot mailbox reports HIGHESTMODSEQ 1
    first_recent_uid: int = 1
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    changes: list[MessageChange] = field(default_factory=list)
    log_start: int = 0  # changes with modseq <= log_start were dropped
    # (type, key) -> last change; value None = a deletion remembered for dsync
    attributes: dict[tuple[str, str], Attribute] = field(default_factory=dict)

    def copy(self) -> Box:
        return replace(
            self,
            messages=dict(self.messages),
            changes=list(self.changes),
            attributes=dict(self.attributes),
        )

    def assign(self, other: Box) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))


def virtual_size(body: bytes) -> int:
    """Size with every line ending as CRLF (what IMAP RFC822.SIZE reports)."""
    return len(body) + body.count(b"\n") - body.count(b"\r\n")


def make_message(info: MessageInfo, body: bytes) -> StoredMessage:
    """A stored message; sizes come from the body."""
    sizes = replace(info, virtual_size=virtual_size(body), physical_size=len(body))
    return StoredMessage(sizes, body)


class MemoryMailbox(Mailbox):
    """An opened mailbox reading a copy of its state taken at open/`refresh()`."""

    def __init__(self, storage: StorageHost, vname: str, box: Box) -> None:
        self.vname = vname
        self._storage = storage
        self._box = box
        self._take_view()

    def _take_view(self) -> None:
        self._view = self._box.copy()
        self._infos = [self._view.messages[uid].info for uid in sorted(self._view.messages)]

    def refresh(self) -> None:
        self.vname = self._storage.locate(self._box)
        self._take_view()

    def status(self) -> MailboxStatus:
        view = self._view
        return MailboxStatus(
            guid=view.guid,
            uid_validity=view.uid_validity,
            uid_next=view.uid_next,
            messages=len(view.messages),
            first_recent_uid=view.first_recent_uid,
            highest_modseq=view.highest_modseq,
        )

    def messages(self, above_uid: int = 0) -> Sequence[MessageInfo]:
        return [info for info in self._infos if info.uid > above_uid]

    def message(self, uid: int) -> MessageInfo | None:
        msg = self._view.messages.get(uid)
        return msg.info if msg is not None else None

    def changes_since(self, modseq: int) -> list[MessageChange] | None:
        # None: older than the log, or a modseq this mailbox never handed out.
        if 0 < modseq < self._view.log_start or modseq > self.status().highest_modseq:
            return None
        return merge_changes(self._view.changes, modseq)

    def history_start(self) -> int:
        return self._view.log_start

    def open_message(self, uid: int) -> BinaryIO:
        msg = self._view.messages.get(uid)
        if msg is None:
            raise MailboxNotFoundError(f"Message UID {uid} is expunged")
        return io.BytesIO(msg.body)

    def attributes(self) -> list[Attribute]:
        return [self._view.attributes[k] for k in sorted(self._view.attributes)]

    def transaction(self) -> MemoryTransaction:
        self._storage.locate(self._box)
        return MemoryTransaction(self._storage, self._box)


class _Commit:
    """Applies one transaction's writes, in order, to a copy of the mailbox."""

    def __init__(self, box: Box, new_uids: Iterable[int]) -> None:
        self.work = box.copy()
        self.modseq = box.highest_modseq + 1  # the modseq of every change made here
        self.top_modseq = 0  # 0: nothing changed yet
        self.raise_modseq = 0
        # Wanted new UID -> UID obtained, assigned in UID order. A UID taken meanwhile
        # (say, by a delivery) moves the message to the next free one, as Dovecot's
        # index does at commit; dsync then repairs the UIDs (§3.6.8).
        self.uid_map: dict[int, int] = {}
        next_uid = box.uid_next
        for wanted in sorted(new_uids):
            self.uid_map[wanted] = next_uid = max(wanted, next_uid)
            next_uid += 1

    def _new_uid(self, wanted: int) -> int:
        uid = self.uid_map[wanted]
        self.work.uid_next = max(self.work.uid_next, uid + 1)
        return uid

    def _touch(self, min_modseq: int) -> int:
        modseq = max(self.modseq, min_modseq)
        self.top_modseq = max(self.top_modseq, modseq)
        return modseq

    def _expunged(self, uid: int, msg: StoredMessage, modseq: int) -> None:
        # dsync's own expunges are logged with their GUID and reported (§3.4).
        self.work.changes.append(
            MessageChange(uid, modseq, expunged=True, guid128=guid128(msg.info.guid))
        )

    def save(self, msg: NewMessage, guid: str, body: bytes, now: int) -> None:
        uid = self._new_uid(msg.uid)
        info = MessageInfo(
            uid,
            guid,
            msg.flags & SYSTEM_FLAGS_MASK,
            msg.keywords,
            self._touch(msg.min_modseq),
            received_date=msg.received_date or now,
            saved_date=msg.saved_date or now,
            pop3_uidl=msg.pop3_uidl,
            pop3_order=msg.pop3_order,
        )
        self.work.messages[uid] = make_message(info, body)

    def update_flags(
        self,
        uid: int,
        flags: tuple[int, int],
        keywords: tuple[frozenset[str], frozenset[str]],
        min_modseq: int,
    ) -> None:
        uid = self.uid_map.get(uid, uid)
        msg = self.work.messages.get(uid)
        if msg is None:
            return  # expunged meanwhile: dropped, as Dovecot drops it
        new_flags = (msg.info.flags | flags[0]) & ~flags[1] & SYSTEM_FLAGS_MASK
        new_keywords = (msg.info.keywords | keywords[0]) - keywords[1]
        unchanged = new_flags == msg.info.flags and new_keywords == msg.info.keywords
        if unchanged and min_modseq <= msg.info.modseq:
            return
        info = replace(
            msg.info, flags=new_flags, keywords=new_keywords, modseq=self._touch(min_modseq)
        )
        self.work.messages[uid] = StoredMessage(info, msg.body)

    def expunge(self, uid: int) -> None:
        uid = self.uid_map.get(uid, uid)
        msg = self.work.messages.pop(uid, None)
        if msg is not None:
            self._expunged(uid, msg, self._touch(0))

    def move(self, uid: int, new_uid: int) -> None:
        uid = self.uid_map.get(uid, uid)
        msg = self.work.messages.pop(uid, None)
        if msg is None:
            return
        new_uid = self._new_uid(new_uid)
        modseq = self._touch(0)
        self.work.messages[new_uid] = StoredMessage(
            replace(msg.info, uid=new_uid, modseq=modseq), msg.body
        )
        self._expunged(uid, msg, modseq)

    def set_attribute(self, type_: str, key: str, value: str | None, last_change: int) -> None:
        modseq = self._touch(0)
        self.work.attributes[type_, key] = Attribute(
            type_, key, value, last_change, modseq, from_dsync=True
        )

    def finish(self) -> Box:
        if self.top_modseq:
            self.work.highest_modseq = max(self.work.highest_modseq, self.top_modseq)
        self.work.highest_modseq = max(self.work.highest_modseq, self.raise_modseq)
        return self.work


def _check_uid32(value: int, what: str, low: int = 1) -> None:
    if not low <= value <= UID_MAX:
        raise StorageError(f"Invalid {what}: {value}", MailError.PARAMS)


class MemoryTransaction(Transaction):
    """Records writes; `commit()` replays them on a copy and swaps it in at once."""

    def __init__(self, storage: StorageHost, box: Box) -> None:
        self._storage = storage
        self._box = box
        self._ops: list[Callable[[_Commit], None]] = []
        self._min_new_uid = box.uid_next  # new UIDs must be >= this, in any order
        self._new_uids: set[int] = set()
        self._done = False

    def _check_open(self) -> None:
        if self._done:
            raise StorageError("Transaction already finished", MailError.NOTPOSSIBLE)

    def _add(self, op: Callable[[_Commit], None]) -> None:
        self._check_open()
        self._ops.append(op)

    def _claim_uid(self, uid: int) -> None:
        if not self._min_new_uid <= uid <= UID_MAX or uid in self._new_uids:
            raise StorageError(
                f"New UID {uid} not allowed (must be unused and >= {self._min_new_uid})",
                MailError.PARAMS,
            )
        self._new_uids.add(uid)

    def save(self, message: NewMessage) -> None:
        self._check_open()
        self._claim_uid(message.uid)
        guid = message.guid or self._storage.new_message_guid()
        body, now = message.body.read(), self._storage.now()
        self._add(lambda c: c.save(message, guid, body, now))

    def update_flags(
        self,
        uid: int,
        add_flags: int = 0,
        remove_flags: int = 0,
        add_keywords: frozenset[str] = frozenset(),
        remove_keywords: frozenset[str] = frozenset(),
        min_modseq: int = 0,
    ) -> None:
        flags, keywords = (add_flags, remove_flags), (add_keywords, remove_keywords)
        self._add(lambda c: c.update_flags(uid, flags, keywords, min_modseq))

    def expunge(self, uid: int) -> None:
        self._add(lambda c: c.expunge(uid))

    def move(self, uid: int, new_uid: int) -> None:
        self._check_open()
        self._claim_uid(new_uid)
        self._add(lambda c: c.move(uid, new_uid))

    def set_uid_validity(self, uid_validity: int) -> None:
        _check_uid32(uid_validity, "UIDVALIDITY")
        self._add(lambda c: setattr(c.work, "uid_validity", uid_validity))

    def set_guid(self, guid: bytes) -> None:
        if len(guid) != 16 or guid == bytes(16):
            raise StorageError(f"Invalid mailbox GUID {guid!r}", MailError.PARAMS)
        self._add(lambda c: setattr(c.work, "guid", guid))

    def raise_uid_next(self, uid_next: int) -> None:
        _check_uid32(uid_next, "UIDNEXT", low=0)
        self._add(lambda c: setattr(c.work, "uid_next", max(c.work.uid_next, uid_next)))

    def raise_highest_modseq(self, modseq: int) -> None:
        self._add(lambda c: setattr(c, "raise_modseq", max(c.raise_modseq, modseq)))

    def raise_first_recent_uid(self, uid: int) -> None:
        _check_uid32(uid, "first recent UID", low=0)
        self._add(lambda c: setattr(c.work, "first_recent_uid", max(c.work.first_recent_uid, uid)))

    def set_attribute(self, type: str, key: str, value: str | None, last_change: int) -> None:
        check_attribute(type, key)
        # No time given: the time of the write, as Dovecot stamps its log record.
        stamp = last_change  # dsync writes keep the peer's stamp, 0 = unknown
        self._add(lambda c: c.set_attribute(type, key, value, stamp))

    def commit(self) -> None:
        self._check_open()
        self._done = True
        self._storage.locate(self._box)
        commit = _Commit(self._box, self._new_uids)
        for op in self._ops:
            op(commit)
        self._box.assign(commit.finish())
        self._ops.clear()

    def rollback(self) -> None:
        self._done = True
        self._ops.clear()
