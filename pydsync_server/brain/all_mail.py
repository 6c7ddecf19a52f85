"""-a MAILBOX: a local mailbox holding all mail, searched by GUID before a body is
requested from the peer (dsync-algorithm.md §3.7; Dovecot's virtual \\All mailbox).
Any mailbox of the store can play that part here."""

from __future__ import annotations

from dataclasses import replace
from typing import BinaryIO

from ..errors import MailboxNotFoundError
from ..storage.base import Mailbox, MessageInfo, Storage
from .settings import Log


class AllMail:
    def __init__(self, storage: Storage, vname: str, log: Log) -> None:
        self.storage = storage
        self.vname = vname
        self.log = log
        self._mailbox: Mailbox | None = None
        self._by_guid: dict[str, MessageInfo] | None = None

    def _index(self) -> dict[str, MessageInfo]:
        if self._by_guid is None:
            self._by_guid = {}
            try:
                self._mailbox = self.storage.open_mailbox(self.vname)
            except MailboxNotFoundError:
                self.log(f"Warning: all-mail mailbox {self.vname} doesn't exist, not used")
                return self._by_guid
            for info in self._mailbox.messages():
                self._by_guid.setdefault(info.guid, info)
        return self._by_guid

    def __call__(self, guid: str) -> tuple[BinaryIO, MessageInfo] | None:
        info = self._index().get(guid)
        if info is None or self._mailbox is None:
            return None
        try:
            saved = info.saved_date or self._mailbox.saved_date(info.uid)
            return self._mailbox.open_message(info.uid), replace(info, saved_date=saved)
        except MailboxNotFoundError:
            return None

    def close(self) -> None:
        if self._mailbox is not None:
            self._mailbox.close()
