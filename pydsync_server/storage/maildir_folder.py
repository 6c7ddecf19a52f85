"""One maildir folder on disk: read it consistently, and sync uidlist + tracker to it.

`read_folder` takes a snapshot of the text files and directories; `plan_sync` works out
what Dovecot's own maildir sync would do (new files get UIDs in §1.4 order, lines of
vanished files are dropped) and what the change tracker must record, attribute values
included; `write_sync` writes that under the uidlist lock (storage-formats.md §1.4,
§1.7, §1.9, §7.7).
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .base import value_record
from .maildir_attributes import AttributeDict, AttrKey, mailbox_values
from .maildir_files import FILE_MODE, replace_file, write_all, write_synced
from .maildir_summary import SUMMARY_NAME, FolderStamp
from .maildir_tracker import SIDECAR_NAME, ChangeTracker, MessageState
from .maildir_uidlist import (
    MAILDIR_INFO_SEP,
    FileInfo,
    KeywordMap,
    Uidlist,
    UidlistRecord,
    parse_info,
    parse_keywords,
    parse_uidlist,
    serialize_keywords,
    sort_cmp,
    split_name,
)

UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"
SUBDIRS = ("cur", "new", "tmp")


@dataclass
class StoreContext:
    """What every folder of one store shares: identity of this writer, clock, allocators."""

    hostname: str
    clock: Callable[[], float]
    allocate_uid_validity: Callable[[], int]
    _last_name: tuple[int, int] = (0, 0)
    _last_guid: tuple[int, int] = (0, 0)
    # this run's folder views by mail dir, with the stamp taken before their scan
    views: dict[Path, FolderView] = field(default_factory=dict)

    def unique_name(self) -> str:
        """`<secs>.M<usecs>P<pid>.<host>`, unique within this store object
        (maildir_filename_generate)."""
        now = self.clock()
        cur = (int(now), int(now * 1_000_000) % 1_000_000)
        if cur <= self._last_name:
            secs, usecs = self._last_name
            cur = (secs + 1, 0) if usecs + 1 == 1_000_000 else (secs, usecs + 1)
        self._last_name = cur
        host = self.hostname
        for ch, esc in (("/", "\\057"), (":", "\\072"), (",", "\\054")):
            host = host.replace(ch, esc)
        host = "".join(c for c in host if not c.isspace()) or "localhost"
        return f"{cur[0]}.M{cur[1]}P{os.getpid()}.{host}"

    def new_guid(self) -> bytes:
        """A 128-bit GUID laid out like guid_128_generate (storage-formats.md §7.2)."""
        now = self.clock()
        cur = (int(now) & 0xFFFFFFFF, int(now * 1e9) % 1_000_000_000)
        if cur <= self._last_guid:
            cur = (self._last_guid[0], self._last_guid[1] + 1)
        self._last_guid = cur
        host_hash = hashlib.sha1(self.hostname.encode("utf-8", "replace")).digest()[-4:]
        nsec = cur[1] & 0xFFFFFFFF
        return struct.pack("<III", nsec, cur[0], os.getpid() & 0xFFFFFFFF) + host_hash


@value_record
class FolderPaths:
    mail: Path  # holds cur/ new/ tmp/
    control: Path  # dovecot-uidlist, dovecot-keywords
    index: Path  # pydsync-changes
    attribute_dict: Path | None = None  # the store's dovecot-attributes

    @property
    def uidlist(self) -> Path:
        return self.control / UIDLIST

    @property
    def keywords(self) -> Path:
        return self.control / KEYWORDS

    @property
    def sidecar(self) -> Path:
        return self.index / SIDECAR_NAME

    @property
    def summary(self) -> Path:
        return self.index / SUMMARY_NAME


@dataclass
class FolderState:
    """One read of a folder. `files`: base -> (subdir, file name)."""

    uidlist: Uidlist | None
    uidlist_raw: bytes | None
    keywords: KeywordMap
    files: dict[str, tuple[str, str]]
    tracker: ChangeTracker | None
    attribute_entries: dict[str, str] = field(default_factory=dict)  # the whole dict
    mail_dir: Path | None = None  # where `files` are


def scan_messages(mail_dir: Path) -> dict[str, tuple[str, str]]:
    """Message files of new/ and cur/ by base name; like Dovecot, names starting with
    '.' or ':' and names with CR/LF are not messages, and the first copy of a base wins."""
    files: dict[str, tuple[str, str]] = {}
    for sub in ("cur", "new"):
        try:
            names = os.listdir(mail_dir / sub)
        except FileNotFoundError:
            continue
        # one comprehension per directory: this runs for every file of the folder;
        # reversed, so that in the dict the first copy of a base wins
        found = {
            name.partition(MAILDIR_INFO_SEP)[0]: (sub, name)
            for name in reversed(names)
            if name[:1] not in (".", ":") and "\n" not in name and "\r" not in name
        }
        for base, where in found.items():
            files.setdefault(base, where)
    return files


def listing_matches(mail_dir: Path, files: dict[str, tuple[str, str]]) -> bool:
    """new/ and cur/ hold exactly `files` (as scan_messages found them), apart from
    names that are not messages. Set operations on the raw names: a check of every
    file's name costs a listing, not a parse of each name."""
    where = files.values()
    wanted = {
        "cur": {name for sub, name in where if sub == "cur"},
        "new": {name for sub, name in where if sub == "new"},
    }
    for sub, names in wanted.items():
        try:
            listed = set(os.listdir(mail_dir / sub))
        except FileNotFoundError:
            listed = set()
        if not names <= listed:
            return False
        if any(not _ignored_name(name) for name in listed - names):
            return False
    return True


