"""The doveadm search query subset pydsync understands (all keys ANDed).

`mailbox <pattern>`, `mailbox-guid <guid>`, `all`, `uid <set>`, a bare sequence set,
`seen`/`unseen`, `answered`, `flagged`, `deleted`, `draft` (and their `un` forms),
`keyword <kw>`/`unkeyword <kw>`, `larger <n>`/`smaller <n>`. Keys are
case-insensitive. Bad input fails the way doveadm's does: exit 75 with "Unknown
argument X" or "Invalid UID messageset".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import DsyncError
from ..storage.base import MessageInfo
from .messages import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN

# (message, sequence number, message count) -> matches?
Predicate = Callable[[MessageInfo, int, int], bool]

_FLAG_KEYS = {
    "answered": ANSWERED,
    "flagged": FLAGGED,
    "deleted": DELETED,
    "seen": SEEN,
    "draft": DRAFT,
}
UID_MAX = 0xFFFFFFFF
_SET = re.compile(r"(\d+|\*)(:(\d+|\*))?(,(\d+|\*)(:(\d+|\*))?)*")


@dataclass
class Search:
    mailbox_patterns: list[str] = field(default_factory=list)
    mailbox_guids: list[str] = field(default_factory=list)
    predicates: list[Predicate] = field(default_factory=list)

    def matches(self, message: MessageInfo, seq: int, count: int) -> bool:
        return all(p(message, seq, count) for p in self.predicates)


def parse_set(text: str, what: str) -> list[tuple[int, int]]:
    """`1,3:5,7:*` -> ranges; `*` is 0 here and means "the highest" when matching."""
    if not _SET.fullmatch(text):
        raise DsyncError(f"Invalid {what}")
    ranges = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        a = 0 if low == "*" else int(low)
        b = a if not high else (0 if high == "*" else int(high))
        if (a == 0 and low != "*") or (b == 0 and high not in ("", "*")):
            raise DsyncError(f"Invalid {what}")
        ranges.append((a, b))
    return ranges


def in_set(value: int, ranges: list[tuple[int, int]], highest: int) -> bool:
    for a, b in ranges:
        low, high = sorted((a or highest, b or highest))
        if low <= value <= high:
            return True
    return False


def _uid_predicate(ranges: list[tuple[int, int]]) -> Predicate:
    # doveadm reads `*` in a UID set as the largest possible UID (so `uid 4:*` finds
    # nothing when the highest UID is 3); in a sequence set it is the last message.
    return lambda m, seq, count: in_set(m.uid, ranges, UID_MAX)


def _seq_predicate(ranges: list[tuple[int, int]]) -> Predicate:
    return lambda m, seq, count: in_set(seq, ranges, count)


def _flag_predicate(bit: int, want: bool) -> Predicate:
    return lambda m, *_: bool(m.flags & bit) == want


def _keyword_predicate(keyword: str, want: bool) -> Predicate:
    folded = keyword.lower()
    return lambda m, *_: any(k.lower() == folded for k in m.keywords) == want


def _size_predicate(size: int, larger: bool) -> Predicate:
    def check(m: MessageInfo, *_: int) -> bool:
        return m.virtual_size > size if larger else m.virtual_size < size

    return check


def parse_search(args: Sequence[str]) -> Search:
    search = Search()
    i = 0
    while i < len(args):
        key = args[i].lower()
        i += 1
        if key == "all":
            continue
        if key in _FLAG_KEYS or (key.startswith("un") and key[2:] in _FLAG_KEYS):
            bit = _FLAG_KEYS.get(key) or _FLAG_KEYS[key[2:]]
            search.predicates.append(_flag_predicate(bit, key in _FLAG_KEYS))
            continue
        if _SET.fullmatch(key):
            search.predicates.append(_seq_predicate(parse_set(key, "messageset")))
            continue
        if key not in (
            "mailbox",
            "mailbox-guid",
            "uid",
            "keyword",
            "unkeyword",
            "larger",
            "smaller",
        ):
            raise DsyncError(f"Unknown argument {args[i - 1].upper()}")
        if i >= len(args):
            raise DsyncError(f"Missing argument for {key.upper()}")
        value = args[i]
        i += 1
        _add_keyed(search, key, value)
    return search


def _add_keyed(search: Search, key: str, value: str) -> None:
    if key == "mailbox":
        search.mailbox_patterns.append(value)
    elif key == "mailbox-guid":
        search.mailbox_guids.append(value.lower())
    elif key == "uid":
        search.predicates.append(_uid_predicate(parse_set(value, "UID messageset")))
    elif key in ("keyword", "unkeyword"):
        search.predicates.append(_keyword_predicate(value, key == "keyword"))
    else:
        if not value.isdigit():
            raise DsyncError(f"Invalid size: {value}")
        search.predicates.append(_size_predicate(int(value), key == "larger"))
