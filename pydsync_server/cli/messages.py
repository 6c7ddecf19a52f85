"""Per-message values as doveadm prints them: flags, header fields, dates, sizes.

Observed on doveadm 2.3.19: `flags` lists system flags in the order \\Answered
\\Flagged \\Deleted \\Seen \\Draft \\Recent, then keywords; `hdr.<name>` is every
occurrence's value (leading blanks dropped, CRs dropped, folds kept) joined by LF;
dates print in local time as `YYYY-MM-DD HH:MM:SS`, `date.sent` with the header's
zone as ` (+hhmm)`, an unparsable or missing Date as the epoch.
"""

from __future__ import annotations

import email.utils
import time

from ..storage.base import Mailbox, MailboxStatus, MessageInfo

ANSWERED, FLAGGED, DELETED, SEEN, DRAFT = 0x01, 0x02, 0x04, 0x08, 0x10
SYSTEM_FLAGS = (
    (ANSWERED, "\\Answered"),
    (FLAGGED, "\\Flagged"),
    (DELETED, "\\Deleted"),
    (SEEN, "\\Seen"),
    (DRAFT, "\\Draft"),
)


def is_recent(message: MessageInfo, status: MailboxStatus) -> bool:
    """\\Recent as a fresh doveadm session sees it: UID >= first_recent_uid."""
    return message.uid >= max(status.first_recent_uid, 1)


def flags_text(message: MessageInfo, recent: bool) -> str:
    """System flags, \\Recent, then keywords (sorted: the Storage API keeps no order)."""
    words = [name for bit, name in SYSTEM_FLAGS if message.flags & bit]
    if recent:
        words.append("\\Recent")
    return " ".join(words + sorted(message.keywords))


def count_virtual_size(data: bytes) -> int:
    """Size with every bare LF counted as CRLF (IMAP RFC822.SIZE)."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def virtual_size(box: Mailbox, message: MessageInfo) -> int:
    if message.virtual_size:
        return message.virtual_size
    with box.open_message(message.uid) as f:
        return count_virtual_size(f.read())


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """(header including the blank line that ends it, body)."""
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break
        if data[pos:end] in (b"", b"\r"):
            return data[: end + 1], data[end + 1 :]
        pos = end + 1
    return data, b""


def header_values(header: bytes, name: str) -> list[bytes]:
    """Raw values of every `name:` field, unfolded lines joined by LF, CRs dropped."""
    wanted = name.lower().encode("utf-8", "surrogateescape")
    fields: list[list[bytes]] = []
    current: list[bytes] | None = None
    for line in header.split(b"\n"):
        line = line.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        current = None
        field_name, colon, value = line.partition(b":")
        if colon and field_name.strip().lower() == wanted:
            current = [value.lstrip(b" \t")]
            fields.append(current)
    return [b"\n".join(lines) for lines in fields]


def format_time(timestamp: int) -> str:
    """doveadm's date format, in local time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def sent_date(header: bytes) -> tuple[int, int]:
    """(UNIX time, zone offset in minutes) of the first Date: field; (0, 0) if none."""
    values = header_values(header, "date")
    if not values:
        return 0, 0
    text = values[0].decode("utf-8", "replace").replace("\n", " ")
    parsed = email.utils.parsedate_tz(text)
    if parsed is None:
        return 0, 0
    offset = parsed[9] or 0
    return int(email.utils.mktime_tz(parsed)), offset // 60


def format_sent(timestamp: int, offset_minutes: int) -> str:
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{format_time(timestamp)} ({sign}{hours:02d}{minutes:02d})"
