"""An opened mdbox mailbox (storage-formats.md §3.4, §6.5): the per-mailbox index joined
with the map and the m.N metadata into `MessageInfo`s; modseqs, dsync's change scan and
attribute stamps come from the index log (dovecot_index).

A mailbox directory without an index looks empty to Dovecot, which then creates a
fresh one (§3.1); opening it here does the same, so both agree on its GUID.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import MailboxNotFoundError, StorageError
from . import dbox_file as dbox
from .base import (
    Attribute,
    Mailbox,
    MailboxStatus,
    MessageChange,
    MessageInfo,
    Transaction,
    infos_above,
)
from .changes import SYSTEM_FLAGS_MASK, merge_changes
from .dovecot_index import (
    GUID,
    MDBOX,
    MDBOX_HDR,
    IndexPaths,
    IndexState,
    IndexView,
    MessageRecord,
    create_log,
    new_log_header,
    read_index,
)
from .dovecot_index import Transaction as LogTransaction
from .maildir_attributes import AttributeDict, mailbox_values
from .mdbox_files import GuidIndex, MdboxFiles
from .mdbox_map import MapRecord, MapView, MdboxMap

BOX_HDR = struct.Struct("<I16sB3x")  # mdbox-hdr: map_uid_validity, mailbox GUID, flags
BOX_REC = struct.Struct("<II")  # mdbox record: map_uid, save_date


@dataclass
class MdboxContext:
    """What every mailbox of one store shares."""

    root: Path
    map: MdboxMap
    files: MdboxFiles
    clock: Callable[[], float]
    hostname: str
    attributes: AttributeDict
    allocate_uid_validity: Callable[[], int]
    new_guid: Callable[[], bytes]
    guid_index: GuidIndex


@dataclass(frozen=True)
class BoxHeader:
    map_uid_validity: int
    guid: bytes
    flags: int = 0


def box_header(state: IndexState) -> BoxHeader | None:
    """The `mdbox-hdr` extension header; None when missing or its GUID is zero."""
    raw = state.ext_header(MDBOX_HDR.name)
    if raw is None or len(raw) < 20:
        return None
    uidv, guid, flags = BOX_HDR.unpack(raw[:24].ljust(24, b"\0"))
    return None if guid == bytes(16) else BoxHeader(uidv, guid, flags)


def box_record(state: IndexState, msg: MessageRecord) -> tuple[int, int]:
    """(map_uid, save_date) of one message; (0, 0) when it has none."""
    raw = state.record_data(msg, MDBOX.name)
    return BOX_REC.unpack(raw[:8]) if raw else (0, 0)


def header_transaction(map_uid_validity: int, guid: bytes, uid_validity: int) -> LogTransaction:
    """The records that make a new mailbox index (§3.7): mdbox-hdr, UIDVALIDITY, and the
    modseq extension so messages get their own modseqs."""
    t = LogTransaction(sync=True)
    t.enable_modseqs(IndexState())
    t.ext_intro(MDBOX_HDR)
    t.ext_hdr_update(0, BOX_HDR.pack(map_uid_validity, guid, 0))
    t.set_uid_validity(uid_validity)
    return t


def create_index(
    directory: Path, ctx: MdboxContext, guid: bytes | None = None, uid_validity: int = 0
) -> bool:
    """Write the first index log of a mailbox; False when one exists already."""
    map_view = ctx.map.ensure()
    t = header_transaction(
        map_view.uid_validity, guid or ctx.new_guid(), uid_validity or ctx.allocate_uid_validity()
    )
    return create_log(IndexPaths(directory).log, new_log_header(int(ctx.clock())), t)


class MdboxMailbox(Mailbox):
    """One mailbox's view, read at open and at each `refresh()`."""

    def __init__(self, vname: str, directory: Path, ctx: MdboxContext, storage_name: str) -> None:
        """`storage_name`: the list-internal name (mUTF-7 levels joined by "/"), what
        new messages record as their original mailbox (metadata B, §2.4)."""
        self.vname = vname
        self.storage_name = storage_name
        self.directory = directory
        self.paths = IndexPaths(directory)
        self.ctx = ctx
        self._infos: list[MessageInfo] | None = None
        self.refresh()

    # -- reading --

    def refresh(self) -> None:
        if not self.directory.is_dir():
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {self.vname}")
        view = read_index(self.paths)
        if not view.exists or box_header(view.state) is None:
            self._repair_header(view)
            view = read_index(self.paths)
        map_view = self.ctx.map.read()
        # A broken log would show fewer messages than there are, and a sync would then
        # expunge the rest on the other side: refuse until force-resync repaired it.
        for problem in (view.problem, map_view.problem):
            if problem:
                raise StorageError(f"{self.vname}: {problem} (run pydsync force-resync)")
        self.view: IndexView = view
        self.state: IndexState = view.state
        self.map_view: MapView = map_view
        self._infos = None
        # Attribute values as of this refresh (the dict file is another program's too).
        self._attr_values = mailbox_values(self.ctx.attributes.read(), self.header.guid)

    def _repair_header(self, view: IndexView) -> None:
        """Give a mailbox without a usable index header one, as Dovecot would."""
        if not view.exists:
            try:
                create_index(self.directory, self.ctx)
            except FileNotFoundError:
                raise MailboxNotFoundError(f"Mailbox doesn't exist: {self.vname}") from None
            return
        from .dovecot_index import locked_log

        with locked_log(self.paths.log) as locked:
            state = read_index(self.paths, locked.data).state
            if box_header(state) is None:
                uidv = state.uid_validity or self.ctx.allocate_uid_validity()
                locked.append(
                    header_transaction(
                        self.ctx.map.ensure().uid_validity, self.ctx.new_guid(), uidv
                    )
                )

    @property
    def header(self) -> BoxHeader:
        found = box_header(self.state)
        if found is None:
            raise StorageError(f"{self.paths.log}: mdbox-hdr missing")
        return found

    def status(self) -> MailboxStatus:
        state = self.state
        return MailboxStatus(
            guid=self.header.guid,
            uid_validity=state.uid_validity,
            uid_next=state.next_uid,
            messages=len(state.messages),
            first_recent_uid=max(state.first_recent_uid, 1),
            highest_modseq=max(state.modseq, 1),
        )

    def map_record(self, msg: MessageRecord) -> MapRecord | None:
        """The map entry a message points at; None when it is lost, or when the map was
        recreated since (map uidvalidity mismatch: the map_uids mean nothing, §3.4)."""
        map_uid, _ = box_record(self.state, msg)
        if not map_uid or self.header.map_uid_validity != self.map_view.uid_validity:
            return None
        return self.map_view.records.get(map_uid)

    def messages(self, above_uid: int = 0) -> Sequence[MessageInfo]:
        if self._infos is not None:
            return [info for info in self._infos if info.uid > above_uid]
        infos = infos_above(self.state.messages, above_uid, self.message)
        if not above_uid:
            self._infos = infos
        return list(infos)

    def message(self, uid: int) -> MessageInfo | None:
        msg = self.state.messages.get(uid)
        return self._info(msg) if msg is not None else None

    def _info(self, msg: MessageRecord) -> MessageInfo:
        """One message as dsync sees it; a message whose data can't be read keeps its
        index identity (128-bit GUID) so the damage shows when its body is fetched."""
        state = self.state
        _, save_date = box_record(state, msg)
        guid128 = state.record_data(msg, GUID.name) or b""
        rec = self.map_record(msg)
        meta: dbox.Record | None = None
        if rec is not None:
            try:
                meta = self.ctx.files.metadata(rec)
            except StorageError:
                meta = None
        base = MessageInfo(
            uid=msg.uid,
            guid=guid128.hex() if guid128.strip(b"\0") else "",
            flags=msg.flags & SYSTEM_FLAGS_MASK,
            keywords=frozenset(msg.keywords),
            modseq=state.message_modseq(msg),
            received_date=0,
            saved_date=save_date,
        )
        if meta is None:
            return base
        m = meta.metadata
        return MessageInfo(
            uid=base.uid,
            guid=m.guid or base.guid,
            flags=base.flags,
            keywords=base.keywords,
            modseq=base.modseq,
            received_date=m.received_date or 0,
            saved_date=save_date,
            virtual_size=m.virtual_size if m.virtual_size is not None else self._vsize(msg),
            physical_size=m.physical_size if m.physical_size is not None else meta.body_size,
            pop3_uidl=m.pop3_uidl,
            pop3_order=m.pop3_order,
        )

    def _vsize(self, msg: MessageRecord) -> int:
        with self.open_message(msg.uid) as f:
            return dbox.virtual_size(f.read())

    def changes_since(self, modseq: int) -> list[MessageChange] | None:
        if modseq > max(self.state.modseq, 1):
            return None
        if modseq and modseq < self.view.history_start:
            return None
        return merge_changes(self.state.changes, modseq)

    def history_start(self) -> int:
        return self.view.history_start

    def open_message(self, uid: int) -> BinaryIO:
        msg = self.state.messages.get(uid)
        if msg is None:
            raise MailboxNotFoundError(f"Message UID={uid} is expunged in {self.vname}")
        rec = self.map_record(msg)
        if rec is None:
            map_uid, _ = box_record(self.state, msg)
            raise StorageError(
                f"{self.vname} UID {uid}: map uid {map_uid} lost (run pydsync force-resync)"
            )
        _, body = self.ctx.files.read(rec)
        return io.BytesIO(body)

    def attributes(self) -> list[Attribute]:
        values = self._attr_values
        stamps = self.state.attributes
        found = []
        for type_, key in sorted(set(values) | set(stamps)):
            value = values.get((type_, key))
            stamp = stamps.get((type_, key))
            if stamp is None:
                found.append(Attribute(type_, key, value))
            elif value is not None or not stamp.set:
                found.append(
                    Attribute(type_, key, value, stamp.timestamp, stamp.modseq, stamp.sync)
                )
        return found

    def transaction(self) -> Transaction:
        from .mdbox_transaction import MdboxTransaction

        return MdboxTransaction(self)
