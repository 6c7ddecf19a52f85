"""The mailbox-index half of an mdbox commit: one dsync transaction appended to the
mailbox's `dovecot.index.log` under its fcntl lock (storage-formats.md §3.4, §3.7, §6.7).

New messages (saves and the new UIDs of moves) are appended in UID order with their
`mdbox` (map_uid, save date) and `guid` records; a UID that a delivery took meanwhile
is replaced by the next free one, so both messages are kept. Returns the map_uids the
mailbox stopped referencing (their refcounts are decremented after this commit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import MailboxNotFoundError, StorageError
from .base import NewMessage
from .changes import SYSTEM_FLAGS_MASK
from .dovecot_index import (
    GUID,
    MDBOX,
    MDBOX_HDR,
    AttributeChange,
    IndexState,
    locked_log,
    read_index,
)
from .dovecot_index import Transaction as LogTransaction
from .mdbox_mailbox import BOX_HDR, BOX_REC, BoxHeader, box_header, box_record

if TYPE_CHECKING:
    from .mdbox_mailbox import MdboxMailbox
    from .recording import Ops


@dataclass(frozen=True)
class NewRecord:
    """A saved message as the index gets it."""

    message: NewMessage
    map_uid: int
    guid128: bytes
    save_date: int


@dataclass
class _Entry:
    uid: int
    flags: int
    keywords: frozenset[str]
    map_uid: int
    save_date: int
    guid128: bytes
    min_modseq: int = 0


class IndexCommit:
    def __init__(self, box: MdboxMailbox, records: list[NewRecord], ops: Ops) -> None:
        self._box = box
        self._records = records
        self._ops = ops

    def run(self) -> list[int]:
        box = self._box
        undo: Callable[[], None] | None = None
        try:
            with locked_log(box.paths.log) as locked:
                state = read_index(box.paths, locked.data).state
                header = box_header(state)
                if header is None:
                    raise MailboxNotFoundError(f"{box.paths.log}: mailbox index has no header")
                undo = self._write_attributes(header)
                t = LogTransaction(sync=True)
                released = self._build(t, state, header)
                if t:
                    locked.append(t)
        except FileNotFoundError:
            if undo is not None:
                undo()
            raise MailboxNotFoundError(f"Mailbox doesn't exist: {box.vname}") from None
        except BaseException:
            if undo is not None:
                undo()
            raise
        return released

    def _write_attributes(self, header: BoxHeader) -> Callable[[], None] | None:
        """Values go to the attribute dict (keyed by the mailbox GUID, moved along when
        the GUID changes); the log only stamps the change (§7.7)."""
        ops, attrs = self._ops, self._box.ctx.attributes
        moving = ops.guid is not None and ops.guid != header.guid and attrs.path.exists()
        if not ops.attributes and not moving:
            return None
        return attrs.update(header.guid, dict(_values(ops.attributes)), ops.guid)

    def _build(self, t: LogTransaction, state: IndexState, header: BoxHeader) -> list[int]:
        ops = self._ops
        t.enable_modseqs(state)  # per-message modseqs, as dsync enables them
        entries, moved_out = self._new_entries(state)
        self._append(t, state, entries)
        gone = {uid for uid in [*ops.expunges, *moved_out] if uid in state.messages}
        self._flags(t, state, gone, {e.uid for e in entries})
        released = [box_record(state, state.messages[uid])[0] for uid in sorted(gone)]
        released = [m for uid, m in zip(sorted(gone), released, strict=True)
                    if uid not in moved_out and m]  # fmt: skip
        if gone:
            t.expunge_guid([(uid, _guid128(state, uid)) for uid in sorted(gone)])
        self._header(t, state, header, entries)
        return released

    def _new_entries(self, state: IndexState) -> tuple[list[_Entry], set[int]]:
        entries = [
            _Entry(
                r.message.uid,
                r.message.flags & SYSTEM_FLAGS_MASK,
                r.message.keywords,
                r.map_uid,
                r.save_date,
                r.guid128,
                r.message.min_modseq,
            )  # fmt: skip
            for r in self._records
        ]
        moved_out: set[int] = set()
        for old, new in self._ops.moves.items():
            msg = state.messages.get(old)
            if msg is None or old in moved_out:
                continue
            map_uid, save_date = box_record(state, msg)
            flags = msg.flags & SYSTEM_FLAGS_MASK
            entries.append(
                _Entry(new, flags, msg.keywords, map_uid, save_date, _guid128(state, old))
            )
            moved_out.add(old)
        entries.sort(key=lambda e: e.uid)
        next_uid = state.next_uid
        for e in entries:  # a delivery took the UID meanwhile: take the next free one
            e.uid = max(e.uid, next_uid)
            next_uid = e.uid + 1
        return entries, moved_out

    @staticmethod
    def _append(t: LogTransaction, state: IndexState, entries: list[_Entry]) -> None:
        if not entries:
            return
        t.append([(e.uid, e.flags) for e in entries])
        t.ext_intro(MDBOX, state)
        t.ext_rec_update([(e.uid, BOX_REC.pack(e.map_uid, e.save_date)) for e in entries])
        t.ext_intro(GUID, state)
        t.ext_rec_update([(e.uid, e.guid128) for e in entries])
        by_keyword: dict[str, list[int]] = {}
        for e in entries:
            for kw in sorted(e.keywords):
                by_keyword.setdefault(kw, []).append(e.uid)
        for kw, uids in by_keyword.items():
            t.keyword_update(kw, True, uids)
        t.modseq_update([(e.uid, e.min_modseq) for e in entries if e.min_modseq])

    def _flags(self, t: LogTransaction, state: IndexState, gone: set[int], new: set[int]) -> None:
        modseqs: list[tuple[int, int]] = []
        for op in self._ops.flag_ops:
            if op.uid not in state.messages or op.uid in gone or op.uid in new:
                continue  # dsync's writes to vanished UIDs are dropped
            add = op.add & SYSTEM_FLAGS_MASK
            remove = op.remove & SYSTEM_FLAGS_MASK & ~add
            if add or remove:
                t.flag_update(op.uid, op.uid, add, remove)
            for kw in sorted(op.add_keywords):
                t.keyword_update(kw, True, [op.uid])
            for kw in sorted(op.remove_keywords - op.add_keywords):
                t.keyword_update(kw, False, [op.uid])
            if op.min_modseq:
                modseqs.append((op.uid, op.min_modseq))
        t.modseq_update(modseqs)

    def _header(
        self, t: LogTransaction, state: IndexState, header: BoxHeader, entries: list[_Entry]
    ) -> None:
        ops, box = self._ops, self._box
        map_uidv = box.ctx.map.ensure().uid_validity
        if map_uidv != header.map_uid_validity and state.messages:
            # Its map_uids name records of another map: only a rebuild can tell (§3.4).
            raise StorageError(f"{box.vname}: map uidvalidity mismatch (run pydsync force-resync)")
        guid = ops.guid or header.guid
        if guid != header.guid or map_uidv != header.map_uid_validity:
            t.ext_intro(MDBOX_HDR, state)
            t.ext_hdr_update(0, BOX_HDR.pack(map_uidv, guid, header.flags))
        if ops.uid_validity and ops.uid_validity != state.uid_validity:
            t.set_uid_validity(ops.uid_validity)
        next_uid = max([state.next_uid, *(e.uid + 1 for e in entries)])
        if ops.uid_next > next_uid:
            t.set_next_uid(ops.uid_next)
        if ops.first_recent_uid > state.first_recent_uid:
            t.set_first_recent_uid(ops.first_recent_uid)
        if ops.attributes:  # the peer's stamp, 0 = unknown (kept as 0)
            t.attribute_update(
                AttributeChange(
                    value is not None,
                    type_,
                    key,
                    last_change,
                    len(value.encode("utf-8", "surrogateescape")) if value is not None else 0,
                )  # fmt: skip
                for (type_, key), (value, last_change) in sorted(ops.attributes.items())
            )
        if ops.highest_modseq > state.modseq:
            t.modseq_update([(0, ops.highest_modseq)])


def _guid128(state: IndexState, uid: int) -> bytes:
    raw = state.record_data(state.messages[uid], GUID.name)
    return raw[:16] if raw else bytes(16)


def _values(
    attrs: dict[tuple[str, str], tuple[str | None, int]],
) -> dict[tuple[str, str], str | None]:
    return {key: value for key, (value, _) in attrs.items()}
