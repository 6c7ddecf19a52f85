"""The dsync brain: master and slave sessions over a channel (dsync-algorithm.md §1).

A session is a straight sequence: handshake, (saved states), tree exchange and
merge, then the master offers mailboxes one by one and both sides run the
per-mailbox exchange; the slave ends with `finish`. No I/O of its own: everything
goes through the channel and the storage; the clock and the log are injected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import (
    DsyncError,
    ExitCode,
    MailError,
    PeerClosedError,
    ProtocolError,
    RemoteProtocolError,
    StorageError,
    UsageError,
    exit_code_for,
)
from ..protocol.channel import Channel
from ..protocol.items import (
    END_OF_LIST,
    SYNC_TYPE_CHANGED,
    SYNC_TYPE_FULL,
    SYNC_TYPE_STATE,
    Done,
    Handshake,
    Item,
    MailboxDelete,
    MailboxState,
    MailboxTreeNode,
)
from ..protocol.items import Mailbox as MailboxRecord
from ..protocol.state import InvalidStateError
from ..storage.base import Mailbox, Storage
from .filters import ImportFilter
from .names import name_fixer
from .settings import Log, SyncMode, SyncResult, SyncSettings
from .state_compat import export_states, import_states
from .tree import (
    MailboxFilter,
    MailboxTree,
    add_remote_node,
    deletions_to_item,
    fill_local_tree,
    remote_deletions,
    tree_to_items,
)
from .tree_apply import apply_tree_changes
from .tree_sync import SyncType, apply_deletions, sync_trees

if TYPE_CHECKING:
    from .all_mail import AllMail
    from .events import SyncObserver
    from .mailbox_sync import Role, SyncOptions

# mailbox_sync (with the exporter and importer) is imported when a mailbox first needs
# its sync: a run that finds nothing changed never pays for loading it (start-up time).


@dataclass
class Outcome:
    """What went wrong so far, folded into doveadm's exit code rules (§3.10, §11.4)."""

    changes_during_sync: str | None = None
    failed: bool = False
    mail_error: MailError = MailError.NONE
    require_full_resync: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def changed(self, reason: str) -> None:
        if self.changes_during_sync is None:
            self.changes_during_sync = reason

    def fail(self, message: str, mail_error: MailError = MailError.TEMP) -> None:
        self.errors.append(message)
        if not self.failed or mail_error is MailError.TEMP or self.mail_error is MailError.NONE:
            self.mail_error = mail_error
        self.failed = True

    def exit_code(self) -> ExitCode:
        if self.failed:
            code = exit_code_for(self.mail_error or MailError.TEMP)
            if self.changes_during_sync is None or code is ExitCode.TEMPFAIL:
                return code
        if self.changes_during_sync is not None:
            return ExitCode.CHANGES_DURING_SYNC
        return ExitCode.OK


@dataclass
class Session:
    """Settings both sides agree on after the handshake."""

    master: bool
    backup_send: bool  # this side is the backup source
    backup_recv: bool  # this side is the backup destination
    no_backup_overwrite: bool
    mail_requests: bool
    sync_type: str
    no_mail_sync: bool
    tree_filter: MailboxFilter
    import_filter: ImportFilter
    hashed_headers: tuple[str, ...]
    alt_char: str
    empty_hdr_workaround: bool
    purge_remote: bool = False
    all_mail: AllMail | None = None  # -a
    peer_minor: int = 5
    saved_states: dict[str, MailboxState] = field(default_factory=dict)

    @property
    def tree_sync_type(self) -> SyncType:
        if self.no_backup_overwrite:
            return SyncType.TWOWAY
        if self.backup_send:
            return SyncType.PRESERVE_LOCAL
        if self.backup_recv:
            return SyncType.PRESERVE_REMOTE
        return SyncType.TWOWAY

    def role(self) -> Role:
        from .mailbox_sync import Role  # start-up time: see the imports

        return Role(
            exporter=not self.backup_recv,
            importer=not self.backup_send,
            mail_requests=self.mail_requests,
            master=self.master,
            revert=self.backup_recv and not self.no_backup_overwrite,
            peer_minor=self.peer_minor,
        )

    def sync_options(self) -> SyncOptions:
        from .hdr_hash import hash_version_for_minor
        from .mailbox_sync import SyncOptions  # start-up time: see the imports

        return SyncOptions(
            all_mail=self.all_mail,
            hashed_headers=self.hashed_headers,
            hash_version=hash_version_for_minor(self.peer_minor),
            filter=self.import_filter,
            empty_hdr_workaround=self.empty_hdr_workaround,
            backup_send=self.backup_send,
            backup_recv=self.backup_recv,
        )


