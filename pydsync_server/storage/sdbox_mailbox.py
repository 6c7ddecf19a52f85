"""An opened sdbox mailbox: the index view (UIDs, flags, keywords, modseqs, identity)
joined with the `u.<uid>` files (GUID, dates, sizes), storage-formats.md §4.

The file name is the UID; a file may be in the alt storage (record flag 0x40, but
both places are tried, as Dovecot does). A missing file means the message is gone; a
damaged one is left out of `messages()` and listed in `broken` (force-resync decides
what it still holds) instead of failing the whole mailbox.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import MailboxNotFoundError, MailError, StorageError
from .base import (
    Attribute,
    Mailbox,
    MailboxStatus,
    MessageChange,
    MessageInfo,
    Transaction,
    infos_above,
)
from .changes import merge_changes
from .dbox_file import (
    MSG_MAGIC,
    DboxCorruptError,
    parse_file_header,
    parse_metadata,
    virtual_size,
)
from .dovecot_index import IndexPaths, IndexView, LogFormatError, read_index
from .maildir_attributes import mailbox_values

if TYPE_CHECKING:
    from .sdbox import SdboxStorage

DBOX_HDR = "dbox-hdr"
FLAG_ALT = 0x40  # record flag: the file is in the alt storage (§4.2)
SYSTEM_FLAGS = 0x1F
_HEAD = 4096


@dataclass(frozen=True)
class FileInfo:
    """What a `u.N` file says of its message (§2.4)."""

    guid: str
    received_date: int
    saved_date: int
    virtual_size: int | None
    physical_size: int
    body_offset: int
    body_size: int
    pop3_uidl: str = ""
    pop3_order: int = 0


def read_file_info(path: Path) -> FileInfo:
    """Header line, message header and metadata of a `u.N` file without reading the
    message itself. Raises FileNotFoundError or DboxCorruptError."""
    name = str(path)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        head = f.read(_HEAD)
        header = parse_file_header(head, name)
        end = header.size + header.msg_header_size
        if len(head) < end:
            head += f.read(end - len(head))
        msg = head[header.size : end]
        if len(msg) < end - header.size or msg[:2] != MSG_MAGIC or msg[-1:] != b"\n":
            raise DboxCorruptError("message header missing or broken", header.size, name)
        try:
            size = int(msg[13:29], 16)
        except ValueError:
            raise DboxCorruptError("bad message size", header.size, name) from None
        if end + size > st.st_size:
            raise DboxCorruptError(f"message of {size} bytes runs past the end", end, name)
        f.seek(end + size)
        meta, _ = parse_metadata(f.read(1 << 16), 0, name)
    return FileInfo(
        guid=meta.guid,
        received_date=meta.received_date if meta.received_date is not None else int(st.st_mtime),
        saved_date=int(st.st_ctime),
        virtual_size=meta.virtual_size,
        physical_size=meta.physical_size if meta.physical_size is not None else size,
        body_offset=end,
        body_size=size,
        pop3_uidl=meta.pop3_uidl,
        pop3_order=meta.pop3_order,
    )


def mailbox_guid(view: IndexView) -> bytes | None:
    """The mailbox GUID of `dbox-hdr` (None: missing or all zero, which Dovecot treats
    as a corrupted index)."""
    hdr = view.state.ext_header(DBOX_HDR)
    if hdr is None or len(hdr) < 20 or hdr[4:20] == bytes(16):
        return None
    return bytes(hdr[4:20])


class SdboxMailbox(Mailbox):
    def __init__(self, vname: str, storage: SdboxStorage, box_dir: Path) -> None:
        self.vname = vname
        self.storage = storage
        self.box_dir = box_dir
        self.paths = IndexPaths(box_dir)
        self._infos: dict[int, FileInfo] = {}
        self.broken: dict[int, str] = {}
        self.refresh()

    @property
    def alt_dir(self) -> Path | None:
        return self.storage.alt_box_dir(self.vname)

    # -- the view --

    def refresh(self) -> None:
        if not self.box_dir.is_dir():
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {self.vname}")
        try:
            view = read_index(self.paths)
        except LogFormatError as exc:
            raise StorageError(
                f"Mailbox {self.vname}: {exc} (pydsync force-resync rebuilds the index)",
                MailError.TEMP,
            ) from exc
        if not view.exists or mailbox_guid(view) is None:
            self.storage.repair_index(self.vname, self.box_dir)
            view = read_index(self.paths)
        guid = mailbox_guid(view)
        if guid is None:
            raise StorageError(f"Mailbox {self.vname}: index has no mailbox GUID")
        self.view, self.guid = view, guid
        self._messages: list[MessageInfo] | None = None
        self._attributes: list[Attribute] | None = None

    @property
    def problem(self) -> str | None:
        """Damage that stopped reading the index: what came before it is shown; writes
        are refused until force-resync."""
        return self.view.problem

    def status(self) -> MailboxStatus:
        st = self.view.state
        return MailboxStatus(
            guid=self.guid,
            uid_validity=st.uid_validity,
            uid_next=st.next_uid,
            messages=len(st.messages),
            first_recent_uid=max(st.first_recent_uid, 1),
            highest_modseq=st.modseq,
        )

    def file_path(self, uid: int) -> Path | None:
        """Where `u.<uid>` is now: primary storage first, then alt (§4.1, §4.2)."""
        for directory in (self.box_dir, self.alt_dir):
            if directory is not None and (directory / f"u.{uid}").exists():
                return directory / f"u.{uid}"
        return None

    def file_info(self, uid: int) -> FileInfo | None:
        """The file's metadata, cached (a `u.N` never changes); None when gone or broken."""
        if uid in self._infos:
            return self._infos[uid]
        path = self.file_path(uid)
        if path is None:
            return None
        try:
            info = read_file_info(path)
        except FileNotFoundError:
            return None
        except DboxCorruptError as exc:
            self.broken[uid] = str(exc)
            return None
        except OSError as exc:
            raise StorageError(f"reading {path} failed: {exc.strerror}") from exc
        self._infos[uid] = info
        return info

    def messages(self, above_uid: int = 0) -> Sequence[MessageInfo]:
        if self._messages is not None:
            return [info for info in self._messages if info.uid > above_uid]
        found = infos_above(self.view.state.messages, above_uid, self.message)
        if not above_uid:
            self._messages = found
        return list(found)

    def message(self, uid: int) -> MessageInfo | None:
        st = self.view.state
        msg = st.messages.get(uid)
        info = self.file_info(uid) if msg is not None else None
        if msg is None or info is None:
            return None
        return MessageInfo(
            uid=msg.uid,
            guid=info.guid,
            flags=msg.flags & SYSTEM_FLAGS,
            keywords=msg.keywords,
            modseq=st.message_modseq(msg),
            received_date=info.received_date,
            saved_date=info.saved_date,
            virtual_size=self._vsize(msg.uid, info),
            physical_size=info.physical_size,
            pop3_uidl=info.pop3_uidl,
            pop3_order=info.pop3_order,
        )

    def _vsize(self, uid: int, info: FileInfo) -> int:
        if info.virtual_size is not None:
            return info.virtual_size
        with self.open_message(uid) as f:
            return virtual_size(f.read())

    def changes_since(self, modseq: int) -> list[MessageChange] | None:
        st = self.view.state
        if modseq > st.modseq or (modseq and modseq < self.view.history_start):
            return None
        return merge_changes(st.changes, modseq)

    def history_start(self) -> int:
        """Messages with modseqs up to the oldest log's initial modseq were changed
        before the log begins."""
        return self.view.history_start + 1

    def open_message(self, uid: int) -> BinaryIO:
        if uid not in self.view.state.messages:
            raise MailboxNotFoundError(f"Message UID={uid} is expunged in {self.vname}")
        info = self.file_info(uid)
        path = self.file_path(uid)
        if info is None or path is None:
            if uid in self.broken:
                raise StorageError(f"Mailbox {self.vname}: {self.broken[uid]}")
            raise MailboxNotFoundError(f"Message UID={uid} is expunged in {self.vname}")
        try:
            with open(path, "rb") as f:
                f.seek(info.body_offset)
                body = f.read(info.body_size)
        except FileNotFoundError:
            raise MailboxNotFoundError(f"Message UID={uid} is expunged in {self.vname}") from None
        except OSError as exc:
            raise StorageError(f"reading {path} failed: {exc.strerror}") from exc
        if len(body) != info.body_size:
            raise StorageError(f"Mailbox {self.vname}: {path} was truncated while reading")
        return io.BytesIO(body)

    def attributes(self) -> list[Attribute]:
        """Values of the store's dict (read once per view) with the log's stamps."""
        if self._attributes is None:
            self._attributes = self._read_attributes()
        return list(self._attributes)

    def _read_attributes(self) -> list[Attribute]:
        values = mailbox_values(self.storage.attribute_dict.read(), self.guid)
        stamps = self.view.state.attributes
        found = []
        for key in sorted(values.keys() | stamps.keys()):
            value, stamp = values.get(key), stamps.get(key)
            if value is None and (stamp is None or stamp.set):
                continue  # removed behind the log's back, or only in the log
            if stamp is None:
                found.append(Attribute(key[0], key[1], value))
            else:
                found.append(
                    Attribute(key[0], key[1], value, stamp.timestamp, stamp.modseq, stamp.sync)
                )
        return found

    def transaction(self) -> Transaction:
        from .sdbox_transaction import SdboxTransaction

        return SdboxTransaction(self)


def dbox_hdr(guid: bytes, rebuild_count: int = 0, flags: int = 0) -> bytes:
    """The 24-byte `dbox-hdr` header (§4.2)."""
    return struct.pack("<I16sB3x", rebuild_count, guid, flags)
