"""Export one mailbox: its `C` change list and the bodies the peer asks for (§3.5).

With no usable state (last_common_uid 0) every message is a save; with a state,
messages above last_common_uid are saves, changed older ones flag changes, and the
storage's log supplies expunges. Bodies are handed out as lazily opened files, so a
thousand queued `M` items never hold a thousand open files.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import MailboxNotFoundError, MailError, RemoteProtocolError, StorageError
from ..protocol.items import FLAG_RECENT, Mail, MailboxAttribute, MailChange, MailRequest
from ..storage.base import Mailbox, MessageChange, MessageInfo, guid128
from .attributes import export_attributes
from .hdr_hash import header_hash

UNKNOWN_SIZE = 2**64 - 1


@dataclass(frozen=True)
class ExportOptions:
    last_common_uid: int = 0
    last_common_modseq: int = 0
    guids_usable: bool = True
    remote_is_empty: bool = False
    hashed_headers: tuple[str, ...] = ("Date", "Message-ID")
    hash_version: int = 3
    with_timestamps: bool = False
    with_sizes: bool = False


class LazyBody(io.RawIOBase):
    """A message body that opens the stored file on first read and closes at EOF.

    `released` is set once the reader is done with it: the exporting side waits for
    that before committing moves or expunges that would pull the file away (the local
    channel hands the body itself to the other brain, which reads it later).
    """

    def __init__(self, opener: Callable[[], BinaryIO]) -> None:
        super().__init__()
        self._opener = opener
        self._file: BinaryIO | None = None
        self.released = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._file is None:
            if self.closed:
                return 0
            self._file = self._opener()
        data = self._file.read(len(buffer))
        buffer[: len(data)] = data
        if not data:
            self.close()
        return len(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()
        self.released.set()


class Exporter:
    def __init__(self, mailbox: Mailbox, options: ExportOptions) -> None:
        self.mailbox = mailbox
        self.options = options
        self._first_recent = mailbox.status().first_recent_uid
        self._instances: dict[str, int] = {}
        self._bodies: list[LazyBody] = []
        log = mailbox.changes_since(options.last_common_modseq)
        self._history_start = mailbox.history_start()
        # No state, or a log that no longer reaches back to it: export everything, with
        # the expunges the whole log still knows (§3.5.1, as a stateless export).
        self._return_all = log is None or options.last_common_modseq == 0
        self._log = log if log is not None else (mailbox.changes_since(0) or [])
        self.messages = self._messages_to_export()

    def _messages_to_export(self) -> dict[int, MessageInfo]:
        """Every message, or with a usable state only those above the common UID and
        those the log names: a stateful run reads what changed, not the mailbox."""
        if self._return_all:
            return {info.uid: info for info in self.mailbox.messages()}
        above = self.options.last_common_uid
        found = {info.uid: info for info in self.mailbox.messages(above_uid=above)}
        for change in self._log:
            if change.uid <= above:
                info = self.mailbox.message(change.uid)
                if info is not None:
                    found[change.uid] = info
        return found

    def attributes(self) -> list[MailboxAttribute]:
        """The `A` list (§5)."""
        return export_attributes(
            self.mailbox.attributes(), self.options.last_common_modseq, self._return_all
        )

    def changes(self) -> list[MailChange]:
        """The `C` list, ascending by UID, one entry per UID."""
        opts = self.options
        return_all = self._return_all
        records = {change.uid: change for change in self._log}
        result: dict[int, MailChange] = {}
        for uid, record in records.items():
            if uid not in self.messages and (record.expunged or 0 < uid <= opts.last_common_uid):
                if opts.last_common_uid == 0 or uid <= opts.last_common_uid:
                    result[uid] = _expunge_change(record)
        for uid, info in self.messages.items():
            found = records.get(uid)
            if uid > opts.last_common_uid:
                result[uid] = self._message_change("s", info, found)
                self._instances.setdefault(info.guid, uid)
            elif found is not None or return_all:
                result[uid] = self._message_change("f", info, found)
        return [result[uid] for uid in sorted(result)]

    def _message_change(
        self, kind: str, info: MessageInfo, record: MessageChange | None
    ) -> MailChange:
        add = remove = 0
        ops: tuple[str, ...] = ()
        if record is not None and not record.expunged:
            add, remove, ops = record.add_flags, record.remove_flags, record.keyword_ops
        elif info.modseq < self._history_start:
            # Flags set before tracking began: how they got here is unknown, so offer
            # them as added; the peer's merge then keeps rather than drops them.
            add = info.flags
            ops = tuple("+" + kw for kw in sorted(info.keywords)) if info.keywords else ()
        final = info.flags | (FLAG_RECENT if info.uid >= self._first_recent else 0)
        return MailChange(
            type=kind,
            uid=info.uid,
            guid=info.guid,
            hdr_hash=self._hdr_hash(info),
            modseq=info.modseq,
            pvt_modseq=0,
            add_flags=add,
            remove_flags=remove,
            final_flags=final,
            keyword_changes=keyword_changes(ops, info.keywords),
            received_timestamp=(info.received_date or 1) if self._timestamps(kind) else 0,
            virtual_size=self._size(kind, info),
        )

    def _timestamps(self, kind: str) -> bool:
        return kind == "s" and self.options.with_timestamps

    def _size(self, kind: str, info: MessageInfo) -> int | None:
        if kind != "s":
            return None
        return info.virtual_size if self.options.with_sizes else UNKNOWN_SIZE

    def _hdr_hash(self, info: MessageInfo) -> str | None:
        if self.options.guids_usable:
            return None
        if self.options.remote_is_empty:
            return ""
        with self.mailbox.open_message(info.uid) as body:
            return header_hash(body, self.options.hashed_headers, self.options.hash_version)

    def mails_for(self, requests: list[MailRequest]) -> Iterator[Mail]:
        """`M` items answering the peer's requests (§3.5.2); expunged ones without body."""
        gone: list[Mail] = []
        for request in requests:
            if request.guid:
                uid = self._instances.get(request.guid)
                if uid is None:
                    raise RemoteProtocolError(f"Remote requested unexpected GUID {request.guid}")
                mail = self._mail(uid, guid=request.guid, by_uid=False)
            else:
                mail = self._mail(request.uid, guid="", by_uid=True)
            if mail.body is None:
                gone.append(mail)
            else:
                yield mail
        yield from gone

    def all_saved_mails(self) -> Iterator[Mail]:
        """Every exported new mail, for peers that do not send requests."""
        for guid, uid in self._instances.items():
            yield self._mail(uid, guid=guid, by_uid=False)

    def _mail(self, uid: int, *, guid: str, by_uid: bool) -> Mail:
        info = self.messages.get(uid)
        if info is None:
            return Mail(guid=guid, uid=uid if by_uid else 0)
        return Mail(
            guid=guid,
            uid=uid if by_uid else 0,
            pop3_uidl=info.pop3_uidl,
            pop3_order=info.pop3_order,
            received_date=info.received_date,
            saved_date=info.saved_date or self.mailbox.saved_date(uid),
            body=self._lazy_body(uid),  # type: ignore[arg-type]
        )

    def _lazy_body(self, uid: int) -> LazyBody:
        body = LazyBody(self._opener(uid))
        self._bodies.append(body)
        return body

    def _opener(self, uid: int) -> Callable[[], BinaryIO]:
        def open_it() -> BinaryIO:
            try:
                return self.mailbox.open_message(uid)
            except MailboxNotFoundError as exc:
                raise StorageError(
                    f"Mailbox {self.mailbox.vname}: UID {uid} was expunged while being sent",
                    MailError.EXPUNGED,
                ) from exc

        return open_it

    def wait_bodies_released(self, timeout: float) -> None:
        """Block until the peer has read (or dropped) every body handed to it."""
        deadline = time.monotonic() + timeout
        for body in self._bodies:
            if not body.released.wait(max(0.0, deadline - time.monotonic())):
                raise StorageError("Peer did not read the message bodies sent to it")


def _expunge_change(record: MessageChange) -> MailChange:
    guid = record.guid128.hex() if record.guid128 else None
    return MailChange(type="e", uid=record.uid, guid=guid)


def keyword_changes(ops: tuple[str, ...], current: frozenset[str]) -> tuple[str, ...]:
    """Log ops then current keywords: `+kw` present → `&kw`; `-kw` present → `=kw` (§3.5.1)."""
    if not ops and not current:
        return ()
    result: list[str] = []
    for op in ops:
        keyword = op[1:]
        if op[0] == "+" and keyword in current:
            result.append("&" + keyword)
        elif op[0] == "-" and keyword in current:
            continue
        else:
            result.append(op)
    listed = {entry[1:] for entry in result if entry[0] in "&="}
    result.extend("=" + keyword for keyword in sorted(current) if keyword not in listed)
    return tuple(result)


def guid_key(guid: str, use_guid128: bool) -> str:
    return guid128(guid).hex() if use_guid128 and guid else guid
