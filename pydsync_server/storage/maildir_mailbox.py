"""An opened maildir folder: a view of one sync, refreshed on demand.

Opening or refreshing runs the folder sync of maildir_folder (UIDs for new files,
tracker modseqs for other programs' changes) and keeps the resulting plan as the view;
attribute values come from the store's attribute dict as read by that sync.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from .. import _native
from ..errors import MailboxNotFoundError, StorageError
from .base import (
    Attribute,
    Mailbox,
    MailboxStatus,
    MessageChange,
    MessageInfo,
    Transaction,
    infos_above,
)
from .maildir_files import dotlock, fsync_dir, makedirs, storage_error
from .maildir_folder import (
    SUBDIRS,
    FolderPaths,
    FolderState,
    FolderView,
    Message,
    StoreContext,
    SyncPlan,
    TextKey,
    listing_matches,
    plan_sync,
    read_folder,
    reading_copy,
    rekeyed_after_write,
    same_tracker_file,
    scan_messages,
    text_keys,
    write_keywords,
    write_tracker,
    write_uidlist,
    written_state,
)
from .maildir_summary import FolderStamp, Summary
from .maildir_uidlist import size_from_base

_CHUNK = 1 << 16


def count_vsize(fh: BinaryIO) -> int:
    """Size with every bare LF counted as CRLF (the `,W=` value)."""
    vsize, prev_cr = 0, False
    while chunk := fh.read(_CHUNK):
        vsize += _native.vsize_part(chunk, prev_cr)
        prev_cr = chunk.endswith(b"\r")
    return vsize


class MaildirMailbox(Mailbox):
    def __init__(self, vname: str, paths: FolderPaths, ctx: StoreContext) -> None:
        self.vname = vname
        self.paths = paths
        self.ctx = ctx
        self._plan: SyncPlan | None = None
        self._summary: Summary | None = None  # stands in for the plan until one is needed
        self._stamp: FolderStamp | None = None  # the disk as the view shows it
        self._state: FolderState | None = None  # the folder as the plan left it, if known
        self._keys: tuple[TextKey, ...] = ()  # its text files then
        self._infos: list[MessageInfo] | None = None
        self._vsizes: dict[str, int] = {}
        self._open()

    # -- sync --

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold dovecot-uidlist.lock (storage-formats.md §1.9)."""
        if self.paths.control != self.paths.mail:
            try:
                makedirs(self.paths.control)
            except OSError as exc:
                raise storage_error(exc, f"creating {self.paths.control}") from exc
        with dotlock(self.paths.uidlist, self.ctx.hostname):
            yield

    def take_stamp(self) -> FolderStamp:
        return _take_stamp(self.paths)

    def _open(self) -> None:
        """Reuse this run's view or the stored summary while the disk is unchanged.

        Within a run an unchanged stamp is enough: a change hidden in the timestamp tick
        of our scan is one that came after it, which a later commit (reading under the
        lock) still sees. Only settled stamps are stored for later runs."""
        stamp = self.take_stamp()
        cached = self.ctx.views.get(self.paths.mail)
        if cached is not None and cached.stamp.same_disk(stamp):
            self._adopt(cached)
            return
        summary = Summary.load(self.paths.summary)
        if summary is not None and summary.stamp.vouches_for(stamp):
            self._stamp, self._summary = summary.stamp, summary
            return
        self._scan(stamp)

    def refresh(self) -> None:
        stamp = self.take_stamp()
        if self._stamp is not None and self._stamp.same_disk(stamp):
            return
        handed = self.ctx.views.get(self.paths.mail)
        if handed is not None and handed.stamp.same_disk(stamp):
            self._adopt(handed)
            return
        self._scan(stamp)

    def _adopt(self, view: FolderView) -> None:
        self.set_plan(view.plan)
        self._stamp, self._state, self._keys = view.stamp, view.state, view.keys

    def _still(self, stamp: FolderStamp) -> bool:
        """The folder is provably as it was when `stamp` was taken."""
        return stamp.settled and stamp.same_disk(self.take_stamp())

    def current_view(self) -> tuple[FolderState, SyncPlan] | None:
        """Copies of the view's state and plan, when the folder is exactly that state
        (the caller holds the lock): its text files are the very ones the view wrote or
        read, and its directories list the same files. A commit then need not re-read
        and re-plan the folder; otherwise None."""
        state, plan = self._state, self._plan
        if state is None or plan is None or text_keys(self.paths) != self._keys:
            return None
        if not listing_matches(self.paths.mail, state.files):
            return None
        return reading_copy(state), plan.copy()

    def _scan(self, stamp: FolderStamp) -> None:
        """Sync the folder (taking `stamp` first) and remember the view."""
        try:
            self._ensure_subdirs()
            keys = text_keys(self.paths)  # before the read: a later write shows
            state, inherited = self.with_pending_tracker(read_folder(self.paths), keys)
            plan = work = None
            floor = self.modseq_floor()
            if state.uidlist is not None and state.uidlist.guid is not None:
                work = reading_copy(state)
                plan = self._planned(work, floor, inherited)
            if plan is not None and plan.only_tracker:
                # the tracker's news waits for this run's commit, which rewrites it
                # anyway, or for the store's close (persist_views)
                pending = FolderView(self.paths, stamp, plan, state, keys, tracker_pending=True)
                self._remember(pending)
                return
            if plan is None or work is None or plan.needs_write:
                with self.locked():
                    if plan is None or work is None or not self._still(stamp):
                        keys = text_keys(self.paths)
                        state, inherited = self.with_pending_tracker(
                            read_folder(self.paths), keys
                        )
                        work = state
                        plan = self._planned(state, floor, inherited)
                    state = self.apply_plan(work, plan)
                    if plan.needs_write:
                        # our own writes moved the stamp; a stamp this fresh is
                        # never settled, so it serves this run only
                        stamp = self.take_stamp()
                        keys = rekeyed_after_write(self.paths, keys)
        except OSError as exc:
            raise storage_error(exc, f"syncing mailbox {self.vname}") from exc
        self._remember(FolderView(self.paths, stamp, plan, state, keys, persisted=stamp.settled))
        if stamp.settled:
            summary_of(plan, stamp).save(self.paths.summary)

    def _remember(self, view: FolderView) -> None:
        """Make `view` this mailbox's, and the run's for the folder."""
        self._adopt(view)
        self.ctx.views[self.paths.mail] = view

    def with_pending_tracker(
        self, state: FolderState, keys: tuple[TextKey, ...]
    ) -> tuple[FolderState, bool]:
        """`state` with this run's unwritten tracker of the folder, when the file on
        disk is still the one that tracker grew from: a rescan then adds to the
        changes it recorded instead of losing them (each keeps its own modseq).
        The flag says whether it was put in."""
        view = self.ctx.views.get(self.paths.mail)
        if view is None or not view.tracker_pending or not same_tracker_file(view.keys, keys):
            return state, False
        return replace(state, tracker=view.plan.tracker.copy()), True

    def _planned(self, state: FolderState, floor: int, inherited: bool) -> SyncPlan:
        """plan_sync; a tracker taken over from an unwritten view is still to write."""
        plan = plan_sync(state, self.ctx, modseq_floor=floor)
        plan.write_tracker = plan.write_tracker or inherited
        return plan

    def modseq_floor(self) -> int:
        """The highest modseq this run's views of the folder handed out: a rescan
        draws above it, though an unwritten tracker's draws are lost with it."""
        view = self.ctx.views.get(self.paths.mail)
        plans = [p for p in (self._plan, view.plan if view else None) if p is not None]
        return max((p.tracker.highest_modseq for p in plans), default=0)

    def adopt_view(
        self, stamp: FolderStamp, plan: SyncPlan, state: FolderState, keys: tuple[TextKey, ...]
    ) -> None:
        """A transaction's picture of the folder after its commit, taken at `stamp`
        (`state` with its text `keys`): the next refresh (or open) uses it instead of
        a rescan."""
        self.ctx.views[self.paths.mail] = FolderView(self.paths, stamp, plan, state, keys)

    def text_keys(self) -> tuple[TextKey, ...]:
        return text_keys(self.paths)

    def view_keys(self) -> tuple[TextKey, ...]:
        """The text keys of the state `current_view` returned."""
        return self._keys

    def _ensure_subdirs(self) -> None:
        """Missing cur/new/tmp are re-created on open, as Dovecot does."""
        if not self.paths.mail.is_dir():
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {self.vname}")
        for sub in SUBDIRS:
            path = self.paths.mail / sub
            if not path.is_dir():
                os.makedirs(path, mode=0o700, exist_ok=True)

    def apply_plan(self, state: FolderState, plan: SyncPlan) -> FolderState:
        """Write what a plan changed (caller holds the lock): the folder as it is now."""
        if plan.write_keywords:
            write_keywords(self.paths, state.keywords)
        if plan.write_uidlist:
            uidlist, raw = write_uidlist(
                self.paths, state.uidlist, state.uidlist_raw, plan.uidlist, set(plan.messages)
            )
            fsync_dir(self.paths.control)
            state = written_state(state, plan, uidlist, raw)
        if plan.write_tracker:
            makedirs(self.paths.index)
            write_tracker(self.paths, plan.tracker)
            state = replace(state, tracker=plan.tracker)
        return state

    def set_plan(self, plan: SyncPlan) -> None:
        self._plan = plan
        self._summary = None
        self._infos = None

    @property
    def plan(self) -> SyncPlan:
        if self._plan is None:
            self._scan(self.take_stamp())
        assert self._plan is not None
        return self._plan

    # -- reads --

    def status(self) -> MailboxStatus:
        if self._plan is None and self._summary is not None:
            return self._summary.status
        return status_of(self.plan)

    def messages(self, above_uid: int = 0) -> Sequence[MessageInfo]:
        if self._infos is not None:
            return [info for info in self._infos if info.uid > above_uid]
        infos = infos_above(self.plan.messages, above_uid, self.message)
        if not above_uid:
            self._infos = infos
        return list(infos)

    def message(self, uid: int) -> MessageInfo | None:
        msg = self.plan.messages.get(uid)
        return self._info(msg) if msg is not None else None

    def _info(self, msg: Message) -> MessageInfo | None:
        snap = self.plan.tracker.msgs.get(msg.uid)
        ext, base = msg.record.ext, msg.record.base
        # this runs for every message a full export lists: keys only when present
        size = (ext and _int_or_none(ext.get("S"))) or size_from_base(base, "S")
        vsize = (ext and _int_or_none(ext.get("W"))) or size_from_base(base, "W")
        received = snap.received_date if snap is not None else 0
        saved = snap.saved_date if snap is not None else 0
        # the saved date alone is not worth a stat per message: see saved_date()
        if not (received and size is not None and vsize is not None):
            path = f"{self.paths.mail}/{msg.subdir}/{msg.filename}"
            try:
                st = os.stat(path)  # the file is as the scan found it
            except FileNotFoundError:
                found = self.locate(msg)  # renamed by another program since, or gone
                if found is None:
                    return None
                path = str(found)
                st = os.stat(path)
            received, saved = received or int(st.st_mtime), saved or int(st.st_ctime)
            size = size or st.st_size
            vsize = vsize if vsize is not None else self._vsize(msg, Path(path))
        return MessageInfo(
            uid=msg.uid,
            guid=msg.guid,
            flags=msg.flags,
            keywords=msg.keywords,
            modseq=snap.modseq if snap is not None else 1,
            received_date=received,
            saved_date=saved,
            virtual_size=vsize,
            physical_size=size,
            pop3_uidl=ext.get("P", ""),
            pop3_order=_int_or_none(ext.get("O")) or 0,
        )

    def saved_date(self, uid: int) -> int:
        """The date dsync gave, else the file's ctime (as Dovecot's maildir answers)."""
        msg = self.plan.messages.get(uid)
        if msg is None:
            return 0
        snap = self.plan.tracker.msgs.get(uid)
        if snap is not None and snap.saved_date:
            return snap.saved_date
        path = self.locate(msg)
        return int(os.stat(path).st_ctime) if path is not None else 0

    def _vsize(self, msg: Message, path: Path) -> int:
        if msg.record.base not in self._vsizes:
            with open(path, "rb") as fh:
                self._vsizes[msg.record.base] = count_vsize(fh)
        return self._vsizes[msg.record.base]

    def locate(self, msg: Message) -> Path | None:
        """The message's current path; flag renames by others are followed by a rescan."""
        path = self.paths.mail / msg.subdir / msg.filename
        if path.exists():
            return path
        where = scan_messages(self.paths.mail).get(msg.record.base)
        if where is None:
            return None
        msg.subdir, msg.filename = where
        return self.paths.mail / where[0] / where[1]

    def changes_since(self, modseq: int) -> list[MessageChange] | None:
        summary = self._summary if self._plan is None else None
        if summary is not None and modseq == summary.status.highest_modseq >= summary.log_floor:
            return []
        return self.plan.tracker.changes_since(modseq)

    def history_start(self) -> int:
        if self._plan is None and self._summary is not None:
            return self._summary.log_floor
        return self.plan.tracker.log_floor

    def open_message(self, uid: int) -> BinaryIO:
        msg = self.plan.messages.get(uid)
        for _ in range(3):
            path = self.locate(msg) if msg is not None else None
            if path is None:
                break
            try:
                return open(path, "rb")
            except FileNotFoundError:
                continue  # renamed between locate and open
            except OSError as exc:
                raise storage_error(exc, f"opening {path}") from exc
        raise MailboxNotFoundError(f"Message UID={uid} is expunged in {self.vname}")

    def attributes(self) -> list[Attribute]:
        if self._plan is None and self._summary is not None and not self._summary.has_attributes:
            return []
        plan = self.plan
        found = []
        for (type_, key), meta in sorted(plan.tracker.attrs.items()):
            value = plan.attributes.get((type_, key)) if meta.digest else None
            found.append(Attribute(type_, key, value, meta.last_change, meta.modseq, meta.dsync))
        return found

    def transaction(self) -> Transaction:
        from .maildir_transaction import MaildirTransaction

        return MaildirTransaction(self)


