"""`fetch FIELDS SEARCH`: message fields in doveadm's formats (default `pager`).

Mailboxes are visited in list order, messages by UID; `hdr`, `body` and `text` are
streamed (see formatter.py for what that changes in each format). An unknown field
fails like doveadm (exit 75, "Unknown fetch field").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import DsyncError, ExitCode
from ..storage.base import Mailbox, MailboxStatus, MessageInfo, Storage
from .context import Context
from .formatter import Formatter, Header, chunked, make_formatter
from .mailboxes import matches
from .messages import (
    count_virtual_size,
    flags_text,
    format_sent,
    format_time,
    header_values,
    is_recent,
    sent_date,
    split_message,
)
from .search import Search, parse_search

STREAM_FIELDS = ("hdr", "body", "text")
PLAIN_FIELDS = (
    "user", "mailbox", "mailbox-guid", "seq", "uid", "guid", "flags", "modseq",
    "size.physical", "size.virtual", "date.received", "date.sent", "date.saved",
    "date.received.unixtime", "date.sent.unixtime", "date.saved.unixtime", "pop3.uidl",
    "pop3.order",
)  # fmt: skip


@dataclass
class MessageView:
    """One message being printed; its bytes are read at most once."""

    user: str
    box: Mailbox
    status: MailboxStatus
    info: MessageInfo
    seq: int
    _data: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            with self.box.open_message(self.info.uid) as f:
                self._data = f.read()
        return self._data

    def header(self) -> bytes:
        return split_message(self.data)[0]

    def sent(self) -> tuple[int, int]:
        return sent_date(self.header())


def _plain_value(field: str, m: MessageView) -> str:
    info = m.info
    getters: dict[str, Callable[[], object]] = {
        "user": lambda: m.user,
        "mailbox": lambda: m.box.vname,
        "mailbox-guid": lambda: m.status.guid.hex(),
        "seq": lambda: m.seq,
        "uid": lambda: info.uid,
        "guid": lambda: info.guid,
        "flags": lambda: flags_text(info, is_recent(info, m.status)),
        "modseq": lambda: info.modseq,
        "size.physical": lambda: info.physical_size or len(m.data),
        "size.virtual": lambda: info.virtual_size or count_virtual_size(m.data),
        "date.received": lambda: format_time(info.received_date),
        "date.saved": lambda: format_time(info.saved_date or m.box.saved_date(info.uid)),
        "date.sent": lambda: format_sent(*m.sent()),
        "date.received.unixtime": lambda: info.received_date,
        "date.saved.unixtime": lambda: info.saved_date or m.box.saved_date(info.uid),
        "date.sent.unixtime": lambda: m.sent()[0],
        "pop3.uidl": lambda: info.pop3_uidl,
        "pop3.order": lambda: info.pop3_order or "",
    }
    return str(getters[field]())


def _print_field(out: Formatter, field: str, m: MessageView) -> None:
    if field in STREAM_FIELDS:
        header, body = split_message(m.data)
        if field == "body":
            out.stream(chunked(body, offset=len(header)))
        else:
            out.stream(chunked(header if field == "hdr" else m.data))
    elif field.startswith("hdr."):
        values = header_values(m.header(), field[4:])
        out.value(b"\n".join(values).decode("utf-8", "surrogateescape"))
    else:
        out.value(_plain_value(field, m))


def parse_fields(text: str) -> list[str]:
    fields = text.split()
    for field in fields:
        known = field in STREAM_FIELDS or field in PLAIN_FIELDS
        if not known and not (field.startswith("hdr.") and len(field) > 4):
            available = " ".join(("hdr.<name>",) + STREAM_FIELDS + PLAIN_FIELDS)
            raise DsyncError(f"Unknown fetch field: {field} (available: {available})")
    if not fields:
        raise DsyncError("No fetch fields given")
    return fields


def _boxes(storage: Storage, search: Search) -> list[str]:
    sep = storage.separator
    names = []
    for entry in storage.list_mailboxes():
        if entry.guid is None:
            continue
        if not all(matches(p, entry.vname, sep) for p in search.mailbox_patterns):
            continue
        if search.mailbox_guids and entry.guid.hex() not in search.mailbox_guids:
            continue
        names.append(entry.vname)
    return names


def fetch(
    ctx: Context,
    storage: Storage,
    user: str,
    fields_text: str,
    query: Sequence[str],
    *,
    formatter: str,
) -> int:
    fields = parse_fields(fields_text)
    search = parse_search(query)
    out = make_formatter(formatter, ctx.stdout, [Header(f) for f in fields])
    for vname in _boxes(storage, search):
        box = storage.open_mailbox(vname)
        try:
            _fetch_box(out, user, box, fields, search)
        finally:
            box.close()
    out.finish()
    return ExitCode.OK


def _fetch_box(out: Formatter, user: str, box: Mailbox, fields: list[str], search: Search) -> None:
    status = box.status()
    messages = box.messages()
    for seq, info in enumerate(messages, start=1):
        if not search.matches(info, seq, len(messages)):
            continue
        view = MessageView(user, box, status, info, seq)
        for field in fields:
            _print_field(out, field, view)
