"""Import the peer's changes and mails into one local mailbox (dsync-algorithm.md §3.6).

Both brains run this with the roles swapped and must reach the same UIDs, so every
decision depends only on the two UID-ordered lists and the two `B` records: find the
last common UID, merge the new mails of both sides by (GUID or header hash, UID),
assign new UIDs above both UIDNEXTs, then move, copy or request bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import MailError, StorageError
from ..protocol.items import (
    SYSTEM_FLAGS_MASK,
    Mail,
    MailboxAttribute,
    MailChange,
    MailRequest,
)
from ..protocol.items import Mailbox as MailboxRecord
from ..storage.base import (
    Attribute,
    Mailbox,
    MessageChange,
    MessageInfo,
    NewMessage,
    guid128,
)
from .attributes import remote_wins
from .exporter import guid_key
from .filters import ImportFilter
from .flag_merge import merge_flags, merge_keywords
from .hdr_hash import header_hash


@dataclass(frozen=True)
class ImportOptions:
    last_common_uid: int = 0
    last_common_modseq: int = 0
    master: bool = False
    revert: bool = False  # backup destination: become the source
    guids_usable: bool = True
    use_guid128: bool = False
    empty_hdr_workaround: bool = False
    hashed_headers: tuple[str, ...] = ("Date", "Message-ID")
    hash_version: int = 3
    filter: ImportFilter = field(default_factory=ImportFilter)


# -a: a message of the all-mail mailbox by GUID (its body and info), or None.
AllMailLookup = Callable[[str], "tuple[BinaryIO, MessageInfo] | None"]


@dataclass
class NewMail:
    """An entry of the new-mail list: one message, local and/or remote instance."""

    key: str
    final_uid: int
    usable: bool
    local: MessageInfo | None = None
    remote: MailChange | None = None
    link: NewMail | None = None
    skip: bool = False


@dataclass
class ImportResult:
    last_common_uid: int
    last_common_modseq: int
    messages_count: int
    changes_during_sync: str | None = None
    require_full_resync: bool = False
    failed: bool = False
    delete_mailbox: bool = False
    error: str | None = None


class LocalMessages:
    """The local messages by UID: every one above `listed_above` given up front, older
    ones looked up when first asked for. Expunging one here takes it out."""

    def __init__(self, mailbox: Mailbox, listed: list[MessageInfo], listed_above: int) -> None:
        self._mailbox = mailbox
        self._listed_above = listed_above
        self._found: dict[int, MessageInfo | None] = {info.uid: info for info in listed}

    def get(self, uid: int) -> MessageInfo | None:
        if uid not in self._found:
            if uid <= self._listed_above:
                self._found[uid] = self._mailbox.message(uid)
            else:
                return None
        return self._found[uid]

    def __contains__(self, uid: int) -> bool:
        return self.get(uid) is not None

    def __delitem__(self, uid: int) -> None:
        self._found[uid] = None


class Importer:
    def __init__(
        self,
        mailbox: Mailbox,
        remote: MailboxRecord,
        options: ImportOptions,
        *,
        warn: list[str],
        all_mail: AllMailLookup | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.all_mail = all_mail
        self.remote = remote
        self.opts = options
        self.warn = warn
        status = mailbox.status()
        self.local_uid_next = status.uid_next
        self.last_common_uid = options.last_common_uid
        self.common_found = options.last_common_uid != 0 or options.last_common_modseq != 0
        # With the common UID known the walk starts above it, and older messages are
        # looked up by UID as the peer names them (Dovecot's importer searches so too).
        listed_above = self.last_common_uid if self.common_found else 0
        self.local = list(mailbox.messages(listed_above))
        self.local_by_uid = LocalMessages(mailbox, self.local, listed_above)
        # A saved modseq above anything this mailbox handed out is another program's
        # number (doveadm's state quotes Dovecot's index): use the whole local log.
        self.known_modseq = (
            options.last_common_modseq if options.last_common_modseq <= status.highest_modseq else 0
        )
        self.local_log = self._local_log(self.known_modseq)
        self._history_start = mailbox.history_start()
        self.cursor = self._cursor_start(self.last_common_uid)
        self.changed_uids: set[int] = set()
        self.maybe_expunge: list[int] = []
        self.remote_expunged: set[int] = set()  # explicit `e` changes seen while searching
        self.unlisted: list[int] = []  # below the common UID, the peer never listed them
        self.delayed: list[MailChange] = []
        self.newmails: list[NewMail] = []
        self.groups: dict[str, list[NewMail]] = {}
        self.waiting: dict[str, list[NewMail]] = {}
        self.tx = mailbox.transaction()
        self.failed_reason: str | None = None
        self.require_full_resync = False
        self.delete_mailbox = False
        self._hash_cache: dict[int, str] = {}
        self._attributes: dict[tuple[str, str], Attribute] | None = None
        self._sanity_check()

    def _local_log(self, modseq: int) -> dict[int, MessageChange]:
        changes = self.mailbox.changes_since(modseq)
        if changes is None:  # the log doesn't reach back that far: all it still knows
            changes = self.mailbox.changes_since(0) or []
        return {change.uid: change for change in changes}

    def _local_record(self, info: MessageInfo) -> MessageChange | None:
        """The local change to merge; with no log back to the state, the current flags
        count as added (as the exporter offers them), so the merge keeps them."""
        record = self.local_log.get(info.uid)
        if record is None and info.modseq < self._history_start:
            ops = tuple("+" + kw for kw in sorted(info.keywords))
            return MessageChange(info.uid, info.modseq, add_flags=info.flags, keyword_ops=ops)
        return record

    def _sanity_check(self) -> None:
        if self.opts.last_common_uid and self.local_uid_next <= self.opts.last_common_uid:
            self._unexpected_state("local UIDNEXT <= last common UID")

    def _unexpected_state(self, why: str) -> None:
        self.warn.append(
            f"Mailbox {self.mailbox.vname} doesn't match previous state: {why} "
            "(dsync must be run again without the state)"
        )
        self.require_full_resync = True

    def _cursor_start(self, above: int) -> int:
        for index, info in enumerate(self.local):
            if info.uid > above:
                return index
        return len(self.local)

    def _cursor_msg(self) -> MessageInfo | None:
        return self.local[self.cursor] if self.cursor < len(self.local) else None

    # --- keys ------------------------------------------------------------------------

    def _local_key(self, info: MessageInfo) -> str:
        if self.opts.guids_usable:
            return guid_key(info.guid, self.opts.use_guid128)
        cached = self._hash_cache.get(info.uid)
        if cached is None:
            with self.mailbox.open_message(info.uid) as body:
                cached = header_hash(body, self.opts.hashed_headers, self.opts.hash_version)
            self._hash_cache[info.uid] = cached
        return cached

    def _remote_key(self, change: MailChange) -> str:
        if self.opts.guids_usable:
            return guid_key(change.guid or "", self.opts.use_guid128)
        return change.hdr_hash or ""

    def _same_message(self, info: MessageInfo, change: MailChange) -> bool:
        if change.type == "e" or (self.opts.use_guid128 and change.guid):
            if not change.guid:
                return False
            return guid128(info.guid).hex() == guid_key(change.guid, True)
        local, remote = self._local_key(info), self._remote_key(change)
        if self.opts.empty_hdr_workaround and not self.opts.guids_usable:
            if _is_empty_hash(local) or _is_empty_hash(remote):
                return True
        return local == remote

    # --- attributes (§5) -----------------------------------------------------------------

    def import_attribute(self, remote: MailboxAttribute) -> None:
        if self.require_full_resync or self.failed_reason:
            return
        if self._attributes is None:
            self._attributes = {(a.type, a.key): a for a in self.mailbox.attributes()}
        local = self._attributes.get((remote.type, remote.key))
        if not remote_wins(remote, local, self.known_modseq):
            return
        value = None if remote.deleted else remote.value
        try:
            self.tx.set_attribute(remote.type, remote.key, value, remote.last_change)
        except StorageError as exc:
            # Dovecot logs attribute errors and goes on (§5).
            self.warn.append(f"Mailbox {self.mailbox.vname}: attribute {remote.key}: {exc}")

    # --- change import (§3.6.2, §3.6.3) --------------------------------------------------

    def import_change(self, change: MailChange) -> None:
        if self.require_full_resync or self.failed_reason:
            return
        self.changed_uids.add(change.uid)
        if not self.common_found:
            self._find_common(change)
        if change.type == "e":
            self._import_expunge(change)
        elif change.uid <= self.last_common_uid:
            self._flag_change(change)
        elif self.common_found:
            if self.opts.filter.wants(change):
                self._try_save(change)
        else:
            self.delayed.append(change)

    def _find_common(self, change: MailChange) -> None:
        while (msg := self._cursor_msg()) is not None and msg.uid < change.uid:
            if msg.uid not in self.changed_uids:
                self.maybe_expunge.append(msg.uid)
            self.cursor += 1
        msg = self._cursor_msg()
        if msg is None:
            self._find_common_past_end(change)
            return
        if change.guid is None:
            return
        if msg.uid == change.uid:
            if self._same_message(msg, change):
                self.last_common_uid = change.uid
            elif self.opts.revert and change.type != "e":
                self._revert_existing_uid(change)
            else:
                self._set_common_found()
            return
        if not self.opts.filter.wants(change) and change.type == "s":
            return
        if self.opts.revert and change.type != "e":
            self._revert_missing(change)
        else:
            self._expunged_check(change)

    def _find_common_past_end(self, change: MailChange) -> None:
        if change.type == "e" or not self.opts.filter.wants(change):
            return
        if change.uid >= self.local_uid_next:
            self._set_common_found()
        elif self.opts.revert:
            self._revert_missing(change)
        elif not self._expunged_check(change):
            self._set_common_found()

    def _expunged_check(self, change: MailChange) -> bool:
        """True when decided: our log shows this UID expunged (§3.6.2 expunged-check)."""
        record = self.local_log.get(change.uid)
        if not change.guid or record is None or not record.expunged or record.guid128 is None:
            return False
        if record.guid128.hex() == guid_key(change.guid, True):
            self.last_common_uid = change.uid
        elif change.type != "e":
            self._set_common_found()
        return True

    def _set_common_found(self) -> None:
        if self.common_found:
            return
        self.common_found = True
        self.cursor = self._cursor_start(self.last_common_uid)
        for uid in self.maybe_expunge:
            if uid > self.last_common_uid:
                continue
            if self.opts.revert or uid in self.remote_expunged:
                self._expunge_local(uid)
            else:
                self.unlisted.append(uid)
        delayed, self.delayed = self.delayed, []
        for change in delayed:
            if change.uid > self.last_common_uid and self.opts.filter.wants(change):
                self._try_save(change)

    def _import_expunge(self, change: MailChange) -> None:
        if change.uid > self.last_common_uid:
            if not self.common_found and self._cursor_msg() is not None:
                msg = self._cursor_msg()
                if msg is not None and msg.uid == change.uid:
                    self.maybe_expunge.append(change.uid)
                    self.remote_expunged.add(change.uid)
            return
        info = self.local_by_uid.get(change.uid)
        if info is None:
            return
        if change.guid and guid128(info.guid).hex() != guid_key(change.guid, True):
            self._unexpected_state(f"GUID mismatch for expunged UID {change.uid}")
            return
        self._expunge_local(change.uid)

    def _expunge_local(self, uid: int) -> None:
        if uid in self.local_by_uid:
            self.tx.expunge(uid)
            del self.local_by_uid[uid]

    def _revert_missing(self, change: MailChange) -> None:
        self._revert(f"UID={change.uid} GUID={change.guid} is missing locally")

    def _revert_existing_uid(self, change: MailChange) -> None:
        self._revert(f"UID={change.uid} already exists locally for a different mail")

    def _revert(self, why: str) -> None:
        self.warn.append(f"Deleting mailbox '{self.mailbox.vname}': {why}")
        self.delete_mailbox = True
        self.failed_reason = why

    # --- flags (§3.6.6) ----------------------------------------------------------------

    def _flag_change(self, change: MailChange) -> None:
        info = self.local_by_uid.get(change.uid)
        if info is None:
            return
        if change.guid and not self._same_message(info, change):
            self._unexpected_state(f"Unexpected GUID mismatch for UID={change.uid}")
            return
        remote_final = change.final_flags & SYSTEM_FLAGS_MASK
        remote_kw = (
            frozenset(op[1:] for op in change.keyword_changes if op[0] in "=&")
            if change.keyword_changes
            else _NO_KEYWORDS
        )
        if self.opts.revert:
            wanted = (change.add_flags | change.final_flags) & SYSTEM_FLAGS_MASK
            wanted_kw = {op[1:] for op in change.keyword_changes if op[0] in "+=&"}
            self._apply_flags(info, wanted, frozenset(wanted_kw), change.modseq)
            return
        record = self._local_record(info)
        prefer_remote = info.modseq < change.modseq or (
            info.modseq == change.modseq and not self.opts.master
        )
        flags, remote_changed = merge_flags(info.flags, remote_final, record, change, prefer_remote)
        keywords, kw_changed = merge_keywords(
            info.keywords, remote_kw, record, change, prefer_remote
        )
        modseq = change.modseq
        if (remote_changed or kw_changed) and modseq <= self.remote.highest_modseq:
            modseq = self.remote.highest_modseq + 1
        self._apply_flags(info, flags, keywords, modseq)

    def _apply_flags(
        self, info: MessageInfo, flags: int, keywords: frozenset[str], modseq: int
    ) -> None:
        if flags == info.flags and keywords == info.keywords and modseq <= info.modseq:
            return
        self.tx.update_flags(
            info.uid,
            add_flags=flags & ~info.flags,
            remove_flags=info.flags & ~flags,
            add_keywords=keywords - info.keywords,
            remove_keywords=info.keywords - keywords,
            min_modseq=modseq,
        )

    # --- new mail list (§3.6.4) ----------------------------------------------------------

    def _try_save(self, save: MailChange | None) -> None:
        while True:
            msg = self._cursor_msg()
            if msg is not None and msg.uid <= self.last_common_uid:
                self.cursor += 1
                continue
            if msg is None and save is None:
                return
            order = self._compare(msg, save)
            if order < 0 and msg is not None:
                if self.opts.revert:
                    if save is None and msg.uid >= self.remote.uid_next:
                        self._revert(f"UID={msg.uid} already exists locally for a different mail")
                        return
                    self._expunge_local(msg.uid)
                else:
                    self._add_newmail(
                        NewMail(
                            self._local_key(msg),
                            msg.uid,
                            msg.uid >= self.remote.uid_next,
                            local=msg,
                        )
                    )
                self.cursor += 1
                if save is None:
                    continue
                continue
            if save is None:
                return
            if order > 0 or msg is None:
                usable = save.uid >= self.local_uid_next
                if self.opts.revert and not usable:
                    self._revert_existing_uid(save)
                    return
                self._add_newmail(NewMail(self._remote_key(save), save.uid, usable, remote=save))
                return
            self._add_newmail(NewMail(self._local_key(msg), msg.uid, True, local=msg, remote=save))
            self.cursor += 1
            return

    def _compare(self, msg: MessageInfo | None, save: MailChange | None) -> int:
        if msg is None:
            return 1
        if save is None:
            return -1
        lkey, rkey = self._local_key(msg), self._remote_key(save)
        if self.opts.empty_hdr_workaround and not self.opts.guids_usable:
            if _is_empty_hash(lkey) or _is_empty_hash(rkey):
                lkey = rkey = ""
        if lkey != rkey:
            return -1 if _bytes(lkey) < _bytes(rkey) else 1
        return (msg.uid > save.uid) - (msg.uid < save.uid)

    def _add_newmail(self, entry: NewMail) -> None:
        self.newmails.append(entry)
        if not entry.key:
            return
        group = self.groups.setdefault(entry.key, [])
        if group:
            for other in group:
                if other.final_uid == entry.final_uid:
                    other.usable = True
            for other in group:
                if other.link is None and (other.local is None) != (entry.local is None):
                    other.link, entry.link = entry, other
                    break
        group.append(entry)

    # --- changes_finish (§3.6.5) ---------------------------------------------------------

    def changes_finish(self) -> list[MailRequest]:
        if self.require_full_resync or self.failed_reason:
            return []
        self._set_common_found()
        self._try_save(None)
        if self.failed_reason:
            return []
        self._offer_unlisted()
        self._assign_uids()
        return self._place_messages()

    def _offer_unlisted(self) -> None:
        """Local mail below the common UID that the peer did not list.

        Dovecot concludes the peer expunged it and expunges it here (§3.6.2). With no
        expunge record to prove that, it is as likely a hole a filtered sync (-t/-e/-I/-O)
        or a partial restore left on the peer (pitfall 24): rather than lose it, give it
        a new UID above both sides, so the next run copies it to the peer.
        """
        for uid in self.unlisted:
            info = self.local_by_uid.get(uid)
            if info is not None:
                self._add_newmail(NewMail(self._local_key(info), uid, False, local=info))

    def _assign_uids(self) -> None:
        next_uid = max(self.local_uid_next, self.remote.uid_next)
        for entry in self.newmails:
            if entry.skip:
                continue
            if entry.usable:
                pass
            elif entry.link is not None and entry.link.usable:
                entry.final_uid = entry.link.final_uid
            else:
                entry.final_uid = next_uid
                next_uid += 1
            if entry.link is not None and entry.link is not entry:
                entry.link.skip = True
                entry.local = entry.local or entry.link.local
                entry.remote = entry.remote or entry.link.remote
        self.last_common_uid = next_uid - 1

    def _place_messages(self) -> list[MailRequest]:
        requests: list[MailRequest] = []
        taken = {e.final_uid for e in self.newmails if not e.skip}
        for entry in sorted(self._live_entries(), key=lambda e: e.final_uid):
            if entry.local is not None:
                if entry.local.uid != entry.final_uid:
                    self._move_or_copy(entry.local, entry.final_uid, taken)
                continue
            assert entry.remote is not None
            local_copy = self._local_instance(entry.key)
            if local_copy is not None:
                self._copy(local_copy, entry)
                continue
            if entry.remote.guid and self.all_mail is not None:
                if self._copy_from_all_mail(entry.remote.guid, entry):
                    continue
            wait_key = entry.remote.guid or f"uid:{entry.remote.uid}"
            if wait_key not in self.waiting:
                requests.append(MailRequest(guid=entry.remote.guid or None, uid=entry.remote.uid))
            self.waiting.setdefault(wait_key, []).append(entry)
        return requests

    def _copy_from_all_mail(self, guid: str, entry: NewMail) -> bool:
        """-a: copy a message this mailbox lacks from the all-mail mailbox (§3.7)."""
        assert self.all_mail is not None and entry.remote is not None
        found = self.all_mail(guid)
        if found is None:
            return False
        body, info = found
        change = entry.remote
        with body:
            self.tx.save(
                NewMessage(
                    uid=entry.final_uid,
                    guid=guid,
                    body=body,
                    flags=change.final_flags & SYSTEM_FLAGS_MASK,
                    keywords=frozenset(op[1:] for op in change.keyword_changes if op[0] in "+=&"),
                    received_date=info.received_date,
                    saved_date=info.saved_date,
                    min_modseq=change.modseq if change.modseq > 1 else 0,
                )
            )
        return True

    def _live_entries(self) -> Iterator[NewMail]:
        return (entry for entry in self.newmails if not entry.skip)

    def _local_instance(self, key: str) -> MessageInfo | None:
        if not key or not self.opts.guids_usable:
            return None
        for entry in self.groups.get(key, []):
            if entry.local is not None and entry.local.uid in self.local_by_uid:
                return entry.local
        return None

    def _move_or_copy(self, info: MessageInfo, final_uid: int, taken: set[int]) -> None:
        if info.uid in taken:
            self._copy_message(info, final_uid, info.flags, info.keywords, info.modseq)
        else:
            self.tx.move(info.uid, final_uid)

    def _copy(self, source: MessageInfo, entry: NewMail) -> None:
        change = entry.remote
        assert change is not None
        flags = change.final_flags & SYSTEM_FLAGS_MASK
        keywords = frozenset(op[1:] for op in change.keyword_changes if op[0] in "+=&")
        self._copy_message(source, entry.final_uid, flags, keywords, change.modseq)

    def _copy_message(
        self, source: MessageInfo, uid: int, flags: int, keywords: frozenset[str], modseq: int
    ) -> None:
        with self.mailbox.open_message(source.uid) as body:
            self.tx.save(
                NewMessage(
                    uid=uid,
                    guid=source.guid,
                    body=body,
                    flags=flags,
                    keywords=keywords,
                    received_date=source.received_date,
                    saved_date=source.saved_date or self.mailbox.saved_date(source.uid),
                    min_modseq=modseq if modseq > 1 else 0,
                )
            )

    # --- bodies (§3.6.7) ------------------------------------------------------------------

    def import_mail(self, mail: Mail) -> None:
        key = mail.guid if mail.guid else f"uid:{mail.uid}"
        entries = self.waiting.pop(key, None)
        if entries is None:
            self.warn.append(
                f"Mailbox {self.mailbox.vname}: Remote sent unwanted message body for "
                f"GUID={mail.guid} UID={mail.uid}"
            )
            return
        if mail.body is None:
            return  # expunged by the sender meanwhile
        body = mail.body if len(entries) == 1 else _seekable(mail.body)
        for entry in entries:
            change = entry.remote
            assert change is not None
            if len(entries) > 1:
                body.seek(0)
            self.tx.save(
                NewMessage(
                    uid=entry.final_uid,
                    guid=change.guid or "",
                    body=body,
                    flags=change.final_flags & SYSTEM_FLAGS_MASK,
                    keywords=frozenset(op[1:] for op in change.keyword_changes if op[0] in "+=&"),
                    received_date=mail.received_date,
                    saved_date=mail.saved_date,
                    min_modseq=change.modseq if change.modseq > 1 else 0,
                    pop3_uidl=mail.pop3_uidl or "",
                    pop3_order=mail.pop3_order,
                )
            )

    # --- finish (§3.6.8) ------------------------------------------------------------------

    def finish(self) -> ImportResult:
        if self.failed_reason is None and not self.require_full_resync:
            for key, entries in self.waiting.items():
                uid = entries[0].remote.uid if entries[0].remote else 0
                what = f"GUID={key}" if not key.startswith("uid:") else "mail"
                self.failed_reason = f"Remote didn't send {what} (UID={uid})"
                break
        if self.failed_reason is not None and not self.delete_mailbox:
            self.tx.rollback()
            return self._result(failed=True)
        if self.delete_mailbox:
            self.tx.rollback()
            return self._result(failed=True)
        try:
            if not self.require_full_resync:  # the mailbox update only after success (§3.6.8)
                self.tx.raise_uid_next(self.remote.uid_next)
                self.tx.raise_first_recent_uid(
                    min(self.last_common_uid + 1, self.remote.first_recent_uid)
                )
                self.tx.raise_highest_modseq(self._new_highest_modseq())
            self.tx.commit()
        except StorageError as exc:
            self.failed_reason = str(exc)
            return self._result(failed=True, mail_error=exc.mail_error)
        return self._result(failed=self.require_full_resync)

    def _new_highest_modseq(self) -> int:
        """The peer's HIGHESTMODSEQ, on both sides (§3.6.8), so that two unchanged
        mailboxes compare equal and fast mode skips them. Two sides that change
        independently could still meet on one value (pitfall 22); pydsync's own stores
        make that unlikely by stepping their modseq by a random amount for such changes."""
        return self.remote.highest_modseq

    def _result(self, *, failed: bool, mail_error: MailError = MailError.TEMP) -> ImportResult:
        self.mailbox.refresh()
        return ImportResult(
            last_common_uid=self.last_common_uid,
            last_common_modseq=self.remote.highest_modseq,
            messages_count=self.mailbox.status().messages,
            require_full_resync=self.require_full_resync,
            failed=failed,
            delete_mailbox=self.delete_mailbox,
            error=self.failed_reason,
        )


def _is_empty_hash(value: str) -> bool:
    return value in ("", "68b329da9893e34099c7d8ad5cb9c940")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _seekable(body: BinaryIO) -> BinaryIO:
    """A body saved under several UIDs is read several times."""
    if body.seekable():
        return body
    import shutil  # only for an unseekable body: not paid for at start-up
    import tempfile

    spool = tempfile.SpooledTemporaryFile(max_size=1 << 20)
    shutil.copyfileobj(body, spool)
    return spool  # type: ignore[return-value]


_NO_KEYWORDS: frozenset[str] = frozenset()
