"""Writes to one mdbox mailbox, made visible together by commit() (storage-formats.md
§3.2, §3.5, §3.7).

Saved bodies stream at once into the newest m.N (flocked, past the end the map knows)
or a new temp file, as Dovecot's saves do, so memory does not grow with the mailbox;
none of it is visible before commit, and a rollback cuts it away. commit() follows
Dovecot's order so a crash leaks space but never loses mail: the files are fsync'ed;
then, under the map lock, new files get their ids and the map its records (refcount 1)
and the +1s of messages stored once and shared by GUID; then the mailbox index
transaction (dsync's, `sync` records) under the mailbox log lock; last, the -1s of
expunged messages.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import MailboxNotFoundError, StorageError
from . import dbox_file as dbox
from .base import NewMessage, guid128
from .mdbox_commit import IndexCommit, NewRecord
from .mdbox_map import MapChanges, MapRecord, MapView
from .recording import RecordingTransaction

if TYPE_CHECKING:
    from .mdbox_files import FileWriter
    from .mdbox_mailbox import MdboxMailbox


@dataclass
class _Save:
    message: NewMessage  # body emptied: the bytes are in the writer's file
    shared: MapRecord | None = None  # an identical message already stored
    writer_index: int = -1


class MdboxTransaction(RecordingTransaction[_Save]):
    def __init__(self, box: MdboxMailbox) -> None:
        super().__init__(box.status())
        self._box = box
        self._writer: tuple[FileWriter, MapView] | None = None  # made by the first save

    def save(self, message: NewMessage) -> None:
        self._check_save(message)
        guid = message.guid or self._box.ctx.new_guid().hex()
        meta = dbox.Metadata(
            guid=guid,
            received_date=message.received_date or int(self._box.ctx.clock()),
            pop3_uidl=message.pop3_uidl,
            pop3_order=message.pop3_order,
            orig_mailbox=self._box.storage_name,
        )
        head, tail = meta.encode_around_vsize()  # refuses unstorable metadata before writing
        writer, view = self._open_writer()
        # Bodies are kept byte for byte (Dovecot reads CRLF bodies as they are, §2.3).
        index, size = writer.add_message(
            message.body, lambda _, vsize: b"%sV%x\n%s" % (head, vsize, tail)
        )
        found = self._box.ctx.guid_index.find(guid, view)
        shared = None
        if found is not None and _same_message(found, size, meta):
            writer.drop_last()
            shared, index = found[0], -1
        kept = NewMessage(
            message.uid, guid, io.BytesIO(), message.flags, message.keywords,
            message.received_date, message.saved_date, message.min_modseq,
            message.pop3_uidl, message.pop3_order,
        )  # fmt: skip
        self._saves[message.uid] = _Save(kept, shared, index)

    def _open_writer(self) -> tuple[FileWriter, MapView]:
        """The transaction's file writer, and the map as the first save read it (the GUID
        index learns its records; commit rechecks shared ones under the map lock)."""
        if self._writer is None:
            ctx = self._box.ctx
            view = ctx.map.ensure()
            ctx.guid_index.learn(view)
            self._writer = ctx.files.new_writer(view), view
        return self._writer

    def rollback(self) -> None:
        self._closed = True
        self._saves.clear()
        self._abort_writer()

    def _abort_writer(self) -> None:
        if self._writer is not None:
            self._writer[0].abort()
            self._writer = None

    # -- commit --

    def commit(self) -> None:
        self._close()
        if self._is_empty():
            return
        box = self._box
        try:
            if not box.paths.log.exists():
                raise MailboxNotFoundError(f"Mailbox doesn't exist: {box.vname}")
            saves = [self._saves[uid] for uid in sorted(self._saves)]
            new_map_uids = self._store_messages(saves)
        finally:
            self._abort_writer()  # after _store_messages: nothing left to undo
        records = [
            NewRecord(
                s.message,
                map_uid,
                guid128(s.message.guid),
                s.message.saved_date or int(box.ctx.clock()),
            )  # fmt: skip
            for s, map_uid in zip(saves, new_map_uids, strict=True)
        ]
        try:
            released = IndexCommit(box, records, self.ops).run()
        except BaseException:
            self._unref(new_map_uids)  # the mailbox never referenced them
            raise
        self._unref(released)

    def _store_messages(self, saves: list[_Save]) -> list[int]:
        """Reference the written records in the map; the map_uid of each save."""
        if self._writer is None:
            return []
        writer = self._writer[0]  # commit() aborts it if anything here fails
        writer.sync()
        with self._box.ctx.map.locked() as locked:
            gone = [s for s in saves if s.shared and s.shared.map_uid not in locked.view.records]
            if gone:
                raise StorageError("a shared message was purged meanwhile; retry")
            locations = writer.assign(locked) if writer else []
            changes = MapChanges(new=locations, highest_file_id=writer.highest_file_id)
            for s in saves:
                if s.shared is not None:
                    changes.ref(s.shared.map_uid, +1)
            new_uids = locked.commit(changes)
            uid_validity = locked.view.uid_validity
        writer.finish()
        self._writer = None
        for s in saves:
            if s.shared is None:
                self._box.ctx.guid_index.add(uid_validity, new_uids[s.writer_index], s.message.guid)
        return [s.shared.map_uid if s.shared else new_uids[s.writer_index] for s in saves]

    def _unref(self, map_uids: list[int]) -> None:
        if not map_uids:
            return
        changes = MapChanges()
        for map_uid in map_uids:
            changes.ref(map_uid, -1)
        with self._box.ctx.map.locked() as locked:
            locked.commit(changes)


def _same_message(
    found: tuple[MapRecord, dbox.Record], body_size: int, metadata: dbox.Metadata
) -> bool:
    """Share a stored copy only when it is surely the same message: same GUID, size,
    received date and POP3 fields (a GUID alone may be reused by a broken peer)."""
    _, rec = found
    meta = rec.metadata
    return (
        rec.body_size == body_size
        and meta.received_date == metadata.received_date
        and meta.pop3_uidl == metadata.pop3_uidl
        and meta.pop3_order == metadata.pop3_order
    )
