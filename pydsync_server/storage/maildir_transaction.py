"""Writes to one maildir folder, made visible together by commit().

Bodies go to tmp/ (fsync'ed) when saved. commit() takes the uidlist lock, syncs the
folder, renames files (new mail into cur/, flag changes in place, expunged mail back
into tmp/), fsyncs each touched directory once, rewrites the attribute dict if
attributes changed, then writes dovecot-uidlist — the commit point — and the
pydsync-changes tracker. Any failure before the commit point undoes the renames and the
attribute values, so the store is left as it was (storage-formats.md §1.10, §7.7).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _native
from ..errors import MailboxNotFoundError, MailError, StorageError
from .base import NewMessage
from .maildir_attributes import AttributeDict, mailbox_values
from .maildir_files import FILE_MODE, fsync_dir, storage_error, write_all, write_synced
from .maildir_folder import (
    FolderState,
    Message,
    SyncPlan,
    TextKey,
    plan_sync,
    read_folder,
    rekeyed_after_write,
    write_keywords,
    write_uidlist,
)
from .maildir_tracker import ChangeTracker, MessageState
from .maildir_uidlist import (
    ALL_FLAGS,
    FileInfo,
    KeywordMap,
    Uidlist,
    UidlistRecord,
    build_filename,
    parse_info,
    split_name,
    usable_base,
    valid_guid_text,
)
from .recording import UID_MAX, RecordingTransaction

if TYPE_CHECKING:
    from .maildir_mailbox import MaildirMailbox

_CHUNK = 1 << 16


@dataclass
class _Save:
    message: NewMessage  # with an empty body: the bytes are in tmp_path
    tmp_path: Path
    size: int
    vsize: int


@dataclass
class _Work:
    """A message as it will be after the commit."""

    record: UidlistRecord
    subdir: str
    src: str  # where the file is now (a str: built for every message of the folder)
    info: FileInfo
    flags: int
    keywords: frozenset[str]
    guid: str
    modseq: int = 0  # the message's; this commit's when it changes the message
    raised_modseq: int = 0  # a modseq-only update (dsync keeps replicas' modseqs close)
    saved_date: int = 0
    received_date: int = 0
    final_name: str = ""  # the file name after the commit, when renamed
    shown: Message | None = None  # the folder's message it started from (its UID then)
    touched: bool = False  # flags, keywords or name change
    added: bool = False  # saved or moved here by this commit
    trash: bool = False  # expunged by this commit


@dataclass
class _Journal:
    """Renames done so far, for undo."""

    done: list[tuple[Path, Path]] = field(default_factory=list)
    dirs: set[Path] = field(default_factory=set)

    def rename(self, src: Path, dst: Path) -> None:
        if src == dst:
            return
        if dst.exists():
            raise StorageError(f"rename target exists: {dst}")
        os.rename(src, dst)
        self.done.append((src, dst))
        self.dirs.update((src.parent, dst.parent))

    def undo(self) -> None:
        for src, dst in reversed(self.done):
            try:
                os.rename(dst, src)
            except OSError:
                pass
        self.done.clear()


class MaildirTransaction(RecordingTransaction[_Save]):
    def __init__(self, box: MaildirMailbox) -> None:
        super().__init__(box.status())
        self._box = box

    def save(self, message: NewMessage) -> None:
        self._check_save(message)
        for text in (message.guid, message.pop3_uidl):
            if text and not valid_guid_text(text):
                raise StorageError(f"Not storable in dovecot-uidlist: {text!r}", MailError.PARAMS)
        tmp_path = self._box.paths.mail / "tmp" / self._box.ctx.unique_name()
        try:
            size, vsize = self._write_body(message, tmp_path)
        except OSError as exc:
            tmp_path.unlink(missing_ok=True)
            raise storage_error(exc, f"saving UID {message.uid}") from exc
        kept = replace(message, body=io.BytesIO())  # the body now lives in tmp_path
        self._saves[message.uid] = _Save(kept, tmp_path, size, vsize)

    @staticmethod
    def _write_body(message: NewMessage, tmp_path: Path) -> tuple[int, int]:
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        size = vsize = 0
        prev_cr = False
        try:
            while chunk := message.body.read(_CHUNK):
                write_all(fd, chunk)
                size += len(chunk)
                vsize += _native.vsize_part(chunk, prev_cr)  # the hot count, in C
                prev_cr = chunk.endswith(b"\r")
            os.fsync(fd)
        finally:
            os.close(fd)
        return size, vsize

    # -- finishing --

    def rollback(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_tmp_files()

    def _drop_tmp_files(self) -> None:
        for save in self._saves.values():
            save.tmp_path.unlink(missing_ok=True)

    def commit(self) -> None:
        """Apply everything; the mailbox's view changes only at its next refresh()."""
        self._close()
        if self._is_empty():
            return
        try:
            with self._box.locked():
                self._commit_locked()
        except OSError as exc:
            raise storage_error(exc, f"committing to mailbox {self._box.vname}") from exc
        finally:
            self._drop_tmp_files()  # renamed away on success

    def _commit_locked(self) -> None:
        paths = self._box.paths
        if not (paths.mail / "cur").is_dir():
            raise MailboxNotFoundError(f"Mailbox was deleted: {self._box.vname}")
        current = self._box.current_view()
        if current is not None:
            (state, plan), keys = current, self._box.view_keys()
            uid_map = self._map_new_uids(plan.uidlist.next_uid)
        else:
            keys = self._box.text_keys()  # before the read: a later write shows
            state, _ = self._box.with_pending_tracker(read_folder(paths), keys)
            uid_map = self._map_new_uids(state.uidlist.next_uid if state.uidlist else 1)
            first_free = max(uid_map.values()) + 1 if uid_map else 0
            plan = plan_sync(
                state, self._box.ctx, first_free_uid=first_free,
                modseq_floor=self._box.modseq_floor(),
            )  # fmt: skip
        uidlist, tracker = plan.uidlist, plan.tracker
        old_guid, modseq = uidlist.guid, tracker.next_modseq()
        assert old_guid is not None
        changes = self._build_work(plan.messages, state, tracker, uid_map, modseq)
        work = changes.items
        journal = _Journal()
        sidecar_tmp = paths.sidecar.with_name(paths.sidecar.name + ".tmp")
        undo_attributes: Callable[[], None] | None = None
        try:
            letters = self._assign_letters(work, state.keywords)
            if state.keywords.changed:
                write_keywords(paths, state.keywords)
            trash = self._rename_all(work, letters, journal)
            for directory in journal.dirs:
                fsync_dir(directory)
            self._finish(uidlist, tracker, changes)
            undo_attributes = self._write_attributes(old_guid, tracker, modseq)
            os.makedirs(paths.index, mode=0o700, exist_ok=True)
            write_synced(sidecar_tmp, tracker.serialize())
            uidlist, raw = write_uidlist(
                paths, state.uidlist, state.uidlist_raw, uidlist,
                {rec.uid for rec in uidlist.records},
            )  # fmt: skip
        except BaseException:
            journal.undo()
            if undo_attributes is not None:
                _quietly(undo_attributes)
            sidecar_tmp.unlink(missing_ok=True)
            raise
        os.replace(sidecar_tmp, paths.sidecar)
        fsync_dir(paths.control)
        if paths.index != paths.control:
            fsync_dir(paths.index)
        for path in trash:
            path.unlink(missing_ok=True)
        self._hand_over_view(state, uidlist, raw, tracker, changes, keys)

    def _hand_over_view(
        self, before: FolderState, uidlist: Uidlist, raw: bytes, tracker: ChangeTracker,
        changes: _Changes, keys: tuple[TextKey, ...],
    ) -> None:  # fmt: skip
        """Give the mailbox the folder as this commit left it, so that its next refresh
        need not rescan: the files read before, with this commit's renames."""
        stamp = self._box.take_stamp()  # still under the lock: our writes are in it
        files = dict(before.files)
        for item in changes.items.values():
            if item.trash or item.touched:
                files.pop(split_name(os.path.basename(item.src))[0], None)
            if item.touched and not item.trash:
                files[item.record.base] = (item.subdir, item.final_name)
        paths = self._box.paths
        attrs = before.attribute_entries
        if self.ops.attributes or self.ops.guid is not None:
            keys = self._box.text_keys()  # before the read, as ever
            attrs = AttributeDict(paths.attribute_dict, "").read() if paths.attribute_dict else {}
        else:
            keys = rekeyed_after_write(paths, keys)
        after = FolderState(uidlist, raw, before.keywords, files, tracker, attrs, before.mail_dir)
        plan = SyncPlan(
            uidlist.copy(), changes.messages_after(), tracker.copy(),
            attributes=mailbox_values(attrs, tracker.mailbox_guid),
        )  # fmt: skip
        self._box.adopt_view(stamp, plan, after, keys)

    def _map_new_uids(self, next_uid: int) -> dict[int, int]:
        """Wanted new UID -> UID obtained. A UID another writer took meanwhile (a
        delivery) moves the message to the next free one, as Dovecot's index does at
        commit; dsync then repairs the UIDs (dsync-algorithm.md §3.6.8)."""
        uid_map: dict[int, int] = {}
        for wanted in sorted([*self._saves, *self.ops.moves.values()]):
            uid_map[wanted] = next_uid = max(wanted, next_uid)
            next_uid += 1
        return uid_map

    def _build_work(
        self,
        messages: dict[int, Message],
        state: FolderState,
        tracker: ChangeTracker,
        uid_map: dict[int, int],
        modseq: int,
    ) -> _Changes:
        """The messages this transaction changes, as they will be after it; `modseq` is
        its changes'."""
        changes = _Changes(messages, tracker, self._box.paths.mail)
        work = changes.items
        for old_uid, new_uid in sorted(self.ops.moves.items()):
            if changes.get(old_uid) is not None:
                self._move(changes, old_uid, uid_map[new_uid], modseq, tracker)
        self._add_saves(work, state, modseq, uid_map)
        for op in self.ops.flag_ops:
            item = changes.get(uid_map.get(op.uid, op.uid))
            if item is None:
                continue  # expunged meanwhile: nothing to do, like Dovecot
            flags = ((item.flags | op.add) & ~op.remove) & ALL_FLAGS
            kws = (item.keywords | op.add_keywords) - op.remove_keywords
            if (flags, kws) != (item.flags, item.keywords):
                item.flags, item.keywords, item.touched = flags, kws, True
                item.modseq = max(item.modseq, modseq, op.min_modseq)
            elif op.min_modseq > item.modseq:
                # flags as they are: only the modseq rises, to the value asked for, as
                # Dovecot's mail_update_modseq (no new change, no rename)
                item.raised_modseq = max(item.raised_modseq, op.min_modseq)
        for wanted in self.ops.expunges:
            uid = uid_map.get(wanted, wanted)
            item = changes.get(uid)
            if item is not None and not item.trash:
                item.trash = True
                tracker.expunged(uid, modseq, dsync=True, guid=item.guid)
        return changes

    def _move(
        self, changes: _Changes, old_uid: int, new_uid: int, modseq: int,
        tracker: ChangeTracker,
    ) -> None:  # fmt: skip
        """A new UID needs a new base name (Dovecot would see the old base as the old
        UID); the GUID is kept in the `G` key. The old UID is expunged."""
        item = changes.items.pop(old_uid)
        changes.gone.add(old_uid)
        base = item.record.base
        extras = base[base.index(",S=") :] if ",S=" in base else f",S={os.stat(item.src).st_size}"
        ext = dict(item.record.ext)
        ext["G"] = item.guid
        item.record = UidlistRecord(new_uid, self._box.ctx.unique_name() + extras, ext)
        item.touched, item.added, item.modseq = True, True, modseq
        tracker.expunged(old_uid, modseq, dsync=True)
        changes.items[new_uid] = item

    def _add_saves(
        self, work: dict[int, _Work], state: FolderState, modseq: int, uid_map: dict[int, int]
    ) -> None:
        taken = set(state.files) | {w.record.base for w in work.values()}
        for wanted, save in sorted(self._saves.items()):
            uid = uid_map[wanted]
            msg = save.message
            ext: dict[str, str] = {}
            if usable_base(msg.guid, save.size, save.vsize) and msg.guid not in taken:
                base = msg.guid
            else:
                base = f"{save.tmp_path.name},S={save.size},W={save.vsize}"
                if msg.guid:
                    ext["G"] = msg.guid
            if msg.pop3_uidl:
                ext["P"] = msg.pop3_uidl
            if msg.pop3_order:
                ext["O"] = str(msg.pop3_order)
            taken.add(base)
            if msg.received_date:
                os.utime(save.tmp_path, (msg.received_date, msg.received_date))
            received = msg.received_date or int(os.stat(save.tmp_path).st_mtime)
            work[uid] = _Work(
                UidlistRecord(uid, base, ext), "cur", str(save.tmp_path), _NO_INFO,
                msg.flags & ALL_FLAGS, msg.keywords, msg.guid or base,
                modseq=max(modseq, msg.min_modseq),
                saved_date=msg.saved_date,
                received_date=received or 1, touched=True, added=True,
            )  # fmt: skip

    @staticmethod
    def _assign_letters(work: dict[int, _Work], keywords: KeywordMap) -> dict[int, frozenset[int]]:
        """Letters for the keywords of changed messages (names canonicalised to the
        folder's spelling); keywords beyond 26 letters stay only in the tracker."""
        letters: dict[int, frozenset[int]] = {}
        for uid, item in work.items():
            if not item.touched or item.trash:
                continue
            idxs: set[int] = set()
            names: set[str] = set()
            for kw in sorted(item.keywords):
                idx = keywords.index_or_create(kw)
                if idx is None:
                    names.add(kw)
                else:
                    idxs.add(idx)
                    names.add(keywords.name_for(idx))
            item.keywords = frozenset(names)
            letters[uid] = frozenset(idxs)
        return letters

    def _rename_all(
        self, work: dict[int, _Work], letters: dict[int, frozenset[int]], journal: _Journal
    ) -> list[Path]:
        """Put every changed file in place; expunged files go to tmp/ until committed."""
        mail = self._box.paths.mail
        trash: list[Path] = []
        for uid, item in sorted(work.items()):
            if item.trash:
                dest = mail / "tmp" / self._box.ctx.unique_name()
                journal.rename(Path(item.src), dest)
                trash.append(dest)
            elif item.touched:
                name = build_filename(item.record.base, item.flags, letters[uid], item.info)
                journal.rename(Path(item.src), mail / item.subdir / name)
                item.final_name = name
        return trash

    def _finish(self, uidlist: Uidlist, tracker: ChangeTracker, changes: _Changes) -> None:
        """The uidlist and tracker after the commit."""
        next_uid = uidlist.next_uid
        work = changes.items
        uidlist.records = changes.records_after()
        # N must never go down, even when the highest UIDs were expunged
        uidlist.hdr_next_uid = max(
            uidlist.hdr_next_uid, self.ops.uid_next,
            next_uid if uidlist.next_uid < next_uid else 0,
        )  # fmt: skip
        if uidlist.next_uid > UID_MAX:
            raise StorageError("UIDNEXT out of range", MailError.PARAMS)
        if self.ops.uid_validity:
            uidlist.uid_validity = tracker.uid_validity = self.ops.uid_validity
        if self.ops.guid is not None:
            uidlist.guid = tracker.mailbox_guid = self.ops.guid
        for uid, item in sorted(work.items()):
            if item.raised_modseq and not (item.trash or item.touched):
                tracker.raise_modseq(uid, item.raised_modseq)
            if item.trash or not item.touched:
                continue
            state = MessageState(item.flags, item.keywords, item.guid)
            if item.added:
                tracker.saved(uid, state, item.modseq, item.saved_date, item.received_date)
            else:
                tracker.set_flags(uid, item.flags, item.keywords, item.modseq, dsync=True)
        tracker.highest_modseq = max(tracker.highest_modseq, self.ops.highest_modseq)
        tracker.first_recent_uid = max(tracker.first_recent_uid, self.ops.first_recent_uid)
        tracker.finish_commit()

    def _write_attributes(
        self, old_guid: bytes, tracker: ChangeTracker, modseq: int
    ) -> Callable[[], None] | None:
        """Put this transaction's attribute values in the attribute dict (moving the
        mailbox's values along with a new GUID) and record their stamps; the undo, or
        None when the dict was not touched."""
        path = self._box.paths.attribute_dict
        moving = self.ops.guid is not None and self.ops.guid != old_guid
        if not self.ops.attributes and not (moving and path is not None and path.exists()):
            return None
        if path is None:
            raise StorageError("This storage keeps no mailbox attributes", MailError.NOTPOSSIBLE)
        values = {key: value for key, (value, _) in self.ops.attributes.items()}
        attribute_dict = AttributeDict(path, self._box.ctx.hostname)
        undo = attribute_dict.update(old_guid, values, self.ops.guid)
        for key, (value, last_change) in self.ops.attributes.items():
            tracker.set_attribute(key, value, last_change, modseq)
        return undo