def _ignored_name(name: str) -> bool:
    return name.startswith((".", ":")) or "\n" in name or "\r" in name


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_folder(paths: FolderPaths) -> FolderState:
    raw = _read_bytes(paths.uidlist)
    uidlist = parse_uidlist(raw) if raw is not None else None
    keywords = KeywordMap(parse_keywords(_read_bytes(paths.keywords)))
    files = scan_messages(paths.mail)
    if uidlist is not None and any(rec.base not in files for rec in uidlist.records):
        # a concurrent flag rename can hide a file from one readdir pass
        for base, where in scan_messages(paths.mail).items():
            files.setdefault(base, where)
    attrs = AttributeDict(paths.attribute_dict, "").read() if paths.attribute_dict else {}
    tracker = ChangeTracker.load(paths.sidecar)
    return FolderState(uidlist, raw, keywords, files, tracker, attrs, paths.mail)


def reading_copy(state: FolderState) -> FolderState:
    """A copy that planning and committing may change (they allocate keyword letters)."""
    return replace(state, keywords=state.keywords.copy())


def written_state(state: FolderState, plan: SyncPlan, uidlist: Uidlist, raw: bytes) -> FolderState:
    """`state` after `plan` was written: `uidlist` (whose file now holds `raw`) and
    the plan's tracker; the message files are as they were."""
    return replace(state, uidlist=uidlist, uidlist_raw=raw, tracker=plan.tracker)


# (inode, size, mtime ns) of a text file; zeros = missing. Every writer of these files
# either appends (a new size) or replaces the file by a rename (a new inode).
TextKey = tuple[int, int, int]


def text_keys(paths: FolderPaths) -> tuple[TextKey, ...]:
    files = [paths.uidlist, paths.keywords, paths.sidecar]
    if paths.attribute_dict is not None:
        files.append(paths.attribute_dict)
    keys = []
    for path in files:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            keys.append((0, 0, 0))
            continue
        keys.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(keys)


