"""Maildir storage that Dovecot 2.3.19 opens as its own (storage-formats.md §1, §7, §8).

The store keeps Dovecot's text files exact (dovecot-uidlist v3, dovecot-keywords,
flags in file names, dovecot-uidvalidity, subscriptions, dovecot.mailbox.log) and never
writes Dovecot's binary index; modseqs live in a pydsync-private sidecar per folder
(maildir_tracker). Layouts: Maildir++ (`.Work.Sub`) and LAYOUT=fs (`Work/Sub`). Mailbox
attributes are kept in Dovecot's file dict `<root>/dovecot-attributes` (maildir_attributes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import MailboxExistsError, MailboxNotFoundError, MailError, StorageError
from .base import (
    LogType,
    MailboxEntry,
    MailboxLogRecord,
    Storage,
    name_hash,
)
from .maildir_attributes import ATTRIBUTE_DICT, AttributeDict
from .maildir_files import (
    DIR_MODE,
    allocate_uid_validity,
    append_mailbox_log,
    fsync_dir_quiet,
    makedirs,
    read_mailbox_log,
    read_subscriptions,
    rmdir_if_empty,
    storage_error,
    tab_escape,
    write_subscriptions,
    write_synced,
)
from .maildir_folder import SUBDIRS, UIDLIST, FolderPaths, StoreContext
from .maildir_mailbox import MaildirMailbox, persist_views
from .maildir_names import LAYOUT_FS, MAILDIRPLUSPLUS, SEP, TRASH_DIR_NAME, MaildirLayout
from .maildir_uidlist import Uidlist, parse_uidlist


class MaildirStorage(Storage):
    separator = SEP
    have_save_guids = True
    have_only_guid128 = False

    def __init__(
        self,
        root: str | Path,
        *,
        layout: str = MAILDIRPLUSPLUS,
        utf8_names: bool = False,
        control_dir: str | Path | None = None,
        index_dir: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        hostname: str = os.uname().nodename,  # gethostname(2), without importing socket
        attribute_dict: str | Path | None = None,
    ) -> None:
        """`attribute_dict`: where Dovecot's `mail_attribute_dict = file:<path>` points;
        default `<root>/dovecot-attributes`."""
        if layout.lower() not in (MAILDIRPLUSPLUS, LAYOUT_FS):
            raise StorageError(f"Unsupported maildir LAYOUT={layout}", MailError.PARAMS)
        self.root = Path(root)
        self.control_root = Path(control_dir) if control_dir is not None else self.root
        self.index_root = Path(index_dir) if index_dir is not None else self.root
        self.attribute_dict = AttributeDict(
            Path(attribute_dict) if attribute_dict is not None else self.root / ATTRIBUTE_DICT,
            hostname,
        )
        self.names = MaildirLayout(layout.lower(), utf8_names)
        self._control_is_root = _same_dir(self.control_root, self.root)
        self._index_is_root = _same_dir(self.index_root, self.root)
        self._clock = clock
        self.ctx = StoreContext(hostname, clock, self._allocate_uid_validity)
        try:
            makedirs(self.root)
        except OSError as exc:
            raise storage_error(exc, f"creating {self.root}") from exc

    # -- helpers --

    def _now(self) -> int:
        return int(self._clock())

    def _allocate_uid_validity(self) -> int:
        return allocate_uid_validity(self.control_root, self._now())

    def paths(self, vname: str) -> FolderPaths:
        """Where a folder's mail, control files (uidlist, keywords) and sidecar live."""
        return FolderPaths(
            self.names.path(self.root, vname),
            self.names.path(self.control_root, vname, inbox_is_root=self._control_is_root),
            self.names.path(self.index_root, vname, inbox_is_root=self._index_is_root),
            self.attribute_dict.path,
        )

    def _is_mailbox(self, vname: str) -> bool:
        if vname == "INBOX":
            return (self.paths(vname).uidlist).exists() or (self.root / "cur").is_dir()
        mail = self.paths(vname).mail
        if self.names.layout == LAYOUT_FS:
            return (mail / "cur").is_dir()
        return mail.is_dir()

    def _log(self, rtype: LogType, key: bytes) -> None:
        append_mailbox_log(self.index_root, MailboxLogRecord(rtype, key, self._now()))

    # -- listing --

    @property
    def list_separator(self) -> str:  # type: ignore[override]
        return self.names.list_sep

    def check_name(self, vname: str) -> None:
        self.names.normalize(vname)

    def list_mailboxes(self) -> list[MailboxEntry]:
        # Implicit parents (Maildir++ `.a.b` without `.a`) are not listed: Dovecot
        # reports them as nonexistent and sends them as `N<name>\tn` (vector e3).
        # INBOX only once it exists: Dovecot's fresh store lists nothing (vector a), and an
        # INBOX invented here would meet the peer's INBOX as a GUID conflict.
        found = {
            **({"INBOX": True} if self._is_mailbox("INBOX") else {}),
            **self.names.scan(self.root),
        }
        entries: list[MailboxEntry] = []
        for vname in sorted(found, key=lambda v: (v != "INBOX", v.split(SEP))):
            if not found[vname]:
                entries.append(MailboxEntry(vname, None))
                continue
            try:
                status = self.open_mailbox(vname).status()
            except MailboxNotFoundError:
                continue  # deleted while listing
            entries.append(MailboxEntry(vname, status.guid, status.uid_validity, status.uid_next))
        return entries

    def close(self) -> None:
        persist_views(self.ctx)

    def open_mailbox(self, vname: str) -> MaildirMailbox:
        vname = _normalize(self.names, vname)
        if vname == "INBOX":
            self._autocreate_inbox()
        elif not self._is_mailbox(vname):
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {vname}")
        return MaildirMailbox(vname, self.paths(vname), self.ctx)

    def _autocreate_inbox(self) -> None:
        try:
            for sub in SUBDIRS:
                makedirs(self.root / sub)
        except OSError as exc:
            raise storage_error(exc, "creating INBOX") from exc

    # -- creating --

    def create_mailbox(self, vname: str, guid: bytes | None = None, uid_validity: int = 0) -> None:
        self.ctx.views.clear()  # a tree change may reuse a path, even inodes
        vname = _normalize(self.names, vname)
        if self._is_mailbox(vname):
            raise MailboxExistsError(f"Mailbox already exists: {vname}")
        if guid is not None and (len(guid) != 16 or guid == bytes(16)):
            raise StorageError("Invalid mailbox GUID", MailError.PARAMS)
        paths = self.paths(vname)
        try:
            header = Uidlist(
                uid_validity or self._allocate_uid_validity(), 1, guid or self.ctx.new_guid()
            ).serialize()
            if vname != "INBOX" and self.names.layout == MAILDIRPLUSPLUS:
                self._create_plusplus(vname, paths, header)
            else:
                self._create_in_place(paths, header)
        except FileExistsError:
            raise MailboxExistsError(f"Mailbox already exists: {vname}") from None
        except OSError as exc:
            raise storage_error(exc, f"creating mailbox {vname}") from exc

    def _create_plusplus(self, vname: str, paths: FolderPaths, uidlist: bytes) -> None:
        """Build `.Name` under INBOX's tmp/ and rename it into place in one step."""
        staging = self._staging_dir("create")
        os.mkdir(staging, DIR_MODE)
        try:
            for sub in SUBDIRS:
                os.mkdir(staging / sub, DIR_MODE)
            write_synced(staging / "maildirfolder", b"")
            if paths.control == paths.mail:
                write_synced(staging / UIDLIST, uidlist)
            else:
                makedirs(paths.control)
                write_synced(paths.control / UIDLIST, uidlist)
            if paths.mail.exists():
                raise FileExistsError(str(paths.mail))
            os.rename(staging, paths.mail)
        except BaseException:
            _rmtree(staging, ignore_errors=True)
            raise
        fsync_dir_quiet(self.root)

    def _staging_dir(self, purpose: str) -> Path:
        """A fresh name in INBOX's tmp/ (never a mailbox in either layout); leftovers of
        a crash older than an hour are removed first, since Dovecot's tmp/ cleaner only
        unlinks files."""
        tmp = self.root / "tmp"
        makedirs(tmp)
        cutoff = time.time() - 3600
        for entry in os.scandir(tmp):
            if entry.name.startswith("pydsync-") and entry.is_dir(follow_symlinks=False):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    _rmtree(entry.path, ignore_errors=True)
        return tmp / f"pydsync-{purpose}.{self.ctx.unique_name()}"

    def _create_in_place(self, paths: FolderPaths, uidlist: bytes) -> None:
        """fs layout (and INBOX): a directory is a mailbox once it has cur/, so cur/
        comes last, after the uidlist that names its GUID."""
        makedirs(paths.mail)
        makedirs(paths.control)
        write_synced(paths.control / (UIDLIST + ".tmp"), uidlist)
        os.replace(paths.control / (UIDLIST + ".tmp"), paths.control / UIDLIST)
        for sub in ("tmp", "new", "cur"):
            makedirs(paths.mail / sub)
        fsync_dir_quiet(paths.mail)
        fsync_dir_quiet(paths.mail.parent)

    def create_dir(self, vname: str) -> None:
        self.ctx.views.clear()  # a tree change may reuse a path, even inodes
        vname = _normalize(self.names, vname)
        if self.names.layout == MAILDIRPLUSPLUS or vname == "INBOX":
            # Maildir++ has no \NoSelect directories: Dovecot creates a mailbox
            # instead (MAILBOX_LIST_PROP_NO_NOSELECT, index_storage_mailbox_create)
            self.create_mailbox(vname)
            return
        path = self.paths(vname).mail
        if path.exists():
            raise MailboxExistsError(f"Mailbox already exists: {vname}")
        try:
            makedirs(path)
        except OSError as exc:
            raise storage_error(exc, f"creating directory {vname}") from exc

    # -- deleting --

    def delete_mailbox(self, vname: str) -> None:
        self.ctx.views.clear()  # a tree change may reuse a path, even inodes
        vname = _normalize(self.names, vname)
        if vname == "INBOX":
            self._reset_inbox()
            return
        if not self._is_mailbox(vname):
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {vname}")
        paths = self.paths(vname)
        guid = self._mailbox_guid(paths)
        try:
            if self.names.layout == MAILDIRPLUSPLUS:
                self._delete_plusplus(paths)
                dir_gone = True
            else:
                dir_gone = self._delete_in_place(paths)
        except OSError as exc:
            raise storage_error(exc, f"deleting mailbox {vname}") from exc
        if guid is not None:
            self._log(LogType.DELETE_MAILBOX, guid)
        if dir_gone:
            self._log(LogType.DELETE_DIR, name_hash(vname))
        if guid is not None:
            # Last: once the mailbox is gone, values left behind by a failure here are
            # orphans no mailbox will ever own again (keys name the GUID).
            self.attribute_dict.drop_mailbox(guid)

    def _reset_inbox(self) -> None:
        """INBOX can't go away: drop its mail and identity instead (new GUID, UIDVALIDITY,
        UIDNEXT 1 on next access). Dovecot refuses ("INBOX can't be deleted"), which makes
        every later backup fail once the destination's INBOX got its own mail (§4)."""
        paths = self.paths("INBOX")
        guid = self._mailbox_guid(paths)
        try:
            graveyard = self._staging_dir("delete")
            os.rename(paths.mail / "cur", graveyard)
            _rmtree(graveyard, ignore_errors=True)
            for sub in ("new", "tmp"):
                for entry in os.scandir(paths.mail / sub):
                    os.unlink(entry.path)
            for path in (paths.uidlist, paths.keywords, paths.sidecar, paths.summary):
                path.unlink(missing_ok=True)
            # Dovecot's own index would otherwise bring back the old UIDNEXT.
            for entry in os.scandir(paths.index):
                if entry.name.startswith("dovecot.index") and entry.is_file():
                    os.unlink(entry.path)
        except OSError as exc:
            raise storage_error(exc, "resetting INBOX") from exc
        if guid is not None:
            self._log(LogType.DELETE_MAILBOX, guid)
            self.attribute_dict.drop_mailbox(guid)

    @staticmethod
    def _mailbox_guid(paths: FolderPaths) -> bytes | None:
        try:
            uidlist = parse_uidlist((paths.control / UIDLIST).read_bytes())
        except OSError:
            return None
        return uidlist.guid if uidlist is not None else None

    def _delete_plusplus(self, paths: FolderPaths) -> None:
        """Rename to ..DOVECOT-TRASHED, then remove it (maildir_list_delete_maildir)."""
        trash = self.root / TRASH_DIR_NAME
        _rmtree(trash, ignore_errors=True)
        os.rename(paths.mail, trash)
        fsync_dir_quiet(self.root)
        _rmtree(trash, ignore_errors=True)
        for extra in {paths.control, paths.index} - {paths.mail}:
            _rmtree(extra, ignore_errors=True)

    def _delete_in_place(self, paths: FolderPaths) -> bool:
        """fs layout: cur/ goes first (no longer a mailbox), then the folder's own files;
        children stay. True when the directory itself could be removed."""
        graveyard = self._staging_dir("delete")
        os.rename(paths.mail / "cur", graveyard)
        _rmtree(graveyard, ignore_errors=True)
        gone = True
        for directory in dict.fromkeys((paths.mail, paths.control, paths.index)):
            for entry in list(os.scandir(directory)):
                if entry.name in SUBDIRS and entry.is_dir(follow_symlinks=False):
                    _rmtree(entry.path, ignore_errors=True)
                elif not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
            gone = rmdir_if_empty(directory) and gone
        return gone

    def delete_dir(self, vname: str) -> None:
        self.ctx.views.clear()  # a tree change may reuse a path, even inodes
        vname = _normalize(self.names, vname)
        paths = self.paths(vname)
        if vname == "INBOX" or self._is_mailbox(vname):
            raise MailboxExistsError(f"Mailbox exists: {vname}")
        if any(v.startswith(vname + SEP) for v in self.names.scan(self.root)):
            raise StorageError(f"Mailbox has children, can't delete it: {vname}", MailError.EXISTS)
        if self.names.layout == MAILDIRPLUSPLUS or not paths.mail.is_dir():
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {vname}")
        try:
            os.rmdir(paths.mail)
        except OSError as exc:
            raise storage_error(exc, f"deleting directory {vname}") from exc
        for extra in {paths.control, paths.index} - {paths.mail}:
            rmdir_if_empty(extra)
        self._log(LogType.DELETE_DIR, name_hash(vname))

    # -- renaming --

    def rename_mailbox(self, old: str, new: str) -> None:
        self.ctx.views.clear()  # a tree change may reuse a path, even inodes
        old, new = _normalize(self.names, old), _normalize(self.names, new)
        if old == "INBOX":
            raise StorageError("Renaming INBOX isn't supported.", MailError.NOTPOSSIBLE)
        if new == old or new.startswith(old + SEP):
            raise StorageError("Can't rename mailbox under itself.", MailError.NOTPOSSIBLE)
        existing = {"INBOX", *self.names.scan(self.root)}
        moving = sorted(v for v in existing if v == old or v.startswith(old + SEP))
        if not moving:
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {old}")
        targets = [new + v[len(old) :] for v in moving]
        occupied = self.names.layout == LAYOUT_FS and self.paths(new).mail.exists()
        if occupied or new in existing or any(t in existing for t in targets):
            raise MailboxExistsError(f"Target mailbox already exists: {new}")
        try:
            if self.names.layout == MAILDIRPLUSPLUS:
                for src, dst in zip(moving, targets, strict=True):
                    self._rename_dirs(self.paths(src), self.paths(dst))
            else:
                self._rename_dirs(self.paths(old), self.paths(new))
        except OSError as exc:
            raise storage_error(exc, f"renaming {old} to {new}") from exc
        self._log(LogType.RENAME, name_hash(new))

    @staticmethod
    def _rename_dirs(src: FolderPaths, dst: FolderPaths) -> None:
        for a, b in dict.fromkeys(
            ((src.mail, dst.mail), (src.control, dst.control), (src.index, dst.index))
        ):
            if a.exists():
                makedirs(b.parent)
                os.rename(a, b)
                fsync_dir_quiet(b.parent)

    # -- subscriptions and the mailbox log --

    def subscriptions(self) -> set[str]:
        subscribed: set[str] = set()
        for levels in read_subscriptions(self.control_root, self.names.list_sep):
            vname = self.names.vname_from_subscription(levels)
            if vname is not None:
                subscribed.add(vname)
        return subscribed

    def set_subscribed(self, vname: str, subscribed: bool) -> None:
        vname = _normalize(self.names, vname)
        lines: list[str] = []
        present = False
        for levels in read_subscriptions(self.control_root, self.names.list_sep):
            if self.names.vname_from_subscription(levels) == vname:
                present = True
                if not subscribed:
                    continue
            lines.append("\t".join(tab_escape(level) for level in levels))
        if subscribed and not present:
            lines.append("\t".join(tab_escape(x) for x in self.names.subscription_levels(vname)))
        if subscribed == present:
            return  # unchanged: no log record, like mailbox_set_subscribed()
        write_subscriptions(self.control_root, lines, self.ctx.hostname)
        self._log(LogType.SUBSCRIBE if subscribed else LogType.UNSUBSCRIBE, name_hash(vname))

    def mailbox_log(self) -> list[MailboxLogRecord]:
        return read_mailbox_log(self.index_root)


def _normalize(names: MaildirLayout, vname: str) -> str:
    return names.normalize(vname)


def _same_dir(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _rmtree(path: str | os.PathLike[str], ignore_errors: bool = False) -> None:
    """shutil.rmtree, imported when a tree is removed: shutil (with bz2 and lzma)
    costs a sync that removes nothing ~2 ms of start-up."""
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)
