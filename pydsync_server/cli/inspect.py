"""`mailbox list` and `mailbox status`: doveadm's output for a pydsync-readable store.

Field names, their fixed output order, `all`, `-t` totals and the error texts follow
doveadm 2.3.19 (`doveadm mailbox status all INBOX` prints
`INBOX messages=3 recent=3 uidnext=4 ...`; `firstsaved` is `never` for an empty box).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import DsyncError, ExitCode, MailboxNotFoundError, UsageError
from ..storage.base import Mailbox, MessageInfo, Storage
from ..storage.maildir_names import mutf7_encode
from .context import Context
from .formatter import Formatter, Header, make_formatter
from .mailboxes import (
    matches,
    matching_entries,
    normalize_inbox,
    ordered_subscriptions,
    single_name,
)
from .messages import SEEN, is_recent, virtual_size

STATUS_FIELDS = (
    "messages",
    "recent",
    "uidnext",
    "uidvalidity",
    "unseen",
    "highestmodseq",
    "vsize",
    "guid",
    "firstsaved",
)
TOTAL_FIELDS = ("messages", "recent", "unseen", "vsize")


def mailbox_list(
    ctx: Context,
    storage: Storage,
    patterns: Sequence[str],
    *,
    subscribed: bool,
    mutf7: bool,
    formatter: str,
) -> int:
    """Print mailbox names (or subscriptions), one record each."""
    out = make_formatter(formatter, ctx.stdout, [Header("mailbox", hide_title=True)])
    name = single_name(patterns)
    if name is not None:
        names = [name]
    elif subscribed:
        sep = storage.separator
        names = ordered_subscriptions(storage)
        if patterns:
            names = [n for n in names if any(matches(p, n, sep) for p in patterns)]
    else:
        names = [e.vname for e in (matching_entries(storage, patterns or ["*"]))]
    for vname in names:
        out.value(mutf7_encode(vname) if mutf7 else vname)
    out.finish()
    return ExitCode.OK


def parse_status_fields(text: str, *, total: bool) -> list[str]:
    """Requested fields in doveadm's fixed order; errors as doveadm words them."""
    wanted: set[str] = set()
    for word in text.split():
        word = word.lower()
        if word == "all":
            wanted.update(TOTAL_FIELDS if total else STATUS_FIELDS)
        elif word not in STATUS_FIELDS:
            raise UsageError(f"Unknown status field: {word}")
        elif total and word not in TOTAL_FIELDS:
            raise UsageError(f"Status field {word} can't be used with -t")
        else:
            wanted.add(word)
    if not wanted:
        raise UsageError("No status fields given")
    return [f for f in STATUS_FIELDS if f in wanted]


def mailbox_status(
    ctx: Context,
    storage: Storage,
    fields_text: str,
    patterns: Sequence[str],
    *,
    total: bool,
    formatter: str,
) -> int:
    fields = parse_status_fields(fields_text, total=total)
    headers = [Header(f) for f in fields]
    if not total:
        headers.insert(0, Header("mailbox", hide_title=True))
    out = make_formatter(formatter, ctx.stdout, headers)
    name = single_name(patterns)
    if name is not None:
        names = [name]
    else:
        names = [e.vname for e in matching_entries(storage, patterns) if e.guid is not None]
    sums = dict.fromkeys(TOTAL_FIELDS, 0)
    code: int = ExitCode.OK
    for vname in names:
        try:
            values = _status_values(storage, vname)
        except DsyncError as exc:
            reason = (
                f"Mailbox doesn't exist: {vname}"
                if isinstance(exc, MailboxNotFoundError)
                else str(exc)
            )
            ctx.error(f"Mailbox {vname}: Failed to lookup mailbox status: {reason}")
            code = code or exc.exit_code
            continue
        if total:
            for f in TOTAL_FIELDS:
                sums[f] += int(values[f])
        else:
            _print_row(out, [vname] + [values[f] for f in fields])
    if total:
        _print_row(out, [str(sums[f]) for f in fields])
    out.finish()
    return code


def _print_row(out: Formatter, values: list[str]) -> None:
    for value in values:
        out.value(value)


def _status_values(storage: Storage, vname: str) -> dict[str, str]:
    box = storage.open_mailbox(normalize_inbox(vname, storage.separator))
    try:
        return status_values(box)
    finally:
        box.close()


def status_values(box: Mailbox) -> dict[str, str]:
    """Every STATUS_FIELDS value of one mailbox, as doveadm prints them."""
    status = box.status()
    messages: Sequence[MessageInfo] = box.messages()
    return {
        "messages": str(len(messages)),
        "recent": str(sum(1 for m in messages if is_recent(m, status))),
        "uidnext": str(status.uid_next),
        "uidvalidity": str(status.uid_validity),
        "unseen": str(sum(1 for m in messages if not m.flags & SEEN)),
        "highestmodseq": str(status.highest_modseq),
        "vsize": str(sum(virtual_size(box, m) for m in messages)),
        "guid": status.guid.hex(),
        "firstsaved": str(messages[0].saved_date or box.saved_date(messages[0].uid))
        if messages
        else "never",
    }
