"""A Storage proxy that reports every write the brain makes, as it takes effect.

Tree writes (create, delete, rename, subscribe) are reported once the store did them;
mail writes (save, copy, flags, expunge, new UID) only when their transaction commits,
so a rolled-back import reports nothing. The CLI counts these for `--json` and prints
them as the `--dry-run` plan. A save whose body was opened from this same store is a
copy (the importer resolving a UID conflict, or `-a`), not a transfer.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO, cast

from .base import (
    Attribute,
    Mailbox,
    MailboxEntry,
    MailboxLogRecord,
    MailboxStatus,
    MessageChange,
    MessageInfo,
    NewMessage,
    Storage,
    Transaction,
)

# System flag bits of storage/base.py's MessageInfo.flags (Dovecot's enum mail_flags).
FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (0x01, "\\Answered"),
    (0x02, "\\Flagged"),
    (0x04, "\\Deleted"),
    (0x08, "\\Seen"),
    (0x10, "\\Draft"),
)


@dataclass(frozen=True)
class WriteEvent:
    """One write. `kind`: create, create-dir, delete, delete-dir, rename, subscribe,
    unsubscribe, purge (tree); save, copy, flags, expunge, renumber, uidvalidity, guid,
    attribute (mail). `uid` is the new UID of save/copy/renumber; `detail` says more
    (the new name, `from UID n`, the flag changes); `size` is the saved body's bytes."""

    kind: str
    mailbox: str
    uid: int = 0
    detail: str = ""
    size: int = 0


Sink = Callable[[WriteEvent], None]


def flag_changes(
    add_flags: int, remove_flags: int, add_keywords: frozenset[str], remove_keywords: frozenset[str]
) -> str:
    """`+\\Seen -\\Flagged +$Label` (system flags first, keywords sorted)."""
    parts = [f"+{name}" for bit, name in FLAG_NAMES if add_flags & bit]
    parts += [f"-{name}" for bit, name in FLAG_NAMES if remove_flags & bit]
    parts += [f"+{kw}" for kw in sorted(add_keywords)]
    parts += [f"-{kw}" for kw in sorted(remove_keywords)]
    return " ".join(parts)


class _Reader(io.RawIOBase):
    """A body that counts the bytes read from it; `origin` is set on bodies opened from
    the observed store (saving one of those is a copy, not a transfer)."""

    def __init__(self, inner: BinaryIO, origin: str | None = None) -> None:
        super().__init__()
        self._inner = inner
        self.origin = origin
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._inner.read(-1 if size is None else size)
        self.count += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


class ObservedTransaction(Transaction):
    def __init__(self, inner: Transaction, vname: str, sink: Sink) -> None:
        self._inner = inner
        self._vname = vname
        self._sink = sink
        self._pending: list[WriteEvent] = []

    def _note(self, kind: str, uid: int = 0, detail: str = "", size: int = 0) -> None:
        self._pending.append(WriteEvent(kind, self._vname, uid, detail, size))

    def save(self, message: NewMessage) -> None:
        origin = message.body.origin if isinstance(message.body, _Reader) else None
        counter = _Reader(message.body)
        self._inner.save(replace(message, body=cast(BinaryIO, counter)))
        if origin is not None:
            self._note("copy", message.uid, f"from {origin}", counter.count)
        else:
            self._note("save", message.uid, message.guid, counter.count)

    def update_flags(
        self,
        uid: int,
        add_flags: int = 0,
        remove_flags: int = 0,
        add_keywords: frozenset[str] = frozenset(),
        remove_keywords: frozenset[str] = frozenset(),
        min_modseq: int = 0,
    ) -> None:
        self._inner.update_flags(
            uid, add_flags, remove_flags, add_keywords, remove_keywords, min_modseq
        )
        changes = flag_changes(add_flags, remove_flags, add_keywords, remove_keywords)
        if changes:  # a bare modseq raise changes no flag
            self._note("flags", uid, changes)

    def expunge(self, uid: int) -> None:
        self._inner.expunge(uid)
        self._note("expunge", uid)

    def move(self, uid: int, new_uid: int) -> None:
        self._inner.move(uid, new_uid)
        self._note("renumber", new_uid, f"from UID {uid}")

    def set_uid_validity(self, uid_validity: int) -> None:
        self._inner.set_uid_validity(uid_validity)
        self._note("uidvalidity", detail=str(uid_validity))

    def set_guid(self, guid: bytes) -> None:
        self._inner.set_guid(guid)
        self._note("guid", detail=guid.hex())

    def raise_uid_next(self, uid_next: int) -> None:
        self._inner.raise_uid_next(uid_next)

    def raise_highest_modseq(self, modseq: int) -> None:
        self._inner.raise_highest_modseq(modseq)

    def raise_first_recent_uid(self, uid: int) -> None:
        self._inner.raise_first_recent_uid(uid)

    def set_attribute(self, type: str, key: str, value: str | None, last_change: int) -> None:
        self._inner.set_attribute(type, key, value, last_change)
        what = "deleted" if value is None else "set"
        self._note("attribute", detail=f"{'private' if type == 'p' else 'shared'}/{key} {what}")

    def commit(self) -> None:
        self._inner.commit()
        pending, self._pending = self._pending, []
        for event in pending:
            self._sink(event)

    def rollback(self) -> None:
        self._pending = []
        self._inner.rollback()


