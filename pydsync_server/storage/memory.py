"""The in-memory reference storage driver: one user's whole store in dicts.

It is also the executable model of the contract in storage/base.py: writes go
through atomic transactions; a `Mailbox` reads a view that only `refresh()`
renews; `changes_since` reports what a mail client did (`deliver`,
`client_set_flags`, `client_expunge`) plus every expunge, never other dsync writes
(dsync-algorithm.md §3.4). Attributes carry their own change stamps instead, set by
`client_set_attribute` or a dsync transaction (§5).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TypedDict

from ..errors import (
    InvalidMailboxNameError,
    MailboxExistsError,
    MailboxNotFoundError,
    MailError,
    StorageError,
)
from .attributes import check_attribute
from .base import (
    Attribute,
    LogType,
    MailboxEntry,
    MailboxLogRecord,
    MessageChange,
    MessageInfo,
    Storage,
    guid128,
    name_hash,
)
from .changes import SYSTEM_FLAGS_MASK, flag_change
from .memory_mailbox import UID_MAX, Box, MemoryMailbox, StoredMessage, make_message

INBOX = "INBOX"


class MailboxSnapshot(TypedDict):
    """A mailbox (or, with guid None, a directory) as `MemoryStorage.snapshot` shows it."""

    guid: bytes | None
    uid_validity: int
    uid_next: int
    messages: dict[int, tuple[str, int, frozenset[str], bytes]]  # (guid, flags, kws, body)
    attributes: dict[tuple[str, str], str]  # (type, key) -> value, deleted ones left out


class StorageSnapshot(TypedDict):
    mailboxes: dict[str, MailboxSnapshot]
    subscriptions: frozenset[str]


def check_name(vname: str, separator: str) -> str:
    """The vname with INBOX's case fixed; InvalidMailboxNameError if unusable."""
    if not vname:
        raise InvalidMailboxNameError("Mailbox name is empty")
    if "\0" in vname:
        raise InvalidMailboxNameError("Mailbox name contains NUL")
    try:
        vname.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMailboxNameError("Mailbox name is not valid UTF-8") from None
    levels = vname.split(separator)
    for level in levels:
        if level == "":
            raise InvalidMailboxNameError(f"Mailbox name has an empty level: {vname!r}")
        if level in (".", ".."):
            raise InvalidMailboxNameError(f"Mailbox name has a {level!r} level: {vname!r}")
    # INBOX is case-insensitive, also as a parent (Dovecot's mailbox_alloc).
    if levels[0].isascii() and levels[0].upper() == INBOX:
        levels[0] = INBOX
    return separator.join(levels)