def expect(channel: Channel, kind: type, what: str) -> Item:
    item = channel.recv()
    if isinstance(item, Done):
        raise PeerClosedError("Remote closed the connection")
    if not isinstance(item, kind):
        raise RemoteProtocolError(f"Received unexpected input while waiting for {what}")
    return item


class Brain:
    """Shared parts of master and slave."""

    def __init__(
        self, storage: Storage, channel: Channel, *, log: Log, observer: SyncObserver | None = None
    ) -> None:
        self.storage = storage
        self.channel = channel
        self.log = log
        self.observer = observer
        self.outcome = Outcome()
        self.local_tree: MailboxTree | None = None

    def exchange_trees(self, session: Session) -> MailboxTree:
        local = fill_local_tree(self.storage, wanted=session.tree_filter)
        for node in tree_to_items(local):
            self.channel.send(node)
        self.channel.send(END_OF_LIST)
        self.channel.send(deletions_to_item(local))
        self.channel.flush()
        remote = MailboxTree(self.storage.separator, self.storage.escape_char)
        fix_name = name_fixer(self.storage, session.alt_char)
        while (item := self.channel.recv()) is not END_OF_LIST:
            if not isinstance(item, MailboxTreeNode):
                raise RemoteProtocolError("Received unexpected input while waiting for N")
            add_remote_node(remote, item, fix_name)
        deletes = expect(self.channel, MailboxDelete, "D")
        assert isinstance(deletes, MailboxDelete)
        apply_deletions(local, remote, remote_deletions(deletes))
        changes = sync_trees(local, remote, session.tree_sync_type)
        if not session.backup_send:
            apply_tree_changes(self.storage, changes, session, self.outcome, self.log)
        self.local_tree = local
        return local

    def mailbox_record(self, vname: str) -> MailboxRecord:
        box = self.storage.open_mailbox(vname)
        try:
            box.refresh()
            status = box.status()
        finally:
            box.close()
        return MailboxRecord(
            mailbox_guid=status.guid.hex(),
            uid_validity=status.uid_validity,
            uid_next=status.uid_next,
            messages_count=status.messages,
            first_recent_uid=status.first_recent_uid,
            highest_modseq=status.highest_modseq,
            highest_pvt_modseq=status.highest_pvt_modseq,
            cache_fields=(),
            have_guids=True,
            have_save_guids=self.storage.have_save_guids,
            have_only_guid128=self.storage.have_only_guid128,
        )

    def run_mailbox(
        self, session: Session, vname: str, local: MailboxRecord, remote: MailboxRecord
    ) -> MailboxState | None:
        """Sync one mailbox whose `B` pair says it needs it; the merged state."""
        # loaded on first use: a run that syncs no mailbox never needs it (start-up time)
        from .mailbox_sync import sync_mailbox

        box = self.storage.open_mailbox(vname)
        if self.observer is not None:
            self.observer.mailbox_begin(box.vname, local.mailbox_guid)
        try:
            self._update_uidvalidity(box, session, local, remote)
            saved = session.saved_states.get(local.mailbox_guid)
            outcome = sync_mailbox(
                self.channel,
                box,
                local,
                remote,
                saved,
                session.role(),
                session.sync_options(),
                self.observer,
            )
        finally:
            box.close()
            if self.observer is not None:
                self.observer.mailbox_end(box.vname)
        for warning in outcome.warnings:
            self.log(f"Warning: {warning}")
        result = outcome.import_result
        if result is not None:
            if result.delete_mailbox:
                self._delete_reverted(vname)
            if result.require_full_resync:
                self.outcome.require_full_resync = True
                self.outcome.changed(f"Mailbox {vname}: incremental sync failed")
            elif result.failed:
                self.outcome.fail(f"Mailbox {vname}: {result.error}")
        if outcome.state.changes_during_sync and self.outcome.changes_during_sync is None:
            self.outcome.changed("Remote notified that changes happened during sync")
        return outcome.state

    def _update_uidvalidity(
        self, box: Mailbox, session: Session, local: MailboxRecord, remote: MailboxRecord
    ) -> None:
        if local.uid_validity == remote.uid_validity or session.backup_send:
            return
        remote_wins = remote.messages_count > local.messages_count or (
            remote.messages_count == local.messages_count
            and remote.uid_validity > local.uid_validity
        )
        if remote_wins or session.backup_recv:
            with box.transaction() as tx:
                tx.set_uid_validity(remote.uid_validity)

    def _delete_reverted(self, vname: str) -> None:
        try:
            self.storage.delete_mailbox(vname)
        except StorageError as exc:
            self.outcome.fail(f"Couldn't delete mailbox {vname}: {exc}", exc.mail_error)


