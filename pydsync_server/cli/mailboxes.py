"""IMAP LIST patterns over a storage's mailbox list, as doveadm's commands use them.

`*` matches anything, `%` anything but the hierarchy separator, and an `INBOX` prefix
matches in any case (RFC 3501 §6.3.8, Dovecot's `inboxcase`). doveadm quirk kept for
byte-compatible output: a single pattern without wildcards is not matched against the
list but taken as the name itself, existing or not (`doveadm mailbox list x` prints
`x`; `mailbox status` then reports the missing mailbox).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..storage.base import MailboxEntry, Storage

INBOX = "INBOX"


def has_wildcards(pattern: str) -> bool:
    return "*" in pattern or "%" in pattern


def _inbox_case(pattern: str, separator: str) -> str:
    """Upper-case a leading (possibly partial) `INBOX` in the pattern."""
    stop = len(pattern)
    for i, char in enumerate(pattern):
        if char in "*%" or char == separator:
            stop = i
            break
    head = pattern[:stop]
    if len(head) <= len(INBOX) and INBOX.startswith(head.upper()):
        return head.upper() + pattern[stop:]
    return pattern


def compile_pattern(pattern: str, separator: str) -> re.Pattern[str]:
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "%":
            parts.append(f"[^{re.escape(separator)}]*")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def matches(pattern: str, vname: str, separator: str) -> bool:
    if compile_pattern(pattern, separator).fullmatch(vname):
        return True
    is_inbox = vname == INBOX or vname.startswith(INBOX + separator)
    return is_inbox and bool(
        compile_pattern(_inbox_case(pattern, separator), separator).fullmatch(vname)
    )


def normalize_inbox(vname: str, separator: str) -> str:
    """`inbox` / `Inbox/x` -> `INBOX` / `INBOX/x` (INBOX is case-insensitive)."""
    head, sep, rest = vname.partition(separator)
    return INBOX + sep + rest if head.upper() == INBOX else vname


def matching_entries(storage: Storage, patterns: Sequence[str]) -> list[MailboxEntry]:
    """Listed mailboxes (directories too) matching any pattern, in list order."""
    sep = storage.separator
    return [e for e in listed_entries(storage) if any(matches(p, e.vname, sep) for p in patterns)]


def listed_entries(storage: Storage) -> list[MailboxEntry]:
    """What IMAP LIST shows: mailboxes, directories, and implicit parents (\\NoSelect)."""
    sep = storage.separator
    result: list[MailboxEntry] = []
    seen: set[str] = set()
    for entry in storage.list_mailboxes():
        levels = entry.vname.split(sep)
        for depth in range(1, len(levels)):
            parent = sep.join(levels[:depth])
            if parent not in seen:
                seen.add(parent)
                result.append(MailboxEntry(parent, None))
        if entry.vname not in seen:
            seen.add(entry.vname)
            result.append(entry)
    return result


def single_name(patterns: Sequence[str]) -> str | None:
    """The name itself when doveadm would look it up directly (see module doc)."""
    if len(patterns) == 1 and not has_wildcards(patterns[0]):
        return patterns[0]
    return None


def ordered_subscriptions(storage: Storage) -> list[str]:
    """Subscribed names: listed mailboxes in list order, then the rest sorted.

    Dovecot prints the subscriptions file order, which the Storage API does not keep.
    """
    subscribed = storage.subscriptions()
    listed = [e.vname for e in listed_entries(storage) if e.vname in subscribed]
    return listed + sorted(subscribed - set(listed))
