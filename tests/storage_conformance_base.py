"""Hooks and helpers of the storage driver-conformance suite (storage_conformance.py)."""

from __future__ import annotations

import io
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from pydsync_server.storage.base import (
    Mailbox,
    MailboxEntry,
    MailboxLogRecord,
    MessageInfo,
    NewMessage,
    Storage,
)


class ConformanceBase(ABC):
    """The hooks a driver implements, and helpers the tests share."""

    supports_dirs: ClassVar[bool] = True
    """False if the driver cannot keep a childless \\NoSelect directory."""
    supports_pop3_fields: ClassVar[bool] = True

    @abstractmethod
    def make_storage(self, tmp_path: Path) -> Storage:
        """A new, empty store kept under `tmp_path`."""

    @abstractmethod
    def reopen_storage(self, storage: Storage, tmp_path: Path) -> Storage:
        """The store of `storage` (already closed) opened afresh, as a new process would."""

    @abstractmethod
    def external_deliver(
        self,
        storage: Storage,
        vname: str,
        body: bytes,
        flags: int = 0,
        keywords: frozenset[str] = frozenset(),
    ) -> None:
        """Deliver a message as an MDA would (not through the driver's transactions)."""

    @abstractmethod
    def external_set_flags(
        self, storage: Storage, vname: str, uid: int, flags: int, keywords: frozenset[str]
    ) -> None:
        """Set a message's flags and keywords as an IMAP client would."""

    @abstractmethod
    def external_expunge(self, storage: Storage, vname: str, uid: int) -> None:
        """Expunge a message as an IMAP client would."""

    @abstractmethod
    def external_set_attribute(
        self, storage: Storage, vname: str, type_: str, key: str, value: str | None
    ) -> None:
        """Set (None: delete) a mailbox attribute as an IMAP client's SETMETADATA (or
        Dovecot itself) would, not through the driver's transactions."""

    def now(self) -> float:
        """The driver's clock, for checking log timestamps."""
        return time.time()

    # -- fixtures and helpers

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[Storage]:
        self._tmp_path = tmp_path
        self._current = self.make_storage(tmp_path)
        yield self._current
        self._current.close()

    def reopen(self, storage: Storage) -> Storage:
        assert storage is self._current
        storage.close()
        self._current = self.reopen_storage(storage, self._tmp_path)
        return self._current

    @staticmethod
    def entry(storage: Storage, vname: str) -> MailboxEntry | None:
        found = [e for e in storage.list_mailboxes() if e.vname == vname]
        assert len(found) <= 1, f"{vname} listed twice"
        return found[0] if found else None

    @staticmethod
    def names(storage: Storage) -> set[str]:
        return {e.vname for e in storage.list_mailboxes()}

    @staticmethod
    def infos(box: Mailbox) -> dict[int, MessageInfo]:
        return {m.uid: m for m in box.messages()}

    @staticmethod
    def body(box: Mailbox, uid: int) -> bytes:
        with box.open_message(uid) as f:
            return f.read()

    @staticmethod
    def save(storage: Storage, vname: str, *messages: NewMessage) -> Mailbox:
        """Save `messages` in one dsync transaction; the refreshed mailbox."""
        box = storage.open_mailbox(vname)
        with box.transaction() as t:
            for message in messages:
                t.save(message)
        box.refresh()
        return box

    def deliver(
        self,
        storage: Storage,
        vname: str,
        body: bytes,
        flags: int = 0,
        keywords: frozenset[str] = frozenset(),
    ) -> int:
        """Deliver externally; the UID the driver gave the message."""
        box = storage.open_mailbox(vname)
        before = set(self.infos(box))
        self.external_deliver(storage, vname, body, flags, keywords)
        box.refresh()
        new = set(self.infos(box)) - before
        assert len(new) == 1, f"one delivery made {len(new)} new messages"
        box.close()
        return new.pop()

    def logged(self, storage: Storage, action: Callable[[], None]) -> list[MailboxLogRecord]:
        """The mailbox-log records `action` appended, timestamps checked against now()."""
        before, start = len(storage.mailbox_log()), int(self.now())
        action()
        log, end = storage.mailbox_log(), int(self.now()) + 1
        assert log[:before] == storage.mailbox_log()[:before]
        for record in log[before:]:
            assert start <= record.timestamp <= end, record
        return log[before:]


def msg(
    uid: int,
    body: bytes = b"Subject: x\r\n\r\nbody\r\n",
    guid: str = "",
    flags: int = 0,
    keywords: frozenset[str] = frozenset(),
    received_date: int = 0,
    min_modseq: int = 0,
) -> NewMessage:
    """A NewMessage; `guid` defaults to a 32-hex string made from the UID."""
    return NewMessage(
        uid=uid,
        guid=guid or f"{uid:032x}",
        body=io.BytesIO(body),
        flags=flags,
        keywords=keywords,
        received_date=received_date,
        min_modseq=min_modseq,
    )
