"""Writes to one sdbox mailbox, as one index-log transaction (storage-formats.md §4.4,
§6.7).

`save()` writes the message to a `.temp.*` file at once; `commit()` takes the log's
fcntl lock, re-reads the index through it, gives UIDs taken meanwhile by others new
ones, renames the temp files to `u.<uid>` (as Dovecot does before its index commit),
appends one transaction marked as dsync's (SYNC) and only then unlinks the files of
expunged messages. A failure before the log write undoes the renames.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MailboxNotFoundError, MailError, StorageError
from .attributes import check_attribute
from .base import NewMessage, Transaction, guid128
from .dbox_file import Metadata, encode_file, temp_name, virtual_size
from .dovecot_index import DBOX_HDR, AttributeChange, IndexState, locked_log, read_index
from .dovecot_index import Transaction as LogTransaction
from .sdbox_mailbox import SYSTEM_FLAGS, read_file_info

if TYPE_CHECKING:
    from .sdbox_mailbox import SdboxMailbox

Flags = tuple[int, frozenset[str]]


@dataclass
class _Save:
    temp: Path
    flags: int
    keywords: frozenset[str]
    min_modseq: int


@dataclass
class _Plan:
    """What one commit does, worked out under the lock."""

    log: LogTransaction
    placed: list[tuple[Path, Path]] = field(default_factory=list)  # (temp, u.N)
    links: list[tuple[Path, Path]] = field(default_factory=list)  # moves: (u.old, u.new)
    unlink: list[int] = field(default_factory=list)  # UIDs whose files go after the commit


class SdboxTransaction(Transaction):
    def __init__(self, box: SdboxMailbox) -> None:
        self.box = box
        self.start_uid_next = box.status().uid_next
        self._saves: dict[int, _Save] = {}
        self._flag_ops: list[tuple[int, int, int, frozenset[str], frozenset[str]]] = []
        self._min_modseq: dict[int, int] = {}
        self._expunges: list[int] = []
        self._moves: list[tuple[int, int]] = []
        self._uid_validity = 0
        self._guid: bytes | None = None
        self._uid_next = self._modseq = self._recent = 0
        self._attrs: dict[tuple[str, str], tuple[str | None, int]] = {}
        self._done = False

    def _check_open(self) -> None:
        if self._done:
            raise StorageError("Transaction already finished", MailError.NOTPOSSIBLE)

    def _check_new_uid(self, uid: int) -> None:
        taken = set(self._saves) | {new for _, new in self._moves}
        if uid < self.start_uid_next or uid in taken or uid <= 0:
            raise StorageError(f"UID {uid} is already used in {self.box.vname}", MailError.EXISTS)

    # -- buffered writes --

    def save(self, message: NewMessage) -> None:
        self._check_open()
        self._check_new_uid(message.uid)
        body = message.body.read()
        now = self.box.storage.now()
        meta = Metadata(
            guid=message.guid or secrets.token_hex(16),
            received_date=message.received_date or now,
            virtual_size=virtual_size(body),
            pop3_uidl=message.pop3_uidl,
            pop3_order=message.pop3_order,
        )
        data = encode_file(now, [(body, meta)])
        temp = self.box.box_dir / temp_name(self.box.storage.hostname)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StorageError(f"writing {temp} failed: {exc.strerror}") from exc
        flags = message.flags & SYSTEM_FLAGS
        self._saves[message.uid] = _Save(temp, flags, message.keywords, message.min_modseq)

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
        self._flag_ops.append(
            (
                uid,
                add_flags & SYSTEM_FLAGS,
                remove_flags & SYSTEM_FLAGS,
                add_keywords,
                remove_keywords,
            )
        )
        if min_modseq:
            self._min_modseq[uid] = max(self._min_modseq.get(uid, 0), min_modseq)

    def expunge(self, uid: int) -> None:
        self._check_open()
        self._expunges.append(uid)

    def move(self, uid: int, new_uid: int) -> None:
        self._check_open()
        self._check_new_uid(new_uid)
        self._moves.append((uid, new_uid))

    def set_uid_validity(self, uid_validity: int) -> None:
        self._check_open()
        self._uid_validity = uid_validity

    def set_guid(self, guid: bytes) -> None:
        self._check_open()
        if len(guid) != 16 or guid == bytes(16):
            raise StorageError("Invalid mailbox GUID", MailError.PARAMS)
        self._guid = guid

    def raise_uid_next(self, uid_next: int) -> None:
        self._check_open()
        self._uid_next = max(self._uid_next, uid_next)

    def raise_highest_modseq(self, modseq: int) -> None:
        self._check_open()
        self._modseq = max(self._modseq, modseq)

    def raise_first_recent_uid(self, uid: int) -> None:
        self._check_open()
        self._recent = max(self._recent, uid)

    def set_attribute(self, type: str, key: str, value: str | None, last_change: int) -> None:
        self._check_open()
        check_attribute(type, key)
        self._attrs[type, key] = (value, last_change)

    # -- commit --

    def rollback(self) -> None:
        self._done = True
        for save in self._saves.values():
            save.temp.unlink(missing_ok=True)

    def commit(self) -> None:
        self._check_open()
        self._done = True
        try:
            self._commit()
        except FileNotFoundError:
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {self.box.vname}") from None
        except OSError as exc:
            raise StorageError(f"Mailbox {self.box.vname}: commit failed: {exc.strerror}") from exc
        finally:
            for save in self._saves.values():
                save.temp.unlink(missing_ok=True)

    def _commit(self) -> None:
        box = self.box
        with locked_log(box.paths.log) as locked:
            view = read_index(box.paths, locked.data)
            if view.problem:
                raise StorageError(
                    f"Mailbox {box.vname}: index damaged ({view.problem}); "
                    "pydsync force-resync rebuilds it"
                )
            plan = self._plan(view.state)
            self._place(plan)
            undo_attrs = None
            try:
                undo_attrs = self._write_attributes()
                if plan.log:
                    locked.append(plan.log)
            except BaseException:
                for _, final in plan.placed + plan.links:
                    final.unlink(missing_ok=True)
                if undo_attrs is not None:
                    undo_attrs()
                raise
        for uid in plan.unlink:
            for directory in (box.box_dir, box.alt_dir):
                if directory is not None:
                    (directory / f"u.{uid}").unlink(missing_ok=True)

    def _plan(self, st: IndexState) -> _Plan:
        plan = _Plan(LogTransaction(sync=True))
        state = {uid: (m.flags & SYSTEM_FLAGS, m.keywords) for uid, m in st.messages.items()}
        new: dict[int, Flags] = {uid: (s.flags, s.keywords) for uid, s in self._saves.items()}
        for uid, add, remove, add_kw, remove_kw in self._flag_ops:
            for table in (state, new):
                if uid in table:
                    flags, kws = table[uid]
                    table[uid] = ((flags & ~remove) | add, (kws - remove_kw) | add_kw)
        gone = [uid for uid in dict.fromkeys(self._expunges) if uid in st.messages]
        moved = {old: dst for old, dst in self._moves if old in st.messages and old not in gone}
        for old, dst in moved.items():
            new[dst] = state[old]
        renumber = self._renumber(st, sorted(new))
        log = plan.log
        changes = self._flag_ops or self._min_modseq or self._attrs or self._modseq > st.modseq
        if new or gone or changes:
            log.enable_modseqs(st)  # first: Dovecot's dsync has them on too
        self._identity_records(log, st)
        expunged = gone + list(moved)
        log.expunge_guid((uid, self._guid128(uid)) for uid in expunged)
        plan.unlink = expunged
        final = {renumber.get(uid, uid): flags for uid, flags in new.items()}
        log.append((uid, flags) for uid, (flags, _) in sorted(final.items()))
        for name in sorted({kw for _, kws in final.values() for kw in kws}):
            log.keyword_update(name, True, [uid for uid, (_, k) in final.items() if name in k])
        self._flag_records(log, st, state, set(expunged))
        self._modseq_records(log, st, renumber, set(expunged))
        for uid, save in self._saves.items():
            plan.placed.append((save.temp, self.box.box_dir / f"u.{renumber.get(uid, uid)}"))
        for old, dst in moved.items():
            source = self.box.file_path(old)
            if source is not None:
                plan.links.append((source, self.box.box_dir / f"u.{renumber.get(dst, dst)}"))
        top = max(final, default=0)
        if self._uid_next > max(st.next_uid, top + 1):
            log.set_next_uid(self._uid_next)
        if self._recent > st.first_recent_uid:
            log.set_first_recent_uid(self._recent)
        log.attribute_update(
            AttributeChange(value is not None, type_, key, stamp, len((value or "").encode()))
            for (type_, key), (value, stamp) in self._attrs.items()
        )
        return plan

    @staticmethod
    def _renumber(st: IndexState, uids: list[int]) -> dict[int, int]:
        """New UIDs for those another writer took since the transaction began."""
        renumber: dict[int, int] = {}
        free = max([st.next_uid, *(u + 1 for u in uids)])
        for uid in uids:
            if uid < st.next_uid:
                renumber[uid] = free
                free += 1
        return renumber

    def _identity_records(self, log: LogTransaction, st: IndexState) -> None:
        if self._guid is not None and self._guid != self.box.guid:
            log.ext_intro(DBOX_HDR, st)
            log.ext_hdr_update(4, self._guid)
        if self._uid_validity and self._uid_validity != st.uid_validity:
            log.set_uid_validity(self._uid_validity)

    def _guid128(self, uid: int) -> bytes:
        path = self.box.file_path(uid)
        try:
            info = read_file_info(path) if path is not None else None
        except (OSError, StorageError):
            info = None
        return guid128(info.guid) if info is not None and info.guid else bytes(16)

    def _flag_records(
        self, log: LogTransaction, st: IndexState, state: dict[int, Flags], gone: set[int]
    ) -> None:
        kw_changes: dict[tuple[str, bool], list[int]] = {}
        for uid, (flags, kws) in sorted(state.items()):
            msg = st.messages[uid]
            old_flags, old_kws = msg.flags & SYSTEM_FLAGS, msg.keywords
            if uid in gone:
                continue
            if flags != old_flags:
                log.flag_update(uid, uid, flags & ~old_flags, old_flags & ~flags)
            for kw in kws - old_kws:
                kw_changes.setdefault((kw, True), []).append(uid)
            for kw in old_kws - kws:
                kw_changes.setdefault((kw, False), []).append(uid)
        for (name, add), uids in sorted(kw_changes.items()):
            log.keyword_update(name, add, uids)

    def _modseq_records(
        self, log: LogTransaction, st: IndexState, renumber: dict[int, int], gone: set[int]
    ) -> None:
        wanted = {uid: m for uid, m in self._min_modseq.items() if uid not in gone}
        for uid, save in self._saves.items():
            if save.min_modseq:
                wanted[uid] = max(wanted.get(uid, 0), save.min_modseq)
        entries = [
            (renumber.get(uid, uid), m)
            for uid, m in sorted(wanted.items())
            if uid in st.messages or uid in self._saves
        ]
        if self._modseq > st.modseq:
            entries.append((0, self._modseq))
        log.modseq_update(entries)

    def _place(self, plan: _Plan) -> None:
        """Put the new files in place; on failure remove those already placed."""
        done: list[Path] = []
        try:
            for temp, final in plan.placed:
                os.rename(temp, final)
                done.append(final)
            for source, final in plan.links:
                _link_or_copy(source, final, self.box.storage.hostname)
                done.append(final)
            if done:
                _fsync_dir(self.box.box_dir)
        except BaseException:
            for final in done:
                final.unlink(missing_ok=True)
            raise

    def _write_attributes(self) -> Callable[[], None] | None:
        """Apply attribute values to the dict (and move them to a new mailbox GUID);
        the undo callable, or None when nothing changed."""
        new_guid = self._guid if self._guid is not None and self._guid != self.box.guid else None
        if not self._attrs and new_guid is None:
            return None
        changes = {key: value for key, (value, _) in self._attrs.items()}
        return self.box.storage.attribute_dict.update(self.box.guid, changes, new_guid)


def _link_or_copy(source: Path, final: Path, hostname: str) -> None:
    """A moved message keeps its file: a hard link under the new name (a copy when the
    source is on another file system, e.g. the alt storage)."""
    temp = final.with_name(temp_name(hostname, time.time()))
    try:
        os.link(source, temp)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(source, temp)
    os.rename(temp, final)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