class _Changes:
    """The messages a commit changes (`items`, by UID after the commit), made from the
    folder's `messages` when first asked for; the others stay as they are. `gone`:
    UIDs moved away."""

    def __init__(self, messages: dict[int, Message], tracker: ChangeTracker, mail: Path) -> None:
        self.messages = messages
        self.items: dict[int, _Work] = {}
        self.gone: set[int] = set()
        self._tracker = tracker
        self._mail = mail
        self._after: dict[int, Message] | None = None

    def get(self, uid: int) -> _Work | None:
        """The message at `uid` as this commit has it so far; None if there is none."""
        item = self.items.get(uid)
        if item is not None or uid in self.gone:
            return item
        msg = self.messages.get(uid)
        if msg is None:
            return None
        snap = self._tracker.msgs.get(uid)
        item = self.items[uid] = _Work(
            msg.record, msg.subdir, f"{self._mail}/{msg.subdir}/{msg.filename}", msg.info,
            msg.flags, msg.keywords, msg.guid,
            modseq=snap.modseq if snap is not None else 0,
            saved_date=snap.saved_date if snap is not None else 0,
            received_date=snap.received_date if snap is not None else 0,
            shown=msg,
        )  # fmt: skip
        return item

    def records_after(self) -> list[UidlistRecord]:
        """The uidlist's records after the commit: one per live message, by UID."""
        records = [msg.record for msg in self.messages_after().values()]
        records.sort(key=_uid_of)  # only new UIDs can be out of order
        return records

    def messages_after(self) -> dict[int, Message]:
        """The folder's messages as the commit left them (once its files are renamed):
        what a rescan would show, since the commit holds the lock and renamed only
        the files it changed. Kept in the folder's order, new UIDs last."""
        if self._after is not None:
            return self._after
        after = dict(self.messages)
        for uid in self.gone:
            after.pop(uid, None)
        for uid, item in self.items.items():
            if item.trash:
                after.pop(uid, None)
            elif not item.touched and item.shown is not None and item.shown.uid == uid:
                after[uid] = item.shown
            else:
                info = parse_info(split_name(item.final_name)[1])
                after[uid] = Message(
                    uid, item.record, item.subdir, item.final_name, info, info.flags,
                    item.keywords,
                )  # fmt: skip
        self._after = after
        return after


def _quietly(undo: Callable[[], None]) -> None:
    """Run an undo while another error is on its way; its own failure must not hide it."""
    try:
        undo()
    except StorageError:
        pass


_NO_INFO = FileInfo(0, frozenset(), "", "")


def _uid_of(record: UidlistRecord) -> int:
    return record.uid
