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

from ..errors import MailboxNotFoundError, StorageError
from .base import NewMessage, guid128
from .dbox_file import Metadata, encode_file, temp_name, virtual_size
from .dovecot_index import DBOX_HDR, AttributeChange, IndexState, locked_log, read_index
from .dovecot_index import Transaction as LogTransaction
from .maildir_files import fsync_dir, write_synced
from .recording import RecordingTransaction
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


class SdboxTransaction(RecordingTransaction[_Save]):
    def __init__(self, box: SdboxMailbox) -> None:
        super().__init__(box.status())
        self.box = box

    # -- buffered writes --

    def save(self, message: NewMessage) -> None:
        self._check_save(message)
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
            write_synced(temp, data, exclusive=True)  # removes what it wrote if it fails
        except OSError as exc:
            raise StorageError(f"writing {temp} failed: {exc.strerror}") from exc
        flags = message.flags & SYSTEM_FLAGS
        self._saves[message.uid] = _Save(temp, flags, message.keywords, message.min_modseq)

    # -- commit --

    def rollback(self) -> None:
        self._closed = True
        for save in self._saves.values():
            save.temp.unlink(missing_ok=True)

    def commit(self) -> None:
        self._close()
        if self._is_empty():
            return
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
        plan, ops = _Plan(LogTransaction(sync=True)), self.ops
        state = {uid: (m.flags & SYSTEM_FLAGS, m.keywords) for uid, m in st.messages.items()}
        new: dict[int, Flags] = {uid: (s.flags, s.keywords) for uid, s in self._saves.items()}
        for op in ops.flag_ops:
            add, remove = op.add & SYSTEM_FLAGS, op.remove & SYSTEM_FLAGS
            for table in (state, new):
                if op.uid in table:
                    flags, kws = table[op.uid]
                    kws = (kws - op.remove_keywords) | op.add_keywords
                    table[op.uid] = ((flags & ~remove) | add, kws)
        gone = [uid for uid in dict.fromkeys(ops.expunges) if uid in st.messages]
        moved = {o: d for o, d in ops.moves.items() if o in st.messages and o not in gone}
        for old, dst in moved.items():
            new[dst] = state[old]
        renumber = self._renumber(st, sorted(new))
        log = plan.log
        changes = ops.flag_ops or ops.attributes or ops.highest_modseq > st.modseq
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
        if ops.uid_next > max(st.next_uid, top + 1):
            log.set_next_uid(ops.uid_next)
        if ops.first_recent_uid > st.first_recent_uid:
            log.set_first_recent_uid(ops.first_recent_uid)
        log.attribute_update(
            AttributeChange(value is not None, type_, key, stamp, len((value or "").encode()))
            for (type_, key), (value, stamp) in ops.attributes.items()
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
        guid, uid_validity = self.ops.guid, self.ops.uid_validity
        if guid is not None and guid != self.box.guid:
            log.ext_intro(DBOX_HDR, st)
            log.ext_hdr_update(4, guid)
        if uid_validity and uid_validity != st.uid_validity:
            log.set_uid_validity(uid_validity)

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
        wanted: dict[int, int] = {}
        for op in self.ops.flag_ops:
            if op.min_modseq and op.uid not in gone:
                wanted[op.uid] = max(wanted.get(op.uid, 0), op.min_modseq)
        for uid, save in self._saves.items():
            if save.min_modseq:
                wanted[uid] = max(wanted.get(uid, 0), save.min_modseq)
        entries = [
            (renumber.get(uid, uid), m)
            for uid, m in sorted(wanted.items())
            if uid in st.messages or uid in self._saves
        ]
        if self.ops.highest_modseq > st.modseq:
            entries.append((0, self.ops.highest_modseq))
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
                fsync_dir(self.box.box_dir)
        except BaseException:
            for final in done:
                final.unlink(missing_ok=True)
            raise

    def _write_attributes(self) -> Callable[[], None] | None:
        """Apply attribute values to the dict (and move them to a new mailbox GUID);
        the undo callable, or None when nothing changed."""
        guid, attributes = self.ops.guid, self.ops.attributes
        new_guid = guid if guid is not None and guid != self.box.guid else None
        if not attributes and new_guid is None:
            return None
        changes = {key: value for key, (value, _) in attributes.items()}
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