def rekeyed_after_write(paths: FolderPaths, before: tuple[TextKey, ...]) -> tuple[TextKey, ...]:
    """The keys after our own writes under the uidlist lock: the files only writers
    holding that lock touch read anew, the attribute dict (written under its own lock)
    kept as it was when its values were read."""
    return text_keys(paths)[:_OWN_FILES] + before[_OWN_FILES:]


_OWN_FILES = 3
_SIDECAR_KEY = 2  # text_keys' entry for the tracker file


def same_tracker_file(keys: tuple[TextKey, ...], other: tuple[TextKey, ...]) -> bool:
    return keys[_SIDECAR_KEY] == other[_SIDECAR_KEY]


@dataclass
class FolderView:
    """A folder as one scan saw it: the stamp taken before, and the plan. `state` is
    the folder as the plan leaves it on disk, valid while its text files show `keys`
    and its directories list `state.files` (None: not known). `persisted`: a summary
    of it is on disk."""

    paths: FolderPaths
    stamp: FolderStamp
    plan: SyncPlan
    state: FolderState | None = None
    keys: tuple[TextKey, ...] = ()
    persisted: bool = False
    # the plan's tracker is not on disk yet (the file there is older): written by the
    # run's next commit of the folder, or when the store closes
    tracker_pending: bool = False


# -- planning ------------------------------------------------------------------------


@dataclass
class Message:
    """One live message as the folder shows it."""

    uid: int
    record: UidlistRecord
    subdir: str
    filename: str
    info: FileInfo
    flags: int
    keywords: frozenset[str]

    @property
    def guid(self) -> str:
        return self.record.ext.get("G") or self.record.base


@dataclass
class SyncPlan:
    uidlist: Uidlist
    messages: dict[int, Message]
    tracker: ChangeTracker
    write_uidlist: bool = False
    write_keywords: bool = False
    write_tracker: bool = False
    new_uids: list[int] = field(default_factory=list)
    attributes: dict[AttrKey, str] = field(default_factory=dict)  # this mailbox's values

    @property
    def needs_write(self) -> bool:
        return self.write_uidlist or self.write_keywords or self.write_tracker

    @property
    def only_tracker(self) -> bool:
        """Only other programs' changes to record: nothing Dovecot reads changes."""
        return self.write_tracker and not (self.write_uidlist or self.write_keywords)

    def copy(self) -> SyncPlan:
        """A copy a commit may change (it edits the uidlist and the tracker in place)."""
        return replace(
            self, uidlist=self.uidlist.copy(), messages=dict(self.messages),
            tracker=self.tracker.copy(), new_uids=list(self.new_uids),
            attributes=dict(self.attributes),
        )  # fmt: skip


def message_keywords(info: FileInfo, keywords: KeywordMap) -> frozenset[str]:
    if not info.keyword_idx:
        return _NO_KEYWORDS
    return frozenset(keywords.name_for(idx) for idx in info.keyword_idx)


_NO_KEYWORDS: frozenset[str] = frozenset()


def plan_sync(
    state: FolderState, ctx: StoreContext, *, first_free_uid: int = 0, modseq_floor: int = 0
) -> SyncPlan:
    """What a sync of `state` changes. New files get UIDs from max(next_uid,
    first_free_uid) in Dovecot's order; a missing/corrupt uidlist is recreated.
    Modseqs drawn for other programs' changes lie above `modseq_floor` (what this
    run already handed out from a view whose tracker was not written)."""
    uidlist = state.uidlist.copy() if state.uidlist is not None else None
    write_uidlist = False
    if uidlist is None or uidlist.version != 3 or uidlist.guid is None:
        write_uidlist = True
        if uidlist is None:
            uidlist = Uidlist(ctx.allocate_uid_validity(), 1, None)
        uidlist.version = 3
        if uidlist.guid is None:
            uidlist.guid = ctx.new_guid()
    known = {rec.base for rec in uidlist.records}
    unknown = sorted(
        (state.files[b][1] for b in state.files if b not in known),
        key=functools.cmp_to_key(sort_cmp),
    )
    uid = max(uidlist.next_uid, first_free_uid)
    new_uids: list[int] = []
    for name in unknown:
        uidlist.records.append(UidlistRecord(uid, split_name(name)[0]))
        new_uids.append(uid)
        uid += 1
    write_uidlist = write_uidlist or bool(new_uids)
    messages = _live_messages(uidlist, state)
    tracker = _plan_tracker(state, uidlist, messages, modseq_floor)
    attributes = mailbox_values(state.attribute_entries, uidlist.guid)
    tracker.reconcile_attributes(attributes, int(ctx.clock()))
    write_tracker = state.tracker is None or tracker != state.tracker
    return SyncPlan(
        uidlist, messages, tracker, write_uidlist, state.keywords.changed, write_tracker,
        new_uids, attributes,
    )  # fmt: skip


