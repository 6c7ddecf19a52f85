"""The mailbox tree of a dbox store (sdbox and mdbox share it, storage-formats.md §3.1,
§4.1, §7): `mailboxes/<storage name>/dbox-Mails/` per mailbox (LAYOUT=fs, mUTF-7 levels
unless `:UTF-8`), a directory without `dbox-Mails` is \\NoSelect, plus the root's
`dovecot-uidvalidity`, `subscriptions`, `dovecot.mailbox.log` and the attribute dict.

`DboxStorage` does everything but the mailbox index and mail, which the format's
subclass provides through `_create_index`, `_identity`, `_open` and `_drop_mail`.
A mailbox is created complete in a staging directory and renamed into place, and
deleted by renaming `dbox-Mails` away first (Dovecot's `..DOVECOT-TrasH`), so no
other program ever sees half of one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path

from ..errors import (
    InvalidMailboxNameError,
    MailboxExistsError,
    MailboxNotFoundError,
    MailError,
    StorageError,
)
from .base import LogType, Mailbox, MailboxEntry, MailboxLogRecord, Storage, name_hash
from .maildir_attributes import ATTRIBUTE_DICT, AttributeDict
from .maildir_files import (
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
)
from .maildir_names import LAYOUT_FS, SEP, MaildirLayout

MAILBOX_DIR = "mailboxes"  # MAILBOXDIR default
DIRNAME = "dbox-Mails"  # DIRNAME default
ALT_SYMLINK = "dbox-alt-root"
TRASH = "..DOVECOT-TrasH"
STAGING = ".pydsync-tmp"  # beside mailboxes/: never listed, same file system
INDEX_PREFIX = "dovecot.index"
Identity = tuple[bytes, int, int]  # mailbox GUID, UIDVALIDITY, UIDNEXT


class DboxStorage(Storage):
    """The tree part of an sdbox/mdbox store; subclasses add the mailbox index."""

    separator = SEP
    list_separator = "/"
    have_save_guids = True
    have_only_guid128 = False

    def __init__(
        self,
        root: str | Path,
        *,
        alt_root: str | Path | None = None,
        utf8_names: bool = False,
        clock: Callable[[], float] = time.time,
        hostname: str = socket.gethostname(),
        attribute_dict: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.alt_root = Path(alt_root) if alt_root is not None else None
        self.names = MaildirLayout(LAYOUT_FS, utf8_names)
        self.clock = clock
        self.hostname = hostname
        dict_path = Path(attribute_dict) if attribute_dict else self.root / ATTRIBUTE_DICT
        self.attribute_dict = AttributeDict(dict_path, hostname)
        try:
            makedirs(self.root / MAILBOX_DIR)
            if self.alt_root is not None:
                self._link_alt_root()
        except OSError as exc:
            raise storage_error(exc, f"creating {self.root}") from exc

    def _link_alt_root(self) -> None:
        """`dbox-alt-root` -> the alt root, as Dovecot leaves it (§2.8)."""
        assert self.alt_root is not None
        link = self.root / ALT_SYMLINK
        if not os.path.islink(link):
            os.symlink(self.alt_root, link)

    # -- hooks of the format --

    @abstractmethod
    def _create_index(self, box_dir: Path, guid: bytes, uid_validity: int) -> None:
        """Write a new, empty index for a mailbox into `box_dir`."""

    @abstractmethod
    def _identity(self, box_dir: Path) -> Identity | None:
        """(GUID, UIDVALIDITY, UIDNEXT) of an existing mailbox, None if it has no index."""

    @abstractmethod
    def _open(self, vname: str, box_dir: Path) -> Mailbox: ...

    def _drop_mail(self, vname: str, box_dir: Path) -> None:  # noqa: B027 - sdbox: nothing
        """Called before a mailbox's directory goes away (mdbox: release map refcounts)."""

    # -- paths and names --

    def now(self) -> int:
        return int(self.clock())

    def new_guid(self) -> bytes:
        return secrets.token_bytes(16)

    def check_name(self, vname: str) -> None:
        self.normalize(vname)

    def normalize(self, vname: str) -> str:
        vname = self.names.normalize(vname)
        if DIRNAME in vname.split(SEP):
            raise InvalidMailboxNameError("Invalid mailbox name: Contains reserved name")
        return vname

    def levels(self, vname: str) -> list[str]:
        return ["INBOX"] if vname == "INBOX" else self.names.storage_levels(vname)

    def node_dir(self, vname: str, root: Path | None = None) -> Path:
        """`<root>/mailboxes/<storage name>`: the name's directory (children live in it)."""
        return (root or self.root).joinpath(MAILBOX_DIR, *self.levels(vname))

    def box_dir(self, vname: str) -> Path:
        return self.node_dir(vname) / DIRNAME

    def alt_box_dir(self, vname: str) -> Path | None:
        if self.alt_root is None:
            return None
        return self.node_dir(vname, self.alt_root) / DIRNAME

    def is_mailbox(self, vname: str) -> bool:
        return self.box_dir(vname).is_dir()

    def allocate_uid_validity(self) -> int:
        return allocate_uid_validity(self.root, self.now())

    def _log(self, rtype: LogType, key: bytes) -> None:
        append_mailbox_log(self.root, MailboxLogRecord(rtype, key, self.now()))

    # -- listing --

    def scan(self) -> dict[str, bool]:
        """vname -> selectable, for every name under mailboxes/ (INBOX included)."""
        found: dict[str, bool] = {}
        self._scan(self.root / MAILBOX_DIR, [], found)
        return found

    def _scan(self, directory: Path, parents: list[str], found: dict[str, bool]) -> None:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith(".") or entry.name == DIRNAME:
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            vname = self.names.vname_from_storage([*parents, entry.name])
            if vname is None:
                continue
            found[vname] = os.path.isdir(os.path.join(entry.path, DIRNAME))
            self._scan(Path(entry.path), [*parents, entry.name], found)

    def list_mailboxes(self) -> list[MailboxEntry]:
        found = self.scan()
        entries: list[MailboxEntry] = []
        for vname in sorted(found, key=lambda v: (v != "INBOX", v.split(SEP))):
            if not found[vname] and vname == "INBOX":
                continue  # INBOX is listed once it exists, as with maildir
            if not found[vname]:
                entries.append(MailboxEntry(vname, None))
                continue
            identity = self._identity(self.box_dir(vname))
            if identity is None:
                try:
                    identity = self._identity_of_opened(vname)
                except MailboxNotFoundError:
                    continue  # deleted while listing
            guid, uid_validity, uid_next = identity
            entries.append(MailboxEntry(vname, guid, uid_validity, uid_next))
        return entries

    def _identity_of_opened(self, vname: str) -> Identity:
        box = self.open_mailbox(vname)
        try:
            st = box.status()
        finally:
            box.close()
        return st.guid, st.uid_validity, st.uid_next

    def open_mailbox(self, vname: str) -> Mailbox:
        vname = self.normalize(vname)
        if vname == "INBOX" and not self.is_mailbox(vname):
            try:
                self.create_mailbox("INBOX")
            except MailboxExistsError:
                pass  # created meanwhile by someone else
        elif not self.is_mailbox(vname):
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {vname}")
        return self._open(vname, self.box_dir(vname))

    # -- creating --

    def create_mailbox(self, vname: str, guid: bytes | None = None, uid_validity: int = 0) -> None:
        vname = self.normalize(vname)
        if guid is not None and (len(guid) != 16 or guid == bytes(16)):
            raise StorageError("Invalid mailbox GUID", MailError.PARAMS)
        target = self.box_dir(vname)
        if target.exists():
            raise MailboxExistsError(f"Mailbox already exists: {vname}")
        try:
            staging = self.staging_dir("create")
            try:
                self._create_index(
                    staging, guid or self.new_guid(), uid_validity or self.allocate_uid_validity()
                )
                makedirs(target.parent)
                if target.exists():
                    raise MailboxExistsError(f"Mailbox already exists: {vname}")
                os.rename(staging, target)  # fails if someone else made it meanwhile
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            fsync_dir_quiet(target.parent)
        except OSError as exc:
            if target.exists():
                raise MailboxExistsError(f"Mailbox already exists: {vname}") from None
            raise storage_error(exc, f"creating mailbox {vname}") from exc

    def staging_dir(self, purpose: str) -> Path:
        """A fresh directory beside mailboxes/; leftovers older than an hour go first."""
        base = self.root / STAGING
        makedirs(base)
        cutoff = time.time() - 3600
        for entry in os.scandir(base):
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                shutil.rmtree(entry.path, ignore_errors=True)
        path = base / f"{purpose}.{os.getpid()}.{secrets.token_hex(6)}"
        os.mkdir(path, 0o700)
        return path

    def create_dir(self, vname: str) -> None:
        vname = self.normalize(vname)
        if vname == "INBOX":
            self.create_mailbox(vname)
            return
        path = self.node_dir(vname)
        if path.exists():
            raise MailboxExistsError(f"Mailbox already exists: {vname}")
        try:
            makedirs(path)
        except OSError as exc:
            raise storage_error(exc, f"creating directory {vname}") from exc

    # -- deleting --

    def delete_mailbox(self, vname: str) -> None:
        vname = self.normalize(vname)
        if not self.is_mailbox(vname):
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {vname}")
        identity = self._identity(self.box_dir(vname))
        try:
            self._drop_mail(vname, self.box_dir(vname))
            self._remove_box_dir(self.box_dir(vname))
            alt = self.alt_box_dir(vname)
            if alt is not None and alt.exists():
                self._remove_box_dir(alt)
            dir_gone = rmdir_if_empty(self.node_dir(vname)) and vname != "INBOX"
        except OSError as exc:
            raise storage_error(exc, f"deleting mailbox {vname}") from exc
        if identity is not None:
            self._log(LogType.DELETE_MAILBOX, identity[0])
        if dir_gone:
            self._log(LogType.DELETE_DIR, name_hash(vname))
        if identity is not None:
            self.attribute_dict.drop_mailbox(identity[0])

    def _remove_box_dir(self, box_dir: Path) -> None:
        """Rename `dbox-Mails` away (the mailbox is gone at once), then remove it."""
        trash = self._root_of(box_dir) / TRASH
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(box_dir, trash)
        fsync_dir_quiet(box_dir.parent)
        shutil.rmtree(trash, ignore_errors=True)

    def _root_of(self, path: Path) -> Path:
        if self.alt_root is not None and path.is_relative_to(self.alt_root):
            return self.alt_root
        return self.root

    def delete_dir(self, vname: str) -> None:
        vname = self.normalize(vname)
        if vname == "INBOX" or self.is_mailbox(vname):
            raise MailboxExistsError(f"Mailbox exists: {vname}")
        if any(v.startswith(vname + SEP) for v in self.scan()):
            raise StorageError(f"Mailbox has children, can't delete it: {vname}", MailError.EXISTS)
        path = self.node_dir(vname)
        if not path.is_dir():
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {vname}")
        try:
            os.rmdir(path)
        except OSError as exc:
            raise storage_error(exc, f"deleting directory {vname}") from exc
        if self.alt_root is not None:
            rmdir_if_empty(self.node_dir(vname, self.alt_root))
        self._log(LogType.DELETE_DIR, name_hash(vname))

    # -- renaming --

    def rename_mailbox(self, old: str, new: str) -> None:
        old, new = self.normalize(old), self.normalize(new)
        if old == "INBOX":
            raise StorageError("Renaming INBOX isn't supported.", MailError.NOTPOSSIBLE)
        if new == old or new.startswith(old + SEP):
            raise StorageError("Can't rename mailbox under itself.", MailError.NOTPOSSIBLE)
        src, dst = self.node_dir(old), self.node_dir(new)
        if not src.is_dir():
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {old}")
        if dst.exists() or new == "INBOX":
            raise MailboxExistsError(f"Target mailbox already exists: {new}")
        try:
            makedirs(dst.parent)
            os.rename(src, dst)  # the whole subtree: children move along (LAYOUT=fs)
            fsync_dir_quiet(dst.parent)
            if self.alt_root is not None:
                alt_src, alt_dst = (
                    self.node_dir(old, self.alt_root),
                    self.node_dir(new, self.alt_root),
                )
                if alt_src.exists():
                    makedirs(alt_dst.parent)
                    os.rename(alt_src, alt_dst)
        except OSError as exc:
            raise storage_error(exc, f"renaming {old} to {new}") from exc
        self._log(LogType.RENAME, name_hash(new))

    # -- subscriptions and the mailbox log --

    def subscriptions(self) -> set[str]:
        subscribed: set[str] = set()
        for levels in read_subscriptions(self.root, "/"):
            vname = self.names.vname_from_subscription(levels)
            if vname is not None:
                subscribed.add(vname)
        return subscribed

    def set_subscribed(self, vname: str, subscribed: bool) -> None:
        vname = self.normalize(vname)
        lines: list[str] = []
        present = False
        for levels in read_subscriptions(self.root, "/"):
            if self.names.vname_from_subscription(levels) == vname:
                present = True
                if not subscribed:
                    continue
            lines.append("\t".join(tab_escape(level) for level in levels))
        if subscribed == present:
            return  # unchanged: no log record, like mailbox_set_subscribed()
        if subscribed:
            lines.append("\t".join(tab_escape(x) for x in self.names.subscription_levels(vname)))
        write_subscriptions(self.root, lines, self.hostname)
        self._log(LogType.SUBSCRIBE if subscribed else LogType.UNSUBSCRIBE, name_hash(vname))

    def mailbox_log(self) -> list[MailboxLogRecord]:
        return read_mailbox_log(self.root)
