"""Entry points: run a master or a slave session, or both locally in two threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import (
    DsyncError,
    ExitCode,
    MailboxNotFoundError,
    MailError,
    PeerClosedError,
    ProtocolError,
    RemoteProtocolError,
    UsageError,
)
from ..protocol.channel import Channel
from ..protocol.items import (
    END_OF_LIST,
    SYNC_TYPE_STATE,
    Done,
    Finish,
    Handshake,
    MailboxState,
)
from ..protocol.items import Mailbox as MailboxRecord
from ..storage.base import Storage
from .brain import (
    Brain,
    Session,
    boxes_need_sync,
    expect,
    handshake_for,
    lost_record,
    mailbox_filter,
    parse_saved_state,
    report_failure,
    result_from,
    state_string,
)
from .filters import ImportFilter
from .memchannel import channel_pair
from .settings import Clock, Log, SyncResult, SyncSettings, UserLock

if TYPE_CHECKING:
    from .events import SyncObserver


def run_master(
    storage: Storage,
    channel: Channel,
    settings: SyncSettings,
    *,
    clock: Clock = time.time,
    log: Log = lambda _msg: None,
    user_lock: UserLock | None = None,
    observer: SyncObserver | None = None,
) -> SyncResult:
    check_namespaces(storage, settings.namespace_prefixes)
    sync_type, saved = parse_saved_state(settings, log)
    saved = _usable_states(storage, saved, log)
    handshake = handshake_for(settings, sync_type)
    brain = Brain(storage, channel, log=log, observer=observer)
    session = _session(handshake, master=True, saved=saved)
    states = dict(saved)
    release: Callable[[], None] | None = None
    try:
        channel.send(handshake)
        channel.flush()
        peer = expect(channel, Handshake, "H")
        assert isinstance(peer, Handshake)
        session.peer_minor = channel.peer_minor_version
        release = _lock_user(user_lock, handshake, peer.hostname, master=True, log=log)
        if sync_type == SYNC_TYPE_STATE:
            for saved_state in saved.values():
                channel.send(saved_state)
            channel.send(END_OF_LIST)
        _attach_all_mail(brain, session, settings.virtual_all_box)
        tree = brain.exchange_trees(session)
        if not session.no_mail_sync:
            for name in tree.sorted_names():
                node = tree.nodes[name]
                if node.is_mailbox:
                    _master_mailbox(brain, session, tree.vname(name), states)
        channel.send(END_OF_LIST)
        channel.flush()
        if session.peer_minor >= 3:
            _receive_finish(brain, channel)
        channel.close(send_done=False)
    except (ProtocolError, MailboxNotFoundError) as exc:
        report_failure(brain.outcome, exc)
        channel.close(send_done=not isinstance(exc, ProtocolError))
    except Exception as exc:
        report_failure(brain.outcome, exc)
        channel.close(send_done=True)
    finally:
        if release is not None:
            release()
    state = state_string(brain.outcome, states, storage)
    return result_from(brain.outcome, state if settings.state is not None else None)


def _master_mailbox(
    brain: Brain, session: Session, vname: str, states: dict[str, MailboxState]
) -> None:
    try:
        local = brain.mailbox_record(vname)
    except MailboxNotFoundError:
        return
    saved = session.saved_states.get(local.mailbox_guid)
    # Dovecot skips mailboxes unchanged on the master; as a backup destination the
    # master's side never changes, so that skip would never pull the source's changes.
    if saved is not None and _unchanged_since(saved, local) and not session.backup_recv:
        return
    brain.channel.send(local)
    brain.channel.flush()
    remote = expect(brain.channel, MailboxRecord, "B")
    assert isinstance(remote, MailboxRecord)
    if remote.mailbox_guid != local.mailbox_guid:
        raise _protocol("Remote sent mailbox with a wrong GUID")
    if remote.mailbox_ignore:
        return
    if remote.mailbox_lost:
        brain.outcome.changed(
            f"Remote lost mailbox GUID {local.mailbox_guid} (maybe it was just deleted?)"
        )
        # Dovecot prints an empty state here and may do so on every later run; dropping
        # only this mailbox's entry makes the next run sync it in full, the rest stays.
        states.pop(local.mailbox_guid, None)
        return
    if _stateful_uidvalidity_change(session, local, remote):
        brain.outcome.changed("UIDVALIDITY changed during a stateful sync, need to restart")
        states.pop(local.mailbox_guid, None)
        return
    if not boxes_need_sync(session, local, remote):
        states.setdefault(
            local.mailbox_guid, MailboxState(local.mailbox_guid, local.uid_validity, 0, 0, 0)
        )
        return
    state = brain.run_mailbox(session, vname, local, remote)
    if state is not None:
        states[local.mailbox_guid] = state


def _usable_states(
    storage: Storage, saved: dict[str, MailboxState], log: Log
) -> dict[str, MailboxState]:
    """Drop saved states our own mailboxes contradict, so those mailboxes get a full
    sync now instead of an unusable incremental one (the importer's sanity check, §3.6.1)."""
    if not saved:
        return saved
    usable = dict(saved)
    names = {e.guid.hex(): e.vname for e in storage.list_mailboxes() if e.guid is not None}
    for guid, state in saved.items():
        vname = names.get(guid)
        if vname is None:
            continue
        box = storage.open_mailbox(vname)
        try:
            box.refresh()
            status = box.status()
            stale = (
                status.uid_validity != state.last_uidvalidity
                or status.uid_next <= state.last_common_uid
                or status.highest_modseq < state.last_common_modseq
            )
        finally:
            box.close()
        if stale:
            log(f"Warning: Mailbox {vname}: saved state doesn't match, doing a full sync of it")
            del usable[guid]
    return usable


def _stateful_uidvalidity_change(
    session: Session, local: MailboxRecord, remote: MailboxRecord
) -> bool:
    saved = session.saved_states.get(local.mailbox_guid)
    return (
        saved is not None
        and saved.last_common_uid > 0
        and local.uid_validity != remote.uid_validity
    )


def _unchanged_since(saved: MailboxState, local: MailboxRecord) -> bool:
    return (
        saved.last_uidvalidity == local.uid_validity
        and saved.last_common_uid + 1 == local.uid_next
        and saved.last_common_modseq == local.highest_modseq
        and saved.last_common_pvt_modseq == local.highest_pvt_modseq
        and saved.last_messages_count == local.messages_count
    )


def _receive_finish(brain: Brain, channel: Channel) -> None:
    finish = expect(channel, Finish, "F")
    assert isinstance(finish, Finish)
    if finish.require_full_resync:
        brain.outcome.require_full_resync = True
    if finish.error is not None:
        try:
            error = MailError(finish.mail_error) or MailError.TEMP
        except ValueError:
            error = MailError.TEMP
        brain.outcome.fail(f"Remote dsync failed: {finish.error}", error)


def _protocol(message: str) -> ProtocolError:
    return RemoteProtocolError(message)


def run_slave(
    storage: Storage,
    channel: Channel,
    *,
    hostname: str,
    clock: Clock = time.time,
    log: Log = lambda _msg: None,
    user_lock: UserLock | None = None,
    observer: SyncObserver | None = None,
) -> SyncResult:
    brain = Brain(storage, channel, log=log, observer=observer)
    release: Callable[[], None] | None = None
    try:
        own = Handshake(hostname=hostname, hashed_headers=())
        channel.send(own)
        channel.flush()
        handshake = expect(channel, Handshake, "H")
        assert isinstance(handshake, Handshake)
        release = _lock_user(
            user_lock,
            own,
            handshake.hostname,
            master=False,
            log=log,
            timeout=handshake.lock_timeout,
        )
        session = _session(handshake, master=False, saved={})
        check_namespaces(storage, handshake.sync_ns_prefix)
        session.peer_minor = channel.peer_minor_version
        if handshake.sync_type == SYNC_TYPE_STATE:
            while (item := channel.recv()) is not END_OF_LIST:
                if not isinstance(item, MailboxState):
                    raise _protocol("Received unexpected input while waiting for S")
                session.saved_states[item.mailbox_guid] = item
        _attach_all_mail(brain, session, handshake.virtual_all_box)
        brain.exchange_trees(session)
        _slave_mailboxes(brain, session)
    except ProtocolError as exc:
        report_failure(brain.outcome, exc)
        channel.close(send_done=False)  # no X after a protocol error (§11.1)
        return result_from(brain.outcome, None)
    except Exception as exc:
        # A brain failure mid-session ends with `X` only, as Dovecot's slave does (§11.1).
        report_failure(brain.outcome, exc)
        channel.close(send_done=True)
        return result_from(brain.outcome, None)
    finally:
        if release is not None:
            release()
    if session.purge_remote and not brain.outcome.failed:
        _purge(brain)
    _send_finish(brain)
    channel.close(send_done=True)
    return result_from(brain.outcome, None)


def _purge(brain: Brain) -> None:
    """-P: the slave purges after a successful sync; errors are only logged (§8.4)."""
    try:
        brain.storage.purge()
    except DsyncError as exc:
        brain.log(f"Error: Purging namespace failed: {exc}")


def _attach_all_mail(brain: Brain, session: Session, vname: str | None) -> None:
    if vname:
        from .all_mail import AllMail  # -a only: not paid for at start-up

        session.all_mail = AllMail(brain.storage, vname, brain.log)


def check_namespaces(storage: Storage, prefixes: tuple[str, ...] | None) -> None:
    """-n: every named namespace must exist here (a store serves one, its prefix)."""
    for prefix in prefixes or ():
        if prefix.rstrip(storage.separator) != storage.namespace_prefix.rstrip(storage.separator):
            raise UsageError(f"Namespace not found: {prefix}")


def _lock_user(
    user_lock: UserLock | None,
    own: Handshake,
    peer_hostname: str,
    *,
    master: bool,
    log: Log,
    timeout: int | None = None,
) -> Callable[[], None] | None:
    """`-l`: exactly one side takes the user lock, the one with the byte-wise smaller
    hostname, the master on a tie (§10.3)."""
    seconds = own.lock_timeout if timeout is None else timeout
    if user_lock is None or seconds <= 0:
        return None
    mine, theirs = own.hostname.encode(), peer_hostname.encode()
    if mine > theirs or (mine == theirs and not master):
        return None
    log(f"Debug: Locking done locally (local hostname={own.hostname}, remote={peer_hostname})")
    return user_lock(float(seconds))


def _send_finish(brain: Brain) -> None:
    outcome = brain.outcome
    brain.channel.send(
        Finish(
            error="dsync failed" if outcome.failed else None,
            mail_error=int(outcome.mail_error) if outcome.failed else 0,
            require_full_resync=outcome.require_full_resync,
        )
    )


def _slave_mailboxes(brain: Brain, session: Session) -> None:
    while True:
        item = brain.channel.recv()
        if item is END_OF_LIST:
            return
        if isinstance(item, Done):
            raise PeerClosedError("Remote closed the connection")
        if not isinstance(item, MailboxRecord):
            raise _protocol("Received unexpected input while waiting for B")
        _slave_mailbox(brain, session, item)


def _slave_mailbox(brain: Brain, session: Session, remote: MailboxRecord) -> None:
    vname = _find_by_guid(brain.storage, remote.mailbox_guid)
    local = None
    if vname is not None:
        try:
            local = brain.mailbox_record(vname)
        except MailboxNotFoundError:
            local = None
    if vname is None or local is None:
        ignore = session.backup_send and session.no_backup_overwrite
        if not ignore:
            brain.outcome.changed(f"Mailbox GUID {remote.mailbox_guid} was lost")
        brain.channel.send(lost_record(remote.mailbox_guid, ignore=ignore))
        brain.channel.flush()
        return
    if _stateful_uidvalidity_change(session, local, remote):
        # §3.2: the state is void; Dovecot answers "lost" and wants a full resync.
        brain.outcome.changed("UIDVALIDITY changed during a stateful sync, need to restart")
        brain.outcome.require_full_resync = True
        brain.channel.send(lost_record(remote.mailbox_guid, ignore=False))
        brain.channel.flush()
        return
    brain.channel.send(local)
    brain.channel.flush()
    if remote.mailbox_lost or remote.mailbox_ignore or not boxes_need_sync(session, local, remote):
        return
    brain.run_mailbox(session, vname, local, remote)


def _find_by_guid(storage: Storage, guid_hex: str) -> str | None:
    guid = bytes.fromhex(guid_hex)
    for entry in storage.list_mailboxes():
        if entry.guid == guid:
            return entry.vname
    return None


def _session(handshake: Handshake, *, master: bool, saved: dict[str, MailboxState]) -> Session:
    """Settings from the master's handshake; for the master, backup flags mirrored back."""
    backup_send = handshake.backup_recv if master else handshake.backup_send
    backup_recv = handshake.backup_send if master else handshake.backup_recv
    return Session(
        master=master,
        backup_send=backup_send,
        backup_recv=backup_recv,
        no_backup_overwrite=handshake.no_backup_overwrite,
        mail_requests=handshake.send_mail_requests,
        sync_type=handshake.sync_type or "f",
        no_mail_sync=handshake.no_mail_sync,
        tree_filter=mailbox_filter(
            handshake.sync_box, handshake.sync_box_guid, handshake.exclude_mailboxes
        ),
        import_filter=ImportFilter(
            since=handshake.sync_since_timestamp,
            until=handshake.sync_until_timestamp,
            max_size=handshake.sync_max_size,
            flag=handshake.sync_flags,
        ),
        hashed_headers=handshake.hashed_headers or ("Date", "Message-ID"),
        alt_char=handshake.alt_char or "_",
        empty_hdr_workaround=handshake.empty_hdr_workaround,
        purge_remote=handshake.purge_remote,
        saved_states=dict(saved),
    )


def run_local(
    master: Storage,
    slave: Storage,
    settings: SyncSettings,
    *,
    clock: Clock = time.time,
    log: Log = lambda _msg: None,
    timeout: float | None = None,
    user_lock: UserLock | None = None,
    observer: SyncObserver | None = None,
) -> SyncResult:
    """Both brains in this process, the slave in a thread, over a memory channel;
    `observer` watches the master, which sees every body go either way."""
    master_channel, slave_channel = channel_pair(timeout)
    slave_result: list[SyncResult] = []

    def slave_thread() -> None:
        try:
            slave_result.append(
                run_slave(slave, slave_channel, hostname=settings.hostname, clock=clock, log=log)
            )
        except BaseException:
            slave_channel.close(send_done=False)  # let the master see EOF, not hang
            raise

    thread = threading.Thread(target=slave_thread, name="dsync-slave", daemon=True)
    thread.start()
    result = run_master(
        master,
        master_channel,
        settings,
        clock=clock,
        log=log,
        user_lock=user_lock,
        observer=observer,
    )
    thread.join()
    if slave_result:
        _merge_local_slave(result, slave_result[0])
    return result


def _merge_local_slave(result: SyncResult, slave: SyncResult) -> None:
    """In local mode both brains' outcomes count (§3.10)."""
    result.errors.extend(slave.errors)
    if result.changes_during_sync is None and slave.changes_during_sync is not None:
        result.changes_during_sync = slave.changes_during_sync
        if result.exit_code == 0:
            result.exit_code = slave.exit_code
    if slave.exit_code not in (0, 2) and (
        result.exit_code in (0, 2) or slave.exit_code != ExitCode.TEMPFAIL
    ):
        # The slave's own error says more than the master's "remote closed".
        result.exit_code = slave.exit_code