class MemoryStorage(Storage):
    """A store held in memory. INBOX always exists, as Dovecot autocreates it."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        separator: str = "/",
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(separator) != 1 or separator == "\0":
            raise ValueError(f"invalid hierarchy separator {separator!r}")
        self.separator = separator
        self._clock = clock
        self._random_bytes = random_bytes
        self._nodes: dict[str, Box | None] = {}  # None: a \NoSelect directory
        self._subscriptions: set[str] = set()
        self._log: list[MailboxLogRecord] = []
        self._last_uid_validity = 0
        self._nodes[INBOX] = self._new_box(None, 0)

    # -- helpers shared with mailboxes and transactions

    def now(self) -> int:
        return int(self._clock())

    def new_message_guid(self) -> str:
        return self._random_bytes(16).hex()

    def _new_guid(self) -> bytes:
        while (guid := self._random_bytes(16)) == bytes(16):
            pass
        return guid

    def _allocate_uid_validity(self) -> int:
        # Clock-based like dovecot-uidvalidity, but never repeating (storage-formats.md §7.3).
        value = max(self.now(), self._last_uid_validity + 1)
        if value > UID_MAX:
            raise StorageError("UIDVALIDITY space exhausted", MailError.NOTPOSSIBLE)
        self._last_uid_validity = value
        return value

    def _new_box(self, guid: bytes | None, uid_validity: int) -> Box:
        if guid is not None and len(guid) != 16:
            raise StorageError(f"Invalid mailbox GUID {guid!r}", MailError.PARAMS)
        if not 0 <= uid_validity <= UID_MAX:
            raise StorageError(f"Invalid UIDVALIDITY {uid_validity}", MailError.PARAMS)
        if guid is None or guid == bytes(16):
            guid = self._new_guid()
        return Box(guid, uid_validity or self._allocate_uid_validity())

    def _name(self, vname: str) -> str:
        return check_name(vname, self.separator)

    def _box(self, vname: str) -> Box:
        box = self._nodes.get(self._name(vname))
        if box is None:
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {vname}")
        return box

    def locate(self, box: Box) -> str:
        """The current name of `box`; MailboxNotFoundError once it was deleted."""
        for name, node in self._nodes.items():
            if node is box:
                return name
        raise MailboxNotFoundError("Mailbox was deleted")

    def _has_children(self, name: str) -> bool:
        prefix = name + self.separator
        return any(other.startswith(prefix) for other in self._nodes)

    def _add_parents(self, name: str) -> None:
        levels = name.split(self.separator)
        for i in range(1, len(levels)):
            self._nodes.setdefault(self.separator.join(levels[:i]), None)

    def _log_add(self, type_: LogType, key: bytes) -> None:
        self._log.append(MailboxLogRecord(type_, key, self.now()))

    # -- the Storage interface

    def check_name(self, vname: str) -> None:
        check_name(vname, self.separator)

    def list_mailboxes(self) -> list[MailboxEntry]:
        entries = []
        for name in sorted(self._nodes, key=lambda n: n.split(self.separator)):
            box = self._nodes[name]
            if box is None:
                entries.append(MailboxEntry(name, None))
            else:
                entries.append(MailboxEntry(name, box.guid, box.uid_validity, box.uid_next))
        return entries

    def subscriptions(self) -> set[str]:
        return set(self._subscriptions)

    def mailbox_log(self) -> list[MailboxLogRecord]:
        return list(self._log)

    def create_mailbox(self, vname: str, guid: bytes | None = None, uid_validity: int = 0) -> None:
        name = self._name(vname)
        if self._nodes.get(name) is not None:
            raise MailboxExistsError(f"Mailbox already exists: {name}")
        box = self._new_box(guid, uid_validity)
        self._add_parents(name)
        self._nodes[name] = box  # a directory of that name becomes selectable

    def create_dir(self, vname: str) -> None:
        name = self._name(vname)
        if name in self._nodes:
            raise MailboxExistsError(f"Mailbox already exists: {name}")
        self._add_parents(name)
        self._nodes[name] = None

    def delete_mailbox(self, vname: str) -> None:
        name = self._name(vname)
        box = self._box(name)
        self._log_add(LogType.DELETE_MAILBOX, box.guid)
        if name == INBOX:
            # INBOX can't go away: it comes back empty with a new identity.
            self._nodes[name] = self._new_box(None, 0)
            return
        if self._has_children(name):
            self._nodes[name] = None  # stays as the children's \NoSelect parent
        else:
            del self._nodes[name]
            # Dovecot logs the removed directory too (storage-formats.md §7.4).
            self._log_add(LogType.DELETE_DIR, name_hash(name))

    def delete_dir(self, vname: str) -> None:
        name = self._name(vname)
        if name not in self._nodes:
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {name}")
        if self._nodes[name] is not None:
            raise StorageError(f"Mailbox isn't a directory: {name}", MailError.EXISTS)
        if self._has_children(name):
            raise StorageError(f"Mailbox has children: {name}", MailError.EXISTS)
        del self._nodes[name]
        self._log_add(LogType.DELETE_DIR, name_hash(name))

    def rename_mailbox(self, old: str, new: str) -> None:
        src, dest = self._name(old), self._name(new)
        if src == INBOX:
            raise StorageError("Renaming INBOX isn't supported.", MailError.NOTPOSSIBLE)
        if src not in self._nodes:
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {src}")
        if dest in self._nodes:
            raise MailboxExistsError(f"Target mailbox already exists: {dest}")
        if dest.startswith(src + self.separator):
            raise StorageError("Can't rename mailbox under itself.", MailError.NOTPOSSIBLE)
        prefix = src + self.separator
        moved = [n for n in self._nodes if n == src or n.startswith(prefix)]
        nodes = {n: self._nodes.pop(n) for n in moved}
        self._add_parents(dest)
        for name, node in nodes.items():
            self._nodes[dest + name[len(src) :]] = node
        self._log_add(LogType.RENAME, name_hash(dest))

    def set_subscribed(self, vname: str, subscribed: bool) -> None:
        name = self._name(vname)
        if (name in self._subscriptions) == subscribed:
            return  # unchanged: Dovecot writes no log record either
        if subscribed:
            self._subscriptions.add(name)
            self._log_add(LogType.SUBSCRIBE, name_hash(name))
        else:
            self._subscriptions.discard(name)
            self._log_add(LogType.UNSUBSCRIBE, name_hash(name))

    def open_mailbox(self, vname: str) -> MemoryMailbox:
        name = self._name(vname)
        return MemoryMailbox(self, name, self._box(name))

    # -- "external" changes: what a mail client or an MDA would do

    def deliver(
        self,
        vname: str,
        body: bytes,
        flags: int = 0,
        keywords: Iterable[str] = (),
        received_date: int | None = None,
        guid: str = "",
    ) -> int:
        """Append a message as an MDA would; returns its UID. Not in `changes_since`
        (new messages are found by UID, dsync-algorithm.md §3.5.1)."""
        box = self._box(vname)
        uid, modseq, now = box.uid_next, box.highest_modseq + 1, self.now()
        info = MessageInfo(
            uid,
            guid or self.new_message_guid(),
            flags & SYSTEM_FLAGS_MASK,
            frozenset(keywords),
            modseq,
            received_date=now if received_date is None else received_date,
            saved_date=now,
        )
        box.messages[uid] = make_message(info, body)
        box.uid_next, box.highest_modseq = uid + 1, modseq
        return uid

    def client_set_flags(
        self, vname: str, uid: int, flags: int, keywords: Iterable[str] = ()
    ) -> None:
        """Replace a message's flags and keywords as an IMAP client's STORE would."""
        box = self._box(vname)
        msg = self._client_message(box, uid)
        new = (flags & SYSTEM_FLAGS_MASK, frozenset(keywords))
        change = flag_change(uid, box.highest_modseq + 1, (msg.info.flags, msg.info.keywords), new)
        if change is None:
            return
        info = replace(msg.info, flags=new[0], keywords=new[1], modseq=change.modseq)
        box.messages[uid] = StoredMessage(info, msg.body)
        box.changes.append(change)
        box.highest_modseq = change.modseq

    def client_expunge(self, vname: str, uid: int) -> None:
        """Expunge a message as an IMAP client would."""
        box = self._box(vname)
        msg = self._client_message(box, uid)
        del box.messages[uid]
        box.highest_modseq += 1
        box.changes.append(
            MessageChange(uid, box.highest_modseq, expunged=True, guid128=guid128(msg.info.guid))
        )

    def client_set_attribute(self, vname: str, type: str, key: str, value: str | None) -> None:
        """Set (None: delete) a mailbox attribute as an IMAP client's SETMETADATA would:
        a new modseq, stamped now, not from dsync. A deletion is remembered."""
        check_attribute(type, key)
        box = self._box(vname)
        box.highest_modseq += 1
        box.attributes[type, key] = Attribute(
            type, key, value, self.now(), box.highest_modseq, from_dsync=False
        )

    def truncate_change_log(self, vname: str, modseq: int) -> None:
        """Forget changes up to `modseq`, as a rotated index log would; afterwards
        `changes_since(m)` for 0 < m < modseq returns None, and deleted attributes
        changed at or before `modseq` are forgotten."""
        box = self._box(vname)
        box.changes = [c for c in box.changes if c.modseq > modseq]
        box.log_start = max(box.log_start, modseq)
        box.attributes = {
            k: a for k, a in box.attributes.items() if a.value is not None or a.modseq > modseq
        }

    @staticmethod
    def _client_message(box: Box, uid: int) -> StoredMessage:
        msg = box.messages.get(uid)
        if msg is None:
            raise StorageError(f"Message UID {uid} doesn't exist", MailError.EXPUNGED)
        return msg

    def snapshot(self) -> StorageSnapshot:
        """Everything a sync must make equal, in a form tests can compare with ==."""
        mailboxes: dict[str, MailboxSnapshot] = {}
        for name, box in self._nodes.items():
            if box is None:
                mailboxes[name] = MailboxSnapshot(
                    guid=None, uid_validity=0, uid_next=0, messages={}, attributes={}
                )
                continue
            messages = {
                uid: (m.info.guid, m.info.flags, m.info.keywords, m.body)
                for uid, m in box.messages.items()
            }
            mailboxes[name] = MailboxSnapshot(
                guid=box.guid,
                uid_validity=box.uid_validity,
                uid_next=box.uid_next,
                messages=messages,
                attributes={k: a.value for k, a in box.attributes.items() if a.value is not None},
            )
        return StorageSnapshot(mailboxes=mailboxes, subscriptions=frozenset(self._subscriptions))
