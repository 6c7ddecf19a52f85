"""Merging a mailbox's change log into one `MessageChange` per UID.

The rules are those of Dovecot's transaction-log scan (dsync-algorithm.md §3.4);
any driver that keeps its own log of non-dsync changes can use `merge_changes`.
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import MessageChange

SYSTEM_FLAGS_MASK = 0x1F
"""\\Answered..\\Draft: the flags a mailbox stores (\\Recent 0x20 is per session)."""


def keyword_diff(old: frozenset[str], new: frozenset[str]) -> tuple[str, ...]:
    """`+kw` / `-kw` operations turning `old` into `new`, sorted for determinism."""
    return tuple(f"+{kw}" for kw in sorted(new - old)) + tuple(f"-{kw}" for kw in sorted(old - new))


def flag_change(
    uid: int,
    modseq: int,
    old: tuple[int, frozenset[str]],
    new: tuple[int, frozenset[str]],
) -> MessageChange | None:
    """The record for one message's (flags, keywords) going from `old` to `new`;
    None when nothing changed."""
    added, removed = new[0] & ~old[0], old[0] & ~new[0]
    ops = keyword_diff(old[1], new[1])
    if not added and not removed and not ops:
        return None
    return MessageChange(uid, modseq, add_flags=added, remove_flags=removed, keyword_ops=ops)


def _merge_keyword_ops(ops: tuple[str, ...], more: tuple[str, ...]) -> tuple[str, ...]:
    # An earlier entry for the same keyword is dropped, the new one appended (§3.4).
    merged = list(ops)
    for op in more:
        merged = [old for old in merged if old[1:] != op[1:]]
        merged.append(op)
    return tuple(merged)


def _merge_one(prev: MessageChange, rec: MessageChange) -> MessageChange:
    modseq = max(prev.modseq, rec.modseq)
    if prev.expunged:
        # UIDs are never reused: nothing may follow an expunge.
        return prev
    if rec.expunged:
        # An expunge replaces the flag record.
        return MessageChange(prev.uid, modseq, expunged=True, guid128=rec.guid128)
    add = prev.add_flags | rec.add_flags
    remove = (prev.remove_flags & ~rec.add_flags) | rec.remove_flags
    add &= ~rec.remove_flags
    return MessageChange(
        prev.uid,
        modseq,
        add_flags=add,
        remove_flags=remove,
        keyword_ops=_merge_keyword_ops(prev.keyword_ops, rec.keyword_ops),
    )


def merge_changes(records: Iterable[MessageChange], since_modseq: int) -> list[MessageChange]:
    """Records with modseq > `since_modseq`, in log order, merged per UID; sorted by UID."""
    merged: dict[int, MessageChange] = {}
    for rec in records:
        if rec.modseq <= since_modseq:
            continue
        merged[rec.uid] = _merge_one(merged.get(rec.uid, MessageChange(rec.uid, 0)), rec)
    return [merged[uid] for uid in sorted(merged)]
