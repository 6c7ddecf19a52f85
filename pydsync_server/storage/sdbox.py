"""sdbox storage that Dovecot 2.3.19 opens as its own (storage-formats.md §4, §6, §7).

One `u.<uid>` dbox file per message (dbox_file), flags, keywords, modseqs and the
mailbox identity in each mailbox's `dovecot.index.log` (dovecot_index: pydsync only
appends to it, never writes `dovecot.index`), the tree as dbox_tree lays it out, and
attribute values in the store's file dict (as with maildir). Alt storage (`:ALT=`)
is read and kept on deletes and renames; new mail always goes to the primary root.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MailboxNotFoundError, StorageError
from .dbox_tree import DboxStorage, Identity
from .dovecot_index import (
    DBOX_HDR,
    IndexPaths,
    IndexState,
    LogFormatError,
    create_log,
    new_log_header,
    read_index,
)
from .dovecot_index import Transaction as LogTransaction
from .sdbox_mailbox import SdboxMailbox, dbox_hdr, mailbox_guid
from .sdbox_rebuild import RebuildResult, rebuild


class SdboxStorage(DboxStorage):
    """An sdbox mail root (`sdbox:<root>[:ALT=<dir>]`)."""

    def _create_index(self, box_dir: Path, guid: bytes, uid_validity: int) -> None:
        """A new log as §4.4 describes: modseqs on, `dbox-hdr` with the GUID, UIDVALIDITY."""
        t = LogTransaction()
        t.enable_modseqs(IndexState())
        t.ext_intro(DBOX_HDR)
        t.ext_hdr_update(0, dbox_hdr(guid))
        t.set_uid_validity(uid_validity)
        if not create_log(IndexPaths(box_dir).log, new_log_header(self.now()), t):
            raise StorageError(f"{box_dir}: an index appeared while creating the mailbox")

    def _identity(self, box_dir: Path) -> Identity | None:
        try:
            view = read_index(IndexPaths(box_dir))
        except LogFormatError:
            return None
        guid = mailbox_guid(view) if view.exists else None
        if guid is None:
            return None
        return guid, view.state.uid_validity, view.state.next_uid

    def _open(self, vname: str, box_dir: Path) -> SdboxMailbox:
        return SdboxMailbox(vname, self, box_dir)

    def repair_index(self, vname: str, box_dir: Path) -> None:
        """A mailbox directory without a usable index: Dovecot would show it empty
        until force-resync (§4.3); pydsync rebuilds it from its files at once, which
        for a new directory simply makes an empty index."""
        self.rebuild_mailbox(vname, box_dir)

    def rebuild_mailbox(self, vname: str, box_dir: Path) -> RebuildResult:
        return rebuild(
            box_dir,
            self.alt_box_dir(vname),
            now=self.now(),
            new_guid=self.new_guid(),
            allocate_uid_validity=self.allocate_uid_validity,
        )

    def force_resync(self, vname: str | None = None) -> list[str]:
        """Rebuild the index of one mailbox (None: every mailbox) from its `u.N` files
        (§4.3); the files it had to leave out, one line each."""
        names = [n for n, selectable in self.scan().items() if selectable]
        if vname is not None:
            vname = self.normalize(vname)
            if not self.is_mailbox(vname):
                raise MailboxNotFoundError(f"Mailbox doesn't exist: {vname}")
            names = [vname]
        skipped: list[str] = []
        for name in names:
            skipped += self.rebuild_mailbox(name, self.box_dir(name)).skipped
        return skipped