def _live_messages(uidlist: Uidlist, state: FolderState) -> dict[int, Message]:
    messages: dict[int, Message] = {}
    files, keywords = state.files, state.keywords
    for rec in uidlist.records:
        where = files.get(rec.base)
        if where is None:
            continue
        _, sep, tail = where[1].rpartition(MAILDIR_INFO_SEP)  # split_name's info part
        info = parse_info(tail if sep else None)
        kws = message_keywords(info, keywords) if info.keyword_idx else _NO_KEYWORDS
        messages[rec.uid] = Message(rec.uid, rec, where[0], where[1], info, info.flags, kws)
    return messages


def _plan_tracker(
    state: FolderState, uidlist: Uidlist, messages: dict[int, Message], modseq_floor: int
) -> ChangeTracker:
    assert uidlist.guid is not None
    old = state.tracker
    same_folder = old is not None and (old.uid_validity, old.mailbox_guid) == (
        uidlist.uid_validity, uidlist.guid,
    )  # fmt: skip
    lettered = {n.casefold() for n in state.keywords.names if n is not None}
    snaps = old.msgs if old is not None else {}
    # only messages that differ from the snapshot (all when it can't be used)
    current: dict[int, MessageState] = {}
    for uid, msg in messages.items():
        kws = msg.keywords
        snap = snaps.get(uid)
        guid = msg.record.ext.get("G") or msg.record.base  # Message.guid, inline: hot
        if snap is not None:
            if snap.keywords and not snap.keywords <= kws:
                # keywords beyond the 26 letters live only in the tracker (as Dovecot's
                # index keeps them)
                kws = kws | {k for k in snap.keywords if k.casefold() not in lettered}
                msg.keywords = kws
            if same_folder and (snap.flags, snap.keywords, snap.guid) == (msg.flags, kws, guid):
                continue
        current[uid] = MessageState(msg.flags, kws, guid)
    if old is None:
        in_new = [uid for uid, m in messages.items() if m.subdir == "new"]
        first_recent = min(in_new) if in_new else uidlist.next_uid
        tracker = ChangeTracker.fresh(uidlist.uid_validity, uidlist.guid, current, first_recent)
    else:
        tracker = old.copy()
        tracker.highest_modseq = max(tracker.highest_modseq, modseq_floor)
        if same_folder:
            tracker.record_foreign(messages.keys(), current)
        else:
            tracker.reconcile(uidlist.uid_validity, uidlist.guid, current)
    if state.mail_dir is not None:
        _note_dates(tracker, messages, state.mail_dir)
    return tracker


def _note_dates(tracker: ChangeTracker, messages: dict[int, Message], mail_dir: Path) -> None:
    """Remember each new message's received date (its file's mtime), as Dovecot caches
    it in its index: later reads need no stat for it. The saved date is kept only when
    dsync gave one: otherwise it is the file's ctime at the time of asking, which a
    chown moves, and Dovecot reports it so (storage-formats.md §1.6)."""
    for uid in [uid for uid, snap in tracker.msgs.items() if not snap.received_date]:
        snap = tracker.msgs[uid]
        msg = messages[uid]
        try:
            st = os.stat(os.path.join(mail_dir, msg.subdir, msg.filename))
        except OSError:
            continue  # renamed meanwhile: looked up on the next scan
        tracker.msgs[uid] = snap._replace(received_date=int(st.st_mtime) or 1)


