"""Per-flag merge of one message changed on both sides (dsync-algorithm.md §3.6.6).

Conflicting add/remove pairs go to the preferred side (higher modseq, ties to the
master); bits both sides already agree on are left alone. Keywords use the same rule
with one "bit" per keyword name.
"""

from __future__ import annotations

from ..protocol.items import SYSTEM_FLAGS_MASK, MailChange
from ..storage.base import MessageChange


def _merge_bits(
    local_final: int,
    remote_final: int,
    local_add: int,
    local_remove: int,
    remote_add: int,
    remote_remove: int,
    prefer_remote: bool,
) -> tuple[int, bool]:
    """Bit-set merge; returns (local wanted, whether the remote must change)."""
    add_remove = local_add & remote_remove
    remove_add = local_remove & remote_add
    if prefer_remote:
        local_add &= ~add_remove
        local_remove &= ~remove_add
    else:
        remote_remove &= ~add_remove
        remote_add &= ~remove_add
    differing = local_final ^ remote_final
    add = (local_add | remote_add) & differing
    remove = (local_remove | remote_remove) & differing
    local_wanted = (local_final | add) & ~remove
    remote_wanted = (remote_final | add) & ~remove
    if local_wanted != remote_wanted and prefer_remote:
        local_wanted = remote_wanted
    return local_wanted, local_wanted != remote_final


def merge_flags(
    local_final: int,
    remote_final: int,
    local_record: MessageChange | None,
    change: MailChange,
    prefer_remote: bool,
) -> tuple[int, bool]:
    if local_final == remote_final:
        return local_final & SYSTEM_FLAGS_MASK, False  # as merge_keywords: nothing differs
    local_add = local_record.add_flags if local_record else 0
    local_remove = local_record.remove_flags if local_record else 0
    wanted, remote_changed = _merge_bits(
        local_final,
        remote_final,
        local_add,
        local_remove,
        change.add_flags & SYSTEM_FLAGS_MASK,
        change.remove_flags & SYSTEM_FLAGS_MASK,
        prefer_remote,
    )
    return wanted & SYSTEM_FLAGS_MASK, remote_changed


def merge_keywords(
    local_final: frozenset[str],
    remote_final: frozenset[str],
    local_record: MessageChange | None,
    change: MailChange,
    prefer_remote: bool,
) -> tuple[frozenset[str], bool]:
    if local_final == remote_final:
        # the usual message: where both sides agree no bit differs, so the bit merge
        # keeps every keyword as it is, whatever either side's log says
        return local_final, False
    local_ops = local_record.keyword_ops if local_record else ()
    return merge_keyword_bits(
        local_final, remote_final, local_ops, change.keyword_changes, prefer_remote
    )


def merge_keyword_bits(
    local_final: frozenset[str],
    remote_final: frozenset[str],
    local_ops: tuple[str, ...],
    remote_ops: tuple[str, ...],
    prefer_remote: bool,
) -> tuple[frozenset[str], bool]:
    """The keyword merge with one bit per keyword name."""
    names = sorted(
        set(local_final) | set(remote_final) | {op[1:] for op in (*local_ops, *remote_ops)}
    )
    bit = {name: 1 << index for index, name in enumerate(names)}

    def mask(keywords: frozenset[str] | set[str]) -> int:
        return sum(bit[name] for name in keywords)

    def ops(entries: tuple[str, ...], kinds: str) -> int:
        return mask({op[1:] for op in entries if op[0] in kinds})

    wanted, remote_changed = _merge_bits(
        mask(local_final),
        mask(remote_final),
        ops(local_ops, "+&"),
        ops(local_ops, "-"),
        ops(remote_ops, "+&"),
        ops(remote_ops, "-"),
        prefer_remote,
    )
    return frozenset(name for name in names if wanted & bit[name]), remote_changed
