"""Keyword merge (dsync-algorithm.md §3.6.6): the shortcut for messages nobody changed
gives what the per-keyword bit merge gives, on any input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pydsync_server.brain.flag_merge import (
    _merge_bits,
    merge_flags,
    merge_keyword_bits,
    merge_keywords,
)
from pydsync_server.protocol.items import MailChange
from pydsync_server.storage.base import MessageChange

NAMES = st.sampled_from(["$Junk", "NonJunk", "a", "b"])
KEYWORDS = st.frozensets(NAMES, max_size=3)
OPS = st.lists(st.tuples(st.sampled_from("+-=&"), NAMES).map("".join), max_size=4).map(tuple)


@given(KEYWORDS, KEYWORDS, OPS, OPS, st.booleans(), st.booleans())
def test_keyword_merge_equals_the_bit_merge(
    local: frozenset[str], remote: frozenset[str], local_ops: tuple[str, ...],
    remote_ops: tuple[str, ...], prefer_remote: bool, with_record: bool,
) -> None:  # fmt: skip
    record = MessageChange(1, 5, keyword_ops=local_ops) if with_record else None
    change = MailChange("f", 1, keyword_changes=remote_ops)
    mine = local_ops if with_record else ()
    expected = merge_keyword_bits(local, remote, mine, remote_ops, prefer_remote)
    assert merge_keywords(local, remote, record, change, prefer_remote) == expected


@given(KEYWORDS, st.booleans())
def test_unchanged_keywords_stay(keywords: frozenset[str], prefer_remote: bool) -> None:
    change = MailChange("f", 1, keyword_changes=tuple("=" + k for k in sorted(keywords)))
    assert merge_keywords(keywords, keywords, None, change, prefer_remote) == (keywords, False)


@given(st.integers(0, 0x1F), st.integers(0, 0x1F), st.integers(0, 0x1F), st.integers(0, 0x1F),
       st.integers(0, 0x1F), st.integers(0, 0x1F), st.booleans())  # fmt: skip
def test_flag_merge_equals_the_bit_merge(
    local: int, remote: int, local_add: int, local_remove: int, remote_add: int,
    remote_remove: int, prefer_remote: bool,
) -> None:  # fmt: skip
    record = MessageChange(1, 5, add_flags=local_add, remove_flags=local_remove)
    change = MailChange("f", 1, add_flags=remote_add, remove_flags=remote_remove)
    wanted, changed = _merge_bits(
        local, remote, local_add, local_remove, remote_add, remote_remove, prefer_remote
    )
    assert merge_flags(local, remote, record, change, prefer_remote) == (wanted & 0x1F, changed)
