"""The recording half of a disk driver's transaction: what it was asked to do before
commit(), each request checked once, and whether there is anything to commit at all.

Drivers (maildir, sdbox, mdbox) subclass `RecordingTransaction`, keep their own
`save()` (the body goes to disk at once), `commit()` and `rollback()`, and read `ops`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import MailError, StorageError
from .attributes import check_attribute
from .base import MailboxStatus, NewMessage, Transaction

UID_MAX = 0xFFFFFFFF  # UIDs, UIDVALIDITY and UIDNEXT are 32-bit (RFC 3501)

SaveT = TypeVar("SaveT")


@dataclass
class FlagOp:
    uid: int
    add: int
    remove: int
    add_keywords: frozenset[str]
    remove_keywords: frozenset[str]
    min_modseq: int


@dataclass
class Ops:
    """Everything a transaction asks for besides its saves, in the order asked.

    `moves` maps an existing UID to its new one; `attributes` maps (type, key) to
    (value or None for a deletion, the peer's last_change stamp, 0 = unknown)."""

    flag_ops: list[FlagOp] = field(default_factory=list)
    expunges: list[int] = field(default_factory=list)
    moves: dict[int, int] = field(default_factory=dict)
    uid_validity: int = 0
    guid: bytes | None = None
    uid_next: int = 0
    highest_modseq: int = 0
    first_recent_uid: int = 0
    attributes: dict[tuple[str, str], tuple[str | None, int]] = field(default_factory=dict)

    def is_empty(self, start: MailboxStatus) -> bool:
        """Nothing to write: raises not above the mailbox's status at the start count as
        none, since its counters only grow (an empty commit then neither locks nor
        rereads the store)."""
        return not (
            self.flag_ops or self.expunges or self.moves or self.uid_validity
            or self.guid is not None or self.attributes
            or self.uid_next > start.uid_next
            or self.highest_modseq > start.highest_modseq
            or self.first_recent_uid > start.first_recent_uid
        )  # fmt: skip


def check_keywords(keywords: frozenset[str]) -> None:
    """Keywords are IMAP atoms: no empty name, space, tab, CR, LF or NUL (every store
    keeps them in line- or space-separated lists)."""
    for kw in keywords:
        if not kw or any(c in kw for c in "\r\n\x00 \t"):
            raise StorageError(f"Invalid keyword: {kw!r}", MailError.PARAMS)


def _check_uid32(value: int, what: str, low: int) -> None:
    if not low <= value <= UID_MAX:
        raise StorageError(f"Invalid {what} {value}", MailError.PARAMS)


class RecordingTransaction(Transaction, Generic[SaveT]):
    """Records requests in `ops` and saves in `_saves` (by UID, in the driver's own
    form); refuses them once the transaction is finished."""

    def __init__(self, start: MailboxStatus) -> None:
        self._start = start
        self._saves: dict[int, SaveT] = {}
        self.ops = Ops()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("Transaction already finished", MailError.NOTPOSSIBLE)

    def _close(self) -> None:
        """Start commit(): no request is taken after this."""
        self._check_open()
        self._closed = True

    def _check_new_uid(self, uid: int) -> None:
        """A save or move target must be a fresh UID: at least the mailbox's UIDNEXT when
        the transaction began, not yet given to another save or move of it."""
        taken = uid in self._saves or uid in self.ops.moves.values()
        if uid < self._start.uid_next or taken or not 0 < uid < UID_MAX:
            raise StorageError(f"UID {uid} is not free for saving", MailError.NOTPOSSIBLE)

    def _check_save(self, message: NewMessage) -> None:
        """What every driver checks of a save before it writes the body."""
        self._check_open()
        self._check_new_uid(message.uid)
        check_keywords(message.keywords)

    def _is_empty(self) -> bool:
        return not self._saves and self.ops.is_empty(self._start)

    def update_flags(
        self,
        uid: int,
        add_flags: int = 0,
        remove_flags: int = 0,
        add_keywords: frozenset[str] = frozenset(),
        remove_keywords: frozenset[str] = frozenset(),
        min_modseq: int = 0,
    ) -> None:
        self._check_open()
        check_keywords(add_keywords)
        op = FlagOp(uid, add_flags, remove_flags, add_keywords, remove_keywords, min_modseq)
        self.ops.flag_ops.append(op)

    def expunge(self, uid: int) -> None:
        self._check_open()
        self.ops.expunges.append(uid)

    def move(self, uid: int, new_uid: int) -> None:
        self._check_open()
        self._check_new_uid(new_uid)
        self.ops.moves[uid] = new_uid

    def set_uid_validity(self, uid_validity: int) -> None:
        self._check_open()
        _check_uid32(uid_validity, "UIDVALIDITY", 1)
        self.ops.uid_validity = uid_validity

    def set_guid(self, guid: bytes) -> None:
        self._check_open()
        if len(guid) != 16 or guid == bytes(16):
            raise StorageError("Invalid mailbox GUID", MailError.PARAMS)
        self.ops.guid = guid

    def raise_uid_next(self, uid_next: int) -> None:
        self._check_open()
        _check_uid32(uid_next, "UIDNEXT", 0)  # 0: nothing to raise
        self.ops.uid_next = max(self.ops.uid_next, uid_next)

    def raise_highest_modseq(self, modseq: int) -> None:
        self._check_open()
        self.ops.highest_modseq = max(self.ops.highest_modseq, modseq)

    def raise_first_recent_uid(self, uid: int) -> None:
        self._check_open()
        _check_uid32(uid, "first recent UID", 0)
        self.ops.first_recent_uid = max(self.ops.first_recent_uid, uid)

    def set_attribute(self, type: str, key: str, value: str | None, last_change: int) -> None:
        self._check_open()
        check_attribute(type, key)
        # The peer's stamp is kept (0 = unknown), as Dovecot's dsync writes do.
        self.ops.attributes[type, key] = (value, last_change)