class ObservedMailbox(Mailbox):
    def __init__(self, inner: Mailbox, sink: Sink) -> None:
        self._inner = inner
        self._sink = sink
        self.vname = inner.vname

    def refresh(self) -> None:
        self._inner.refresh()

    def status(self) -> MailboxStatus:
        return self._inner.status()

    def messages(self, above_uid: int = 0) -> Sequence[MessageInfo]:
        return self._inner.messages(above_uid)

    def message(self, uid: int) -> MessageInfo | None:
        return self._inner.message(uid)

    def saved_date(self, uid: int) -> int:
        return self._inner.saved_date(uid)

    def changes_since(self, modseq: int) -> list[MessageChange] | None:
        return self._inner.changes_since(modseq)

    def history_start(self) -> int:
        return self._inner.history_start()

    def open_message(self, uid: int) -> BinaryIO:
        return cast(BinaryIO, _Reader(self._inner.open_message(uid), f"{self.vname} UID {uid}"))

    def attributes(self) -> list[Attribute]:
        return self._inner.attributes()

    def transaction(self) -> Transaction:
        return ObservedTransaction(self._inner.transaction(), self.vname, self._sink)

    def close(self) -> None:
        self._inner.close()


class ObservedStorage(Storage):
    """Forwards everything to `inner`; writes that took effect go to `sink`."""

    def __init__(self, inner: Storage, sink: Sink) -> None:
        self.inner = inner
        self._sink = sink
        self.separator = inner.separator
        self.escape_char = inner.escape_char
        self.namespace_prefix = inner.namespace_prefix
        self.list_separator = inner.list_separator
        self.have_save_guids = inner.have_save_guids
        self.have_only_guid128 = inner.have_only_guid128

    def _note(self, kind: str, vname: str, detail: str = "") -> None:
        self._sink(WriteEvent(kind, vname, detail=detail))

    def check_name(self, vname: str) -> None:
        self.inner.check_name(vname)

    def list_mailboxes(self) -> list[MailboxEntry]:
        return self.inner.list_mailboxes()

    def subscriptions(self) -> set[str]:
        return self.inner.subscriptions()

    def mailbox_log(self) -> list[MailboxLogRecord]:
        return self.inner.mailbox_log()

    def create_mailbox(self, vname: str, guid: bytes | None = None, uid_validity: int = 0) -> None:
        self.inner.create_mailbox(vname, guid, uid_validity)
        self._note("create", vname, guid.hex() if guid else "")

    def create_dir(self, vname: str) -> None:
        self.inner.create_dir(vname)
        self._note("create-dir", vname)

    def delete_mailbox(self, vname: str) -> None:
        self.inner.delete_mailbox(vname)
        self._note("delete", vname)

    def delete_dir(self, vname: str) -> None:
        self.inner.delete_dir(vname)
        self._note("delete-dir", vname)

    def rename_mailbox(self, old: str, new: str) -> None:
        self.inner.rename_mailbox(old, new)
        self._note("rename", old, new)

    def set_subscribed(self, vname: str, subscribed: bool) -> None:
        self.inner.set_subscribed(vname, subscribed)
        self._note("subscribe" if subscribed else "unsubscribe", vname)

    def open_mailbox(self, vname: str) -> Mailbox:
        return ObservedMailbox(self.inner.open_mailbox(vname), self._sink)

    def purge(self) -> None:
        self.inner.purge()
        self._note("purge", "")

    def close(self) -> None:
        self.inner.close()
