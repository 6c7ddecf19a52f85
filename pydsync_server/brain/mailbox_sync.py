"""The per-mailbox conversation once both `B` items are exchanged (§7.2, §1.3).

Written as a straight sequence per side: each step waits only for what the protocol
says it waits for, and the channel never blocks a send, so two sides running this
(with their roles) cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

from ..errors import RemoteProtocolError
from ..protocol.channel import Channel
from ..protocol.items import (
    END_OF_LIST,
    Item,
    Mail,
    MailboxAttribute,
    MailboxState,
    MailChange,
    MailRequest,
)
from ..protocol.items import Mailbox as MailboxRecord
from ..storage.base import Mailbox
from .events import SyncObserver, observe_received, observe_sent
from .exporter import Exporter, ExportOptions
from .filters import ImportFilter
from .importer import AllMailLookup, Importer, ImportOptions, ImportResult

T = TypeVar("T")

# How long an exporter waits for the peer to finish reading the bodies it was given
# (only the in-process channel hands bodies over unread), as Dovecot's -T default.
BODY_RELEASE_TIMEOUT = 600.0


@dataclass(frozen=True)
class Role:
    """What this side does per mailbox: export, import, and whether requests flow."""

    exporter: bool
    importer: bool
    mail_requests: bool
    master: bool
    revert: bool  # backup destination without -1: become a copy of the source
    peer_minor: int


@dataclass(frozen=True)
class SyncOptions:
    hashed_headers: tuple[str, ...]
    hash_version: int
    filter: ImportFilter
    empty_hdr_workaround: bool = False
    backup_send: bool = False
    backup_recv: bool = False
    all_mail: AllMailLookup | None = None


@dataclass
class MailboxOutcome:
    state: MailboxState
    import_result: ImportResult | None
    warnings: list[str]


def guids_usable(
    local: MailboxRecord, remote: MailboxRecord, role: Role, opts: SyncOptions
) -> bool:
    """Whether messages are matched by GUID or by header hash (§3.3)."""
    if role.importer:
        return local.have_save_guids and (
            remote.have_save_guids or (opts.backup_recv and remote.have_guids)
        )
    return remote.have_save_guids and (
        local.have_save_guids or (opts.backup_send and local.have_guids)
    )


def sync_mailbox(
    channel: Channel,
    mailbox: Mailbox,
    local: MailboxRecord,
    remote: MailboxRecord,
    saved: MailboxState | None,
    role: Role,
    opts: SyncOptions,
    observer: SyncObserver | None = None,
) -> MailboxOutcome:
    return _MailboxSync(channel, mailbox, local, remote, saved, role, opts, observer).run()


class _MailboxSync:
    """One side of steps 6a-6e for one mailbox."""

    def __init__(
        self,
        channel: Channel,
        mailbox: Mailbox,
        local: MailboxRecord,
        remote: MailboxRecord,
        saved: MailboxState | None,
        role: Role,
        opts: SyncOptions,
        observer: SyncObserver | None = None,
    ) -> None:
        self.channel = channel
        self.observer = observer
        self.mailbox = mailbox
        self.local = local
        self.remote = remote
        self.role = role
        self.opts = opts
        self.warnings: list[str] = []
        self.last_uid = saved.last_common_uid if saved else 0
        self.last_modseq = saved.last_common_modseq if saved else 0
        self.usable = guids_usable(local, remote, role, opts)
        self.exporter: Exporter | None = None
        self.importer: Importer | None = None

    def run(self) -> MailboxOutcome:
        try:
            if self.role.exporter:
                self.send_changes()
            if self.role.importer:
                self.receive_changes()
            if self.exporter is not None:
                self.send_mails()
            if self.importer is not None:
                self.receive_mail_bodies()
                if self.exporter is not None:
                    self.exporter.wait_bodies_released(BODY_RELEASE_TIMEOUT)
                result: ImportResult | None = self.importer.finish()
            else:
                result = None
        except BaseException:
            if self.importer is not None:
                self.importer.tx.rollback()  # nothing half-imported becomes visible
            raise
        return self.exchange_states(result)

    def send_changes(self) -> None:
        self.exporter = Exporter(
            self.mailbox,
            ExportOptions(
                last_common_uid=self.last_uid,
                last_common_modseq=self.last_modseq,
                guids_usable=self.usable,
                remote_is_empty=self.remote.messages_count == 0,
                hashed_headers=self.opts.hashed_headers,
                hash_version=self.opts.hash_version,
                with_timestamps=bool(self.opts.filter.since or self.opts.filter.until),
                with_sizes=bool(self.opts.filter.max_size),
            ),
        )
        if self.role.peer_minor >= 1:
            for attribute in self.exporter.attributes():
                self.channel.send(attribute)
            self.channel.send(END_OF_LIST)
        for change in self.exporter.changes():
            self.channel.send(change)
        self.channel.send(END_OF_LIST)
        self.channel.flush()

    def receive_changes(self) -> None:
        opts, local, remote = self.opts, self.local, self.remote
        self.importer = importer = Importer(
            self.mailbox,
            remote,
            ImportOptions(
                last_common_uid=self.last_uid,
                last_common_modseq=self.last_modseq,
                master=self.role.master,
                revert=self.role.revert,
                guids_usable=self.usable,
                use_guid128=local.have_only_guid128 or remote.have_only_guid128,
                empty_hdr_workaround=opts.empty_hdr_workaround,
                hashed_headers=opts.hashed_headers,
                hash_version=opts.hash_version,
                filter=opts.filter,
            ),
            warn=self.warnings,
            all_mail=opts.all_mail,
        )
        if self.role.peer_minor >= 1:
            for attribute in _receive_list(self.channel, MailboxAttribute):
                importer.import_attribute(attribute)
        for change in _receive_list(self.channel, MailChange):
            importer.import_change(change)
        requests = importer.changes_finish()
        if self.observer is not None:
            self.observer.transfer_planned(self.mailbox.vname, outgoing=False, count=len(requests))
        if self.role.mail_requests:
            for request in requests:
                self.channel.send(request)
            self.channel.send(END_OF_LIST)
            self.channel.flush()

    def send_mails(self) -> None:
        assert self.exporter is not None
        planned: int | None = None
        if self.role.mail_requests:
            wanted = list(_receive_list(self.channel, MailRequest))
            mails = self.exporter.mails_for(wanted)
            planned = len(wanted)
        else:
            mails = self.exporter.all_saved_mails()
        if self.observer is not None:
            mails = observe_sent(self.observer, self.mailbox.vname, mails, planned)
        for mail in mails:
            self.channel.send(mail)
        self.channel.send(END_OF_LIST)
        self.channel.flush()

    def receive_mail_bodies(self) -> None:
        assert self.importer is not None
        mails: Iterator[Mail] = _receive_list(self.channel, Mail)
        if self.observer is not None:
            mails = observe_received(self.observer, self.mailbox.vname, mails)
        for mail in mails:
            try:
                self.importer.import_mail(mail)
            finally:
                if mail.body is not None:
                    mail.body.close()

    def exchange_states(self, result: ImportResult | None) -> MailboxOutcome:
        state = _local_state(self.mailbox, self.local, self.remote, result)
        self.channel.send(state)
        self.channel.flush()
        peer_state = self.channel.recv()
        if not isinstance(peer_state, MailboxState):
            raise RemoteProtocolError(
                "Remote sent end-of-list instead of a mailbox state"
                if peer_state is END_OF_LIST
                else f"Received unexpected input {_char(peer_state)} != S"
            )
        return MailboxOutcome(_merge_states(state, peer_state), result, self.warnings)


def _local_state(
    mailbox: Mailbox, local: MailboxRecord, remote: MailboxRecord, result: ImportResult | None
) -> MailboxState:
    if result is None:
        return MailboxState(
            mailbox_guid=local.mailbox_guid,
            last_uidvalidity=local.uid_validity,
            last_common_uid=local.uid_next - 1,
            last_common_modseq=local.highest_modseq,
            last_common_pvt_modseq=local.highest_pvt_modseq,
            last_messages_count=local.messages_count,
        )
    resync = result.require_full_resync
    return MailboxState(
        mailbox_guid=local.mailbox_guid,
        last_uidvalidity=0 if resync else mailbox.status().uid_validity,
        last_common_uid=result.last_common_uid,
        last_common_modseq=result.last_common_modseq,
        last_common_pvt_modseq=remote.highest_pvt_modseq,
        last_messages_count=result.messages_count,
        changes_during_sync=resync or result.changes_during_sync is not None,
    )


def _merge_states(own: MailboxState, peer: MailboxState) -> MailboxState:
    return MailboxState(
        mailbox_guid=own.mailbox_guid,
        last_uidvalidity=own.last_uidvalidity,
        last_common_uid=min(own.last_common_uid, peer.last_common_uid),
        last_common_modseq=min(own.last_common_modseq, peer.last_common_modseq),
        last_common_pvt_modseq=min(own.last_common_pvt_modseq, peer.last_common_pvt_modseq),
        last_messages_count=own.last_messages_count,
        changes_during_sync=peer.changes_during_sync,
    )


def _receive_list(channel: Channel, kind: type[T]) -> Iterator[T]:
    """Items of one list as they arrive (bodies are never all held at once)."""
    while True:
        item = channel.recv()
        if item is END_OF_LIST:
            return
        if not isinstance(item, kind):
            raise RemoteProtocolError(
                f"Received unexpected input {_char(item)} != {_CHARS.get(kind, '?')}"
            )
        yield item


_CHARS: dict[type, str] = {
    MailChange: "C",
    MailRequest: "R",
    Mail: "M",
    MailboxAttribute: "A",
    MailboxState: "S",
}


def _char(item: Item) -> str:
    if item is END_OF_LIST:
        return "."
    return _CHARS.get(type(item), type(item).__name__)