# -- writing -------------------------------------------------------------------------


def write_keywords(paths: FolderPaths, keywords: KeywordMap) -> None:
    """Replace dovecot-keywords through `dovecot-keywords.lock`, as Dovecot does while
    holding the uidlist lock (maildir-keywords.c)."""
    lock = paths.keywords.with_name(KEYWORDS + ".lock")
    lock.unlink(missing_ok=True)
    write_synced(lock, serialize_keywords(keywords.names), exclusive=True)
    os.replace(lock, paths.keywords)
    keywords.changed = False


def uidlist_for_rewrite(uidlist: Uidlist, live_uids: set[int]) -> Uidlist:
    """The uidlist without lines of vanished files, N kept at the true next UID."""
    return Uidlist(
        uidlist.uid_validity,
        uidlist.next_uid,
        uidlist.guid,
        [rec for rec in uidlist.records if rec.uid in live_uids],
        list(uidlist.hdr_extra),
    )


def write_uidlist(
    paths: FolderPaths, old: Uidlist | None, old_raw: bytes | None, new: Uidlist, live: set[int]
) -> tuple[Uidlist, bytes]:
    """Append the new records when the file can stay (see _records_to_append), else
    rewrite it without the lines of vanished files (dovecot-uidlist.tmp + fsync +
    rename). A failed append is truncated away. Returns the uidlist now on disk, and
    its bytes."""
    tail = _records_to_append(old, old_raw, new, live)
    if tail is None:
        tmp = paths.uidlist.with_name(UIDLIST + ".tmp")
        written = uidlist_for_rewrite(new, live)
        raw = written.serialize()
        write_synced(tmp, raw)
        try:
            os.replace(tmp, paths.uidlist)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written, raw
    assert old is not None and old_raw is not None
    on_disk = replace(old, records=old.records + tail, hdr_extra=list(old.hdr_extra))
    data = "".join(rec.line() for rec in tail).encode("utf-8", "surrogateescape")
    if not data:
        return on_disk, old_raw
    fd = os.open(paths.uidlist, os.O_WRONLY | os.O_APPEND, FILE_MODE)
    try:
        size = os.fstat(fd).st_size
        try:
            write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    return on_disk, old_raw + data


def _records_to_append(
    old: Uidlist | None, old_raw: bytes | None, new: Uidlist, live: set[int]
) -> list[UidlistRecord] | None:
    """The live records of `new` above the file's last UID, when appending them leaves
    a correct file: the same header, every live line of the file unchanged, and at most
    a quarter of its lines stale (expunged). Like Dovecot, which leaves the lines of
    expunged mail until then (maildir_uidlist_want_compress). None: rewrite."""
    if old is None or old_raw is None or old.version != 3 or not old_raw.endswith(b"\n"):
        return None
    if (old.uid_validity, old.hdr_next_uid, old.guid, old.hdr_extra) != (
        new.uid_validity, new.hdr_next_uid, new.guid, new.hdr_extra,
    ):  # fmt: skip
        return None
    last = old.records[-1].uid if old.records else 0
    kept = [rec for rec in new.records if rec.uid <= last and rec.uid in live]
    if kept != [rec for rec in old.records if rec.uid in live]:
        return None
    tail = [rec for rec in new.records if rec.uid > last and rec.uid in live]
    lines = len(old.records) + len(tail)
    if (lines - len(kept) - len(tail)) * 4 > lines:
        return None
    return tail


def write_tracker(paths: FolderPaths, tracker: ChangeTracker) -> None:
    replace_file(paths.sidecar, tracker.serialize())