def _int_or_none(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None
    return int(text)


def status_of(plan: SyncPlan) -> MailboxStatus:
    assert plan.uidlist.guid is not None
    return MailboxStatus(
        guid=plan.uidlist.guid,
        uid_validity=plan.uidlist.uid_validity,
        uid_next=plan.uidlist.next_uid,
        messages=len(plan.messages),
        first_recent_uid=plan.tracker.first_recent_uid,
        highest_modseq=plan.tracker.highest_modseq,
    )


def summary_of(plan: SyncPlan, stamp: FolderStamp) -> Summary:
    return Summary(stamp, status_of(plan), plan.tracker.log_floor, bool(plan.tracker.attrs))


def persist_views(ctx: StoreContext) -> None:
    """At the end of a run, store a summary of each folder this run wrote to or saw
    unsettled, so the next run needs no rescan either (Dovecot's index is current
    after its own writes). A summary needs a settled stamp, so this waits out one
    timestamp tick first, then proves under the uidlist lock that the folder is what
    the view says: its text files unchanged since the view, its message files exactly
    the view's. Anything else leaves the folder to a rescan next time."""
    pending = [view for view in ctx.views.values() if not view.persisted]
    if not pending:
        return
    for view in pending:
        if view.tracker_pending:
            _write_pending_tracker(view, ctx.hostname)
    FolderStamp.wait_to_settle([_take_stamp(view.paths) for view in pending])
    for view in pending:
        if view.tracker_pending:
            continue  # its tracker could not be written: no summary may stand for it
        try:
            with dotlock(view.paths.uidlist, ctx.hostname, timeout=1.0):
                stamp = _take_stamp(view.paths)
                if _unchanged_since(view, stamp):
                    summary_of(view.plan, stamp).save(view.paths.summary)
                    view.persisted = True
        except (StorageError, OSError):
            continue  # busy or gone: the next run rescans


def _write_pending_tracker(view: FolderView, hostname: str) -> None:
    """Write a view's tracker when the folder is still exactly the state it was
    planned from; otherwise the next run's scan records the changes again."""
    paths, state = view.paths, view.state
    assert state is not None
    try:
        with dotlock(paths.uidlist, hostname, timeout=1.0):
            if text_keys(paths) != view.keys or not listing_matches(paths.mail, state.files):
                return
            makedirs(paths.index)
            write_tracker(paths, view.plan.tracker)
            view.keys = rekeyed_after_write(paths, view.keys)
            view.stamp = _take_stamp(paths)  # persist_views re-checks the listing
            view.state = replace(state, tracker=view.plan.tracker)
            view.tracker_pending = False
    except (StorageError, OSError):
        return  # busy or gone: the next run rescans


def _unchanged_since(view: FolderView, stamp: FolderStamp) -> bool:
    if not stamp.settled or stamp.files != view.stamp.files:
        return False
    listed = {m.record.base: (m.subdir, m.filename) for m in view.plan.messages.values()}
    return listing_matches(view.paths.mail, listed)


def _take_stamp(p: FolderPaths) -> FolderStamp:
    files: tuple[Path, ...] = (p.uidlist, p.keywords, p.sidecar)
    if p.attribute_dict is not None:
        files += (p.attribute_dict,)
    return FolderStamp.take((p.mail / "cur", p.mail / "new"), files)
