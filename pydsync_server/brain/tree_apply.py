"""Apply the tree merge's local changes to the storage (dsync-algorithm.md §2.6).

Conflicts a concurrent client can cause (a name already taken, a mailbox already
gone) are "changes during sync" (exit 2), not failures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import MailboxExistsError, MailboxNotFoundError, StorageError
from ..storage.base import Storage
from .tree_sync import ChangeKind, TreeChange

if TYPE_CHECKING:
    from .brain import Outcome, Session
    from .settings import Log


def apply_tree_changes(
    storage: Storage, changes: list[TreeChange], session: Session, outcome: Outcome, log: Log
) -> None:
    for change in changes:
        vname = storage.separator.join(change.name)
        try:
            _apply(storage, change, vname, session)
        except (MailboxExistsError, MailboxNotFoundError) as exc:
            outcome.changed(f"Mailbox {vname} {change.kind.value} conflict: {exc}")
        except StorageError as exc:
            outcome.fail(f"Mailbox {vname}: {change.kind.value} failed: {exc}", exc.mail_error)
            raise


def _apply(storage: Storage, change: TreeChange, vname: str, session: Session) -> None:
    kind = change.kind
    if kind is ChangeKind.DELETE_BOX:
        storage.delete_mailbox(_vname_of_guid(storage, change.guid) or vname)
    elif kind is ChangeKind.DELETE_DIR:
        storage.delete_dir(vname)
    elif kind is ChangeKind.CREATE_BOX:
        _create_box(storage, change, vname, session)
    elif kind is ChangeKind.CREATE_DIR:
        try:
            storage.create_dir(vname)
        except MailboxExistsError:
            pass
    elif kind is ChangeKind.RENAME:
        assert change.new_name is not None
        storage.rename_mailbox(vname, storage.separator.join(change.new_name))
    elif kind is ChangeKind.SUBSCRIBE:
        storage.set_subscribed(vname, True)
    elif kind is ChangeKind.UNSUBSCRIBE:
        storage.set_subscribed(vname, False)


def _create_box(storage: Storage, change: TreeChange, vname: str, session: Session) -> None:
    try:
        storage.create_mailbox(vname, change.guid, change.uid_validity)
        return
    except MailboxExistsError:
        pass
    if change.guid is None or session.no_mail_sync:
        return
    box = storage.open_mailbox(vname)
    try:
        current = box.status().guid
        wanted = change.guid
        backup = session.backup_send or session.backup_recv
        if (wanted > current and not backup) or (wanted != current and session.backup_recv):
            with box.transaction() as tx:
                tx.set_guid(wanted)
                if session.backup_recv and change.uid_validity:
                    tx.set_uid_validity(change.uid_validity)
    finally:
        box.close()


def _vname_of_guid(storage: Storage, guid: bytes | None) -> str | None:
    if guid is None:
        return None
    for entry in storage.list_mailboxes():
        if entry.guid == guid:
            return entry.vname
    raise MailboxNotFoundError(f"GUID {guid.hex()} deletion conflict: mailbox not found")
