"""The storage interface every driver implements (memory, maildir, later dbox, imapc).

Small on purpose: what dsync needs of a mail store (storage-formats.md §7.8) and
nothing more. Names are *vnames*: UTF-8 strings whose hierarchy levels are joined
with `Storage.separator` ("/" by default); INBOX is always "INBOX". Drivers map
vnames to their on-disk form (mUTF-7, Maildir++ dots, ...) themselves.

Change tracking is part of the contract: every change gets a modseq, and
`Mailbox.changes_since()` returns the changes made *outside* dsync transactions
(Dovecot marks its own writes as "sync" transactions so they are not exported
again; dsync-algorithm.md §3.4). Expunges are always reported, with the message's
128-bit GUID.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from ..errors import InvalidMailboxNameError, MailError, StorageError


class LogType(IntEnum):
    """Record types of Dovecot's `dovecot.mailbox.log` (storage-formats.md §7.4)."""

    DELETE_MAILBOX = 1
    DELETE_DIR = 2
    RENAME = 3
    SUBSCRIBE = 4
    UNSUBSCRIBE = 5
    CREATE_DIR = 6


# The records below are values: never changed once made (a changed one is made with
# `dataclasses.replace`) and never hashed. mypy checks them as frozen dataclasses; at
# run time they are plain ones, as `frozen` doubles what each class costs to create,
# paid at every start-up (as protocol/items.py does for the items).
_T = TypeVar("_T")

if TYPE_CHECKING:
    from typing import dataclass_transform

    @dataclass_transform(frozen_default=True)
    def value_record(cls: type[_T]) -> type[_T]: ...

else:
    value_record = dataclass


@value_record
class MailboxLogRecord:
    """One mailbox-log record: `key` is a mailbox GUID (DELETE_MAILBOX) or
    `name_hash(vname)` for every other type; `timestamp` is UNIX seconds."""

    type: LogType
    key: bytes
    timestamp: int


@value_record
class MailboxEntry:
    """A listed mailbox: `guid` is None for a \\NoSelect directory."""

    vname: str
    guid: bytes | None
    uid_validity: int = 0
    uid_next: int = 0
    special_use: frozenset[str] = frozenset()


@value_record
class MailboxStatus:
    guid: bytes
    uid_validity: int
    uid_next: int
    messages: int
    first_recent_uid: int
    highest_modseq: int
    highest_pvt_modseq: int = 0


@value_record
class MessageInfo:
    """One existing message. `flags` uses the protocol's system flag bits
    (\\Answered 0x01 ... \\Draft 0x10, never \\Recent); keywords are case-preserving."""

    uid: int
    guid: str
    flags: int
    keywords: frozenset[str]
    modseq: int
    received_date: int
    saved_date: int = 0
    virtual_size: int = 0
    physical_size: int = 0
    pop3_uidl: str = ""
    pop3_order: int = 0


@value_record
class MessageChange:
    """A change made outside dsync to one UID, merged since some modseq.

    `expunged` changes carry `guid128` (16 bytes) when known. Flag changes carry the
    added/removed system flags and keyword operations (`+kw` / `-kw`, in order).
    `modseq` is the highest modseq of the change.
    """

    uid: int
    modseq: int
    expunged: bool = False
    guid128: bytes | None = None
    add_flags: int = 0
    remove_flags: int = 0
    keyword_ops: tuple[str, ...] = ()


@value_record
class NewMessage:
    """What `Transaction.save` stores."""

    uid: int
    guid: str
    body: BinaryIO
    flags: int = 0
    keywords: frozenset[str] = frozenset()
    received_date: int = 0
    saved_date: int = 0
    min_modseq: int = 0
    pop3_uidl: str = ""
    pop3_order: int = 0


@value_record
class Attribute:
    """A mailbox attribute (IMAP METADATA, storage-formats.md §7.7).

    `type` is "p" (private, `/private/...`) or "s" (shared); `key` has no prefix.
    `value` None = deleted (a tombstone remembered for dsync). `last_change` is the
    UNIX time of the last set/unset (0 unknown); `modseq` the mailbox modseq of that
    change (0 unknown). `from_dsync` marks changes written by dsync itself.
    """

    type: str
    key: str
    value: str | None
    last_change: int = 0
    modseq: int = 0
    from_dsync: bool = False