def boxes_need_sync(session: Session, local: MailboxRecord, remote: MailboxRecord) -> bool:
    """The fast-mode comparison both sides make identically (§3.1)."""
    if session.no_mail_sync:
        return False
    if session.sync_type != SYNC_TYPE_CHANGED:
        return True
    return (
        local.uid_validity != remote.uid_validity
        or local.uid_next != remote.uid_next
        or local.messages_count != remote.messages_count
        or local.highest_modseq != remote.highest_modseq
        or local.highest_pvt_modseq != remote.highest_pvt_modseq
        or local.first_recent_uid != remote.first_recent_uid
    )


def lost_record(guid: str, *, ignore: bool) -> MailboxRecord:
    return MailboxRecord(
        mailbox_guid=guid,
        uid_validity=0,
        uid_next=0,
        messages_count=0,
        first_recent_uid=0,
        highest_modseq=0,
        highest_pvt_modseq=0,
        mailbox_lost=not ignore,
        mailbox_ignore=ignore,
        cache_fields=None,
    )


def state_string(outcome: Outcome, states: dict[str, MailboxState], storage: Storage) -> str:
    """The `-s` output: states of mailboxes that exist now (GUIDs as the storage has
    them after the run: a merge may have changed one)."""
    if outcome.require_full_resync:
        return ""
    try:
        existing = {e.guid for e in storage.list_mailboxes() if e.guid is not None}
    except DsyncError:
        existing = set()
    kept = [s for guid, s in states.items() if bytes.fromhex(guid) in existing]
    return export_states(kept)


def parse_saved_state(settings: SyncSettings, log: Log) -> tuple[str, dict[str, MailboxState]]:
    """Sync type and saved states from -f / -s (§0.2): invalid state → full sync."""
    if settings.full_sync:
        return SYNC_TYPE_FULL, {}
    if not settings.state:
        return SYNC_TYPE_CHANGED, {}
    try:
        states = import_states(settings.state)
    except InvalidStateError as exc:
        log(f"Error: Saved sync state is invalid, falling back to full sync: {exc}")
        return SYNC_TYPE_FULL, {}
    return SYNC_TYPE_STATE, {s.mailbox_guid: s for s in states}


def handshake_for(settings: SyncSettings, sync_type: str) -> Handshake:
    """The master's `H`: backup flags are mirrored, the slave learns its own role (§6.2)."""
    source = settings.mode in (SyncMode.BACKUP, SyncMode.ONEWAY)
    destination = settings.mode in (SyncMode.BACKUP_REVERSE, SyncMode.ONEWAY_REVERSE)
    oneway = settings.mode in (SyncMode.ONEWAY, SyncMode.ONEWAY_REVERSE)
    no_mail_sync = settings.mailbox == "" or settings.mailbox_guid == ""
    return Handshake(
        hostname=settings.hostname,
        sync_ns_prefix=settings.namespace_prefixes,
        sync_box=settings.mailbox or None,
        sync_box_guid=settings.mailbox_guid or None,
        sync_type=sync_type,
        debug=settings.debug,
        sync_visible_namespaces=settings.visible_namespaces,
        exclude_mailboxes=settings.exclude,
        send_mail_requests=True,
        backup_send=destination,
        backup_recv=source,
        lock_timeout=settings.lock_timeout,
        no_mail_sync=no_mail_sync,
        no_backup_overwrite=oneway,
        purge_remote=settings.purge_remote,
        sync_since_timestamp=settings.since,
        sync_max_size=settings.max_size,
        sync_flags=settings.only_flag,
        sync_until_timestamp=settings.until,
        virtual_all_box=settings.virtual_all_box,
        empty_hdr_workaround=settings.empty_hdr_workaround,
        import_commit_msgs_interval=settings.commit_msgs_interval,
        hashed_headers=settings.hashed_headers,
        alt_char=settings.alt_char or None,
    )


def mailbox_filter(box: str | None, guid: str | None, exclude: tuple[str, ...]) -> MailboxFilter:
    try:
        guid_bytes = bytes.fromhex(guid) if guid else None
    except ValueError as exc:
        raise UsageError(f"Invalid mailbox GUID: {guid}") from exc
    if guid_bytes is not None and len(guid_bytes) != 16:
        raise UsageError(f"Invalid mailbox GUID: {guid}")
    return MailboxFilter(mailbox=box or None, mailbox_guid=guid_bytes, exclude=exclude)


def result_from(outcome: Outcome, state: str | None) -> SyncResult:
    return SyncResult(
        exit_code=outcome.exit_code(),
        state=state,
        errors=list(outcome.errors),
        changes_during_sync=outcome.changes_during_sync,
        warnings=list(outcome.warnings),
    )


def report_failure(outcome: Outcome, exc: BaseException) -> None:
    if isinstance(exc, ProtocolError):
        outcome.fail(str(exc), MailError.TEMP)
    elif isinstance(exc, DsyncError):
        outcome.fail(str(exc), exc.mail_error)
    else:
        raise exc
