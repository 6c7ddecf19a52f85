"""mdbox storage that Dovecot 2.3/2.4 opens as its own (storage-formats.md §3, §6, §7).

The tree is dbox_tree's (`mailboxes/<name>/dbox-Mails/`, holding only the mailbox
index); all message data lives in `storage/m.N` (and `<ALT>/storage/m.N`), shared
through the map (mdbox_map) with refcounts: a message is stored once however many
mailboxes hold its GUID. `purge()` and `force_resync()` are Dovecot's `doveadm purge`
and `force-resync` (mdbox_purge, mdbox_rebuild).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import MailboxNotFoundError, StorageError
from .dbox_tree import DboxStorage, Identity
from .dovecot_index import IndexPaths, LogFormatError, read_index
from .mdbox_files import DEFAULT_ROTATE_SIZE, GuidIndex, MdboxFiles
from .mdbox_mailbox import MdboxContext, MdboxMailbox, box_header, box_record, create_index
from .mdbox_map import MapChanges, MdboxMap

STORAGE_DIR = "storage"
_Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> _Stamp:
    """Inode, size and mtime: an index file changes none of them only when unchanged
    (logs grow by appends, the others are replaced by rename)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class MdboxStorage(DboxStorage):
    """An mdbox mail root (`mdbox:<root>[:ALT=<dir>]`)."""

    def __init__(
        self,
        root: str | Path,
        *,
        alt_root: str | Path | None = None,
        rotate_size: int = DEFAULT_ROTATE_SIZE,
        utf8_names: bool = False,
        clock: Callable[[], float] = time.time,
        hostname: str = socket.gethostname(),
        attribute_dict: str | Path | None = None,
    ) -> None:
        """`alt_root`: the `:ALT=` directory; `rotate_size`: `mdbox_rotate_size`, bytes."""
        self._identities: dict[Path, tuple[tuple[_Stamp, ...], Identity]] = {}
        super().__init__(
            root,
            alt_root=alt_root,
            utf8_names=utf8_names,
            clock=clock,
            hostname=hostname,
            attribute_dict=attribute_dict,
        )
        alt_storage = self.alt_root / STORAGE_DIR if self.alt_root is not None else None
        files = MdboxFiles(self.root / STORAGE_DIR, alt_storage, rotate_size, hostname, clock)
        self.ctx = MdboxContext(
            root=self.root,
            map=MdboxMap(self.root / STORAGE_DIR, clock),
            files=files,
            clock=clock,
            hostname=hostname,
            attributes=self.attribute_dict,
            allocate_uid_validity=self.allocate_uid_validity,
            new_guid=self.new_guid,
            guid_index=GuidIndex(files),
        )

    # -- hooks of dbox_tree --

    def _create_index(self, box_dir: Path, guid: bytes, uid_validity: int) -> None:
        if not create_index(box_dir, self.ctx, guid, uid_validity):
            raise StorageError(f"{box_dir}: an index appeared while creating the mailbox")

    def _identity(self, box_dir: Path) -> Identity | None:
        """Read from the index, or remembered while its files are unchanged: a brain
        lists the mailboxes once per mailbox it syncs."""
        paths = IndexPaths(box_dir)
        stamp = tuple(_stamp(p) for p in (paths.index, paths.log, paths.log2))
        cached = self._identities.get(box_dir)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            view = read_index(paths)
        except LogFormatError:
            return None
        header = box_header(view.state) if view.exists else None
        if header is None:
            return None
        identity = header.guid, view.state.uid_validity, view.state.next_uid
        self._identities[box_dir] = (stamp, identity)
        return identity

    # A tree change may put a new index where an old one was, even on its reused inode
    # within one mtime tick: the remembered identities are forgotten after each.

    def create_mailbox(self, vname: str, guid: bytes | None = None, uid_validity: int = 0) -> None:
        try:
            super().create_mailbox(vname, guid, uid_validity)
        finally:
            self._identities.clear()

    def delete_mailbox(self, vname: str) -> None:
        try:
            super().delete_mailbox(vname)
        finally:
            self._identities.clear()

    def rename_mailbox(self, old: str, new: str) -> None:
        try:
            super().rename_mailbox(old, new)
        finally:
            self._identities.clear()

    def _open(self, vname: str, box_dir: Path) -> MdboxMailbox:
        storage_name = "/".join(self.levels(vname))
        return MdboxMailbox(vname, box_dir, self.ctx, storage_name)

    def _drop_mail(self, vname: str, box_dir: Path) -> None:
        """Refcount -1 for every message of a mailbox being deleted; the data stays in
        m.N until purge (§3.1). A crash after this leaks nothing: the map only counts
        fewer references than remain for a moment."""
        try:
            state = read_index(IndexPaths(box_dir)).state
        except LogFormatError:
            return  # an unreadable index references nothing force-resync would keep
        header = box_header(state)
        changes = MapChanges()
        for msg in state.messages.values():
            map_uid, _ = box_record(state, msg)
            if map_uid:
                changes.ref(map_uid, -1)
        if header is None or not changes:
            return
        with self.ctx.map.locked() as locked:
            if locked.view.uid_validity == header.map_uid_validity:
                locked.commit(changes)

    # -- maintenance --

    def purge(self) -> None:
        """`doveadm purge`: rewrite the m.N files holding expunged messages (§3.5)."""
        from .mdbox_purge import purge

        purge(self.ctx)

    def force_resync(self, vname: str | None = None) -> list[str]:
        """Rebuild the map and every mailbox index from the m.N files (§3.6): mdbox
        always rebuilds the whole storage. What could not be recovered, one per line."""
        from .mdbox_rebuild import rebuild

        if vname is not None and not self.is_mailbox(self.normalize(vname)):
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {vname}")
        try:
            return rebuild(self)
        finally:
            self._identities.clear()