def name_hash(vname: str) -> bytes:
    """sha128 of a vname: the first 16 bytes of its SHA-1 (mailbox log, dsync `D`)."""
    return hashlib.sha1(vname.encode("utf-8", "surrogateescape")).digest()[:16]


def guid128(guid: str) -> bytes:
    """A message GUID in 128-bit form: 32 hex digits as is, else SHA-1's last 16 bytes."""
    if len(guid) == 32:
        try:
            return bytes.fromhex(guid)
        except ValueError:
            pass
    return hashlib.sha1(guid.encode("utf-8", "surrogateescape")).digest()[-16:]


class Transaction(ABC):
    """Writes to one mailbox, applied atomically by `commit()` (or dropped by `rollback`).

    Every write is a dsync ("sync") write: it gets a modseq but is not reported by
    `changes_since()` later, except expunges. Methods raise `StorageError`.
    """

    @abstractmethod
    def save(self, message: NewMessage) -> None:
        """Store a new message with exactly `message.uid` (>= the mailbox's uid_next
        at the start of the transaction, unused). Saves and moves may come in ANY uid
        order (dsync receives bodies in the peer's order); the driver orders them at
        commit. The body is read completely before save() returns."""

    @abstractmethod
    def update_flags(
        self,
        uid: int,
        add_flags: int = 0,
        remove_flags: int = 0,
        add_keywords: frozenset[str] = frozenset(),
        remove_keywords: frozenset[str] = frozenset(),
        min_modseq: int = 0,
    ) -> None: ...

    @abstractmethod
    def expunge(self, uid: int) -> None: ...

    @abstractmethod
    def move(self, uid: int, new_uid: int) -> None:
        """Give an existing message a new (higher, unused) UID, keeping flags/dates."""

    @abstractmethod
    def set_uid_validity(self, uid_validity: int) -> None: ...

    @abstractmethod
    def set_guid(self, guid: bytes) -> None: ...

    @abstractmethod
    def raise_uid_next(self, uid_next: int) -> None: ...

    @abstractmethod
    def raise_highest_modseq(self, modseq: int) -> None: ...

    @abstractmethod
    def raise_first_recent_uid(self, uid: int) -> None: ...

    def set_attribute(self, type: str, key: str, value: str | None, last_change: int) -> None:
        """Set (or with None delete) an attribute as a dsync write."""
        raise StorageError("This storage keeps no mailbox attributes", MailError.NOTPOSSIBLE)

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


def infos_above(
    uids: Iterable[int], above_uid: int, lookup: Callable[[int], MessageInfo | None]
) -> list[MessageInfo]:
    """`lookup` of each UID above `above_uid`, ascending; those it finds gone are left
    out (what a driver's `messages(above_uid)` lists)."""
    found = (lookup(uid) for uid in sorted(uid for uid in uids if uid > above_uid))
    return [info for info in found if info is not None]


class Mailbox(ABC):
    """An opened mailbox. The view is refreshed by `refresh()`; reads are of that view."""

    vname: str

    @abstractmethod
    def refresh(self) -> None:
        """Re-read the store, noticing changes other programs made (new modseqs)."""

    @abstractmethod
    def status(self) -> MailboxStatus: ...

    @abstractmethod
    def messages(self, above_uid: int = 0) -> Sequence[MessageInfo]:
        """Existing messages with a UID above `above_uid`, ascending by UID."""

    def saved_date(self, uid: int) -> int:
        """When the message was saved here. A driver whose stores must stat a file
        for it may leave MessageInfo.saved_date 0 (not looked up) and answer here."""
        info = self.message(uid)
        return info.saved_date if info is not None else 0

    def message(self, uid: int) -> MessageInfo | None:
        """One existing message, None when there is none. A stateful sync looks up the
        few messages its peer changed, rather than listing the mailbox."""
        found = self.messages(above_uid=uid - 1)
        return found[0] if found and found[0].uid == uid else None

    @abstractmethod
    def changes_since(self, modseq: int) -> list[MessageChange] | None:
        """Non-dsync changes with modseq > `modseq`, one merged record per UID, by UID.

        With modseq 0 every change still in the log. None when the log no longer
        reaches back to `modseq`, or `modseq` is above the highest this mailbox handed
        out (another program's number): the caller then falls back to a full export.
        """

    def history_start(self) -> int:
        """The lowest modseq the change log covers: a message whose modseq is below it
        got its flags before tracking began, so how they came about is unknown."""
        return 0

    @abstractmethod
    def open_message(self, uid: int) -> BinaryIO:
        """The message's bytes as stored; raises MailboxNotFoundError if expunged."""

    def attributes(self) -> list[Attribute]:
        """Every attribute, deleted ones (value None) included while remembered."""
        return []

    @abstractmethod
    def transaction(self) -> Transaction: ...

    def close(self) -> None:  # noqa: B027 - drivers without resources need nothing
        """Release what the mailbox holds open."""


class Storage(ABC):
    """One user's mail store, in one namespace."""

    separator: str = "/"
    escape_char: str = "%"
    namespace_prefix: str = ""  # the one namespace a store serves
    list_separator: str = "/"  # the on-disk hierarchy separator ("." for Maildir++)
    have_save_guids: bool = True
    have_only_guid128: bool = False

    def check_name(self, vname: str) -> None:
        """Raise InvalidMailboxNameError when this store cannot hold `vname`."""
        if not vname or "\0" in vname or any(0xDC80 <= ord(c) <= 0xDCFF for c in vname):
            raise InvalidMailboxNameError(f"Invalid mailbox name: {vname!r}")
        if any(level in ("", ".", "..") for level in vname.split(self.separator)):
            raise InvalidMailboxNameError(f"Invalid mailbox name: {vname!r}")

    @abstractmethod
    def list_mailboxes(self) -> list[MailboxEntry]:
        """Every mailbox and \\NoSelect directory, parents before children."""

    @abstractmethod
    def subscriptions(self) -> set[str]: ...

    @abstractmethod
    def mailbox_log(self) -> list[MailboxLogRecord]:
        """Deletion/rename/subscription records, oldest first."""

    @abstractmethod
    def create_mailbox(self, vname: str, guid: bytes | None = None, uid_validity: int = 0) -> None:
        """Create a selectable mailbox (missing parents as directories).

        `guid`/`uid_validity` 0/None = allocate new ones. Raises MailboxExistsError."""

    @abstractmethod
    def create_dir(self, vname: str) -> None:
        """Create a \\NoSelect directory. Raises MailboxExistsError."""

    @abstractmethod
    def delete_mailbox(self, vname: str) -> None:
        """Delete a mailbox and its mail; logs DELETE_MAILBOX (and DELETE_DIR)."""

    @abstractmethod
    def delete_dir(self, vname: str) -> None:
        """Delete an empty \\NoSelect directory; logs DELETE_DIR."""

    @abstractmethod
    def rename_mailbox(self, old: str, new: str) -> None:
        """Rename a mailbox with its children; logs RENAME of the new name."""

    @abstractmethod
    def set_subscribed(self, vname: str, subscribed: bool) -> None:
        """Change a subscription; logs SUBSCRIBE / UNSUBSCRIBE."""

    @abstractmethod
    def open_mailbox(self, vname: str) -> Mailbox:
        """Raises MailboxNotFoundError."""

    def purge(self) -> None:  # noqa: B027 - one-file-per-message stores free space at once
        """Reclaim the space of expunged mail (`doveadm purge`; matters for mdbox)."""

    def force_resync(self, vname: str | None = None) -> list[str]:
        """Rebuild indexes from the mail files (`doveadm force-resync`): of one mailbox,
        or with None of the whole store (mdbox always rebuilds the whole storage);
        returns what could not be recovered, one line each. Stores that rescan their
        files on every open (memory, maildir) only open the mailbox(es)."""
        for name in (
            [vname]
            if vname is not None
            else [e.vname for e in self.list_mailboxes() if e.guid is not None]
        ):
            self.open_mailbox(name).close()
        return []

    def close(self) -> None:  # noqa: B027
        """Release locks and files."""
