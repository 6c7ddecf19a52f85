"""Per-item field tables: how each item attribute maps to one wire field and back.

Table-driven (h11-style): every key of §6 is one `Field` object that converts a Python
value to the field's bytes (None = NULL) and back, validating as Dovecot's
`dsync-ibc-stream.c` receiver does. Errors are `FieldError` with Dovecot's wording.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import escape
from .items import (
    CacheField,
    Finish,
    Handshake,
    Item,
    Mail,
    Mailbox,
    MailboxAttribute,
    MailboxDelete,
    MailboxState,
    MailboxTreeNode,
    MailChange,
    MailRequest,
)

U32 = 2**32 - 1
U64 = 2**64 - 1
TIME = 2**63 - 1  # time_t
_DECIMAL = re.compile(rb"[0-9]+")
_SIGNED = re.compile(rb"-?[0-9]+")
_HEX = re.compile(rb"[0-9a-fA-F]+")
_GUID128 = re.compile(rb"[0-9a-fA-F]{32}")


class FieldError(ValueError):
    """A value that cannot be encoded or was received malformed (message: Dovecot's)."""


@dataclass(frozen=True)
class Context:
    """What field conversion needs to know about the side whose bytes these are."""

    cache_keys: tuple[str, ...]  # that side's `c` key header (B.cache_fields)
    peer_minor: int = 5


def to_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise FieldError(f"not representable as bytes: {text!r}") from exc


def to_str(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def show(raw: bytes) -> str:
    """A received value as one printable line for an error message."""
    return repr(raw[:64])[2:-1]


class Field:
    """One key of an item: `attr` is the dataclass attribute (normally the key name)."""

    def __init__(self, key: str, attr: str | None = None, *, show_value: bool = False):
        self.key = key
        self.attr = attr or key
        self.show_value = show_value

    def invalid(self, raw: bytes | None = None, prefix: str = "Invalid") -> FieldError:
        if self.show_value and raw is not None:
            return FieldError(f"{prefix} {self.key}: {show(raw)}")
        return FieldError(f"{prefix} {self.key}")

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        """Default: `str | None` as text."""
        return None if value is None else to_bytes(value)

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        return None if raw is None else to_str(raw)


Text = Field


class Guid(Field):
    """A 128-bit mailbox GUID as 32 hex digits (guid_128_from_string)."""

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        raw = super().to_wire(value, ctx)
        if raw is not None and not _GUID128.fullmatch(raw):
            raise self.invalid(raw)
        return raw

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        if raw is not None and not _GUID128.fullmatch(raw):
            raise self.invalid(raw)
        return super().from_wire(raw, ctx)


class Choice(Field):
    """Text whose first byte selects an enum value (Dovecot switches on value[0])."""

    def __init__(self, key: str, allowed: bytes, prefix: str = "Invalid") -> None:
        super().__init__(key, show_value=True)
        self.allowed = allowed
        self.prefix = prefix

    def _check(self, raw: bytes | None) -> None:
        if raw is not None and (not raw or raw[0] not in self.allowed):
            raise FieldError(f"{self.prefix} {self.key}: {show(raw)}")

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        raw = super().to_wire(value, ctx)
        self._check(raw)
        return raw

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        self._check(raw)
        return super().from_wire(raw, ctx)


class OneByte(Field):
    """Exactly one byte (D.hierarchy_sep)."""

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        raw = super().to_wire(value, ctx)
        if raw is not None and len(raw) != 1:
            raise self.invalid()
        return raw

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        if raw is not None and len(raw) != 1:
            raise self.invalid()
        return super().from_wire(raw, ctx)


class Flag(Field):
    """Presence flag: sent as "" when set (§1)."""

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        return b"" if value else None

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        return raw is not None


class Number(Field):
    """An integer in decimal or hex (§3.6). 0 is "absent" unless `always`."""

    def __init__(self, key: str, limit: int = U32, *, hexadecimal: bool = False,
                 always: bool = False, nonzero: bool = False, signed: bool = False,
                 show_value: bool = False) -> None:
        super().__init__(key, show_value=show_value)
        self.limit = limit
        self.hexadecimal = hexadecimal
        self.always = always
        self.nonzero = nonzero
        self.minimum = -limit - 1 if signed else 0
        self.pattern = _HEX if hexadecimal else _SIGNED if signed else _DECIMAL

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        if value is None or (value == 0 and not self.always):
            return None
        if not isinstance(value, int) or not self.minimum <= value <= self.limit:
            raise FieldError(f"Invalid {self.key}: {value!r}")
        return (b"%x" if self.hexadecimal else b"%d") % value

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        if raw is None:
            return 0
        if not self.pattern.fullmatch(raw):
            raise self.invalid(raw)
        value = int(raw, 16 if self.hexadecimal else 10)
        if not self.minimum <= value <= self.limit or (self.nonzero and value == 0):
            raise self.invalid(raw)
        return value


class OptionalNumber(Number):
    """A number where None is "absent" and 0 is a real value (C.virtual_size)."""

    def __init__(self, key: str, limit: int, *, hexadecimal: bool = False) -> None:
        super().__init__(key, limit, hexadecimal=hexadecimal, always=True)

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        return None if raw is None else super().from_wire(raw, ctx)


class TabList(Field):
    """Tab-escaped elements joined by TAB; () is sent as NULL (§3.5).

    ("",) would be "", which Dovecot's receiver reads as no list at all: sent as NULL.
    """

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        joined = escape.join_tab_list(to_bytes(element) for element in value)
        return joined or None

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        return () if raw is None else tuple(to_str(e) for e in escape.split_tab_list(raw))


class MailboxName(TabList):
    """N.name: one element per hierarchy level; never empty."""

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        joined = super().to_wire(value, ctx)
        if joined is None:
            raise FieldError("Empty name")
        return joined

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        if not raw:
            raise FieldError("Empty name")
        return super().from_wire(raw, ctx)


class TerminatedTabList(Field):
    """H.hashed_headers: every element followed by TAB; None = NULL, () = ""."""

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        if value is None:
            return None
        return escape.join_terminated_tab_list(to_bytes(element) for element in value)

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        if raw is None:
            return None
        return tuple(to_str(e) for e in escape.split_terminated_tab_list(raw))


class LfList(Field):
    """H.sync_ns_prefix: unescaped elements joined by LF; "" decodes as ()."""

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        if value is None:
            return None
        elements = [to_bytes(element) for element in value]
        if any(escape.LF in element for element in elements):
            raise FieldError(f"Invalid {self.key}: LF inside an element")
        return escape.LF.join(elements)

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        if raw is None:
            return None
        return tuple(to_str(e) for e in escape.split_plain_list(raw, escape.LF))


class DeletePairs(Field):
    """D lists: "<32-hex> <time>" pairs joined by spaces; () is NULL (§6.5)."""

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        if not value:
            return None
        words = []
        for guid, timestamp in value:
            raw = to_bytes(guid)
            if not _GUID128.fullmatch(raw) or not 0 <= timestamp <= TIME:
                raise self.invalid()
            words.append(b"%s %d" % (raw, timestamp))
        return b" ".join(words)

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        words = escape.split_plain_list(raw or b"", b" ")
        if len(words) % 2 != 0:
            raise self.invalid()
        pairs = []
        for guid, timestamp in zip(words[::2], words[1::2], strict=True):
            if not _GUID128.fullmatch(guid) or not _DECIMAL.fullmatch(timestamp):
                raise self.invalid()
            pairs.append((to_str(guid), int(timestamp)))
        return tuple(pairs)


_CACHE_FIELD_FIELDS: tuple[Field, ...] = (
    Text("name"), Choice("decision", b"nty"), Number("last_used", TIME),
)
_CACHE_FIELD_BY_KEY = {field.key: field for field in _CACHE_FIELD_FIELDS}
_CACHE_FIELD_REQUIRED = ("name", "decision")


class CacheFields(Field):
    """B.cache_fields: LF-joined `c` records in the sender's `c` key order (§3.5)."""

    def to_wire(self, value: Any, ctx: Context) -> bytes | None:
        if value is None:
            return None
        records = []
        for cache_field in value:
            values = [_CACHE_FIELD_BY_KEY[key].to_wire(getattr(cache_field, key), ctx)
                      if key in _CACHE_FIELD_BY_KEY else None for key in ctx.cache_keys]
            records.append(escape.join_record(values))
        return escape.LF.join(records)

    def from_wire(self, raw: bytes | None, ctx: Context) -> Any:
        if raw is None:
            return None
        decoded = []
        for record in escape.split_plain_list(raw, escape.LF):
            values = map_values(ctx.cache_keys, escape.split_record(record))
            missing = missing_required(_CACHE_FIELD_REQUIRED, values)
            if missing is not None:
                raise FieldError(f"cache_field: Invalid input: Missing required field {missing}")
            kwargs = {f.attr: f.from_wire(values.get(f.key), ctx) for f in _CACHE_FIELD_FIELDS}
            decoded.append(CacheField(**kwargs))
        return tuple(decoded)


def map_values(keys: Sequence[str], values: Sequence[bytes | None]) -> dict[str, bytes | None]:
    """Key name -> received value; the first of repeated keys wins, as in Dovecot."""
    mapped: dict[str, bytes | None] = {}
    for key, value in zip(keys, values, strict=False):
        mapped.setdefault(key, value)
    return mapped


def missing_required(required: Sequence[str], values: Mapping[str, bytes | None]) -> str | None:
    for key in required:
        if values.get(key) is None:
            return key
    return None


@dataclass(frozen=True)
class ItemFields:
    """How one item class is laid out: its item char, constructor and fields."""

    char: str
    cls: type[Any]
    fields: tuple[Field, ...]

    def build(self, kwargs: Mapping[str, Any]) -> Item:
        item: Item = self.cls(**kwargs)
        return item


ITEM_FIELDS: tuple[ItemFields, ...] = (
    ItemFields("H", Handshake, (
        Text("hostname"), LfList("sync_ns_prefix"), Text("sync_box"),
        Guid("sync_box_guid", show_value=True), Choice("sync_type", b"fcs", "Unknown"),
        Flag("debug"), Flag("sync_visible_namespaces"), TabList("exclude_mailboxes"),
        Flag("send_mail_requests"), Flag("backup_send"), Flag("backup_recv"),
        Number("lock_timeout", nonzero=True, show_value=True), Flag("no_mail_sync"),
        Flag("no_backup_overwrite"), Flag("purge_remote"), Flag("no_notify"),
        Number("sync_since_timestamp", TIME, nonzero=True, show_value=True),
        Number("sync_max_size", U64, nonzero=True, show_value=True), Text("sync_flags"),
        # 0 is accepted here: 2.3 masters send it for `-e` without `-t` (§15.2).
        Number("sync_until_timestamp", TIME, show_value=True), Text("virtual_all_box"),
        Flag("empty_hdr_workaround"),
        Number("import_commit_msgs_interval", nonzero=True, show_value=True),
        TerminatedTabList("hashed_headers"), Text("alt_char"),
    )),
    ItemFields("S", MailboxState, (
        Guid("mailbox_guid"), Number("last_uidvalidity", always=True),
        Number("last_common_uid", always=True), Number("last_common_modseq", U64, always=True),
        Number("last_common_pvt_modseq", U64, always=True),
        Number("last_messages_count", always=True),  # Dovecot always sends it
        Flag("changes_during_sync"),
    )),
    ItemFields("N", MailboxTreeNode, (
        MailboxName("name"), Text("existence"), Guid("mailbox_guid"), Number("uid_validity"),
        Number("uid_next"), Number("last_renamed_or_created", TIME), Flag("subscribed"),
        Number("last_subscription_change", TIME),
    )),
    ItemFields("D", MailboxDelete, (
        OneByte("hierarchy_sep"), Text("escape_char"), DeletePairs("mailboxes"),
        DeletePairs("dirs"), DeletePairs("unsubscribes"),
    )),
    ItemFields("B", Mailbox, (
        Guid("mailbox_guid"), Number("uid_validity", always=True),
        Number("uid_next", always=True), Number("messages_count", always=True),
        Number("first_recent_uid", always=True), Number("highest_modseq", U64, always=True),
        Number("highest_pvt_modseq", U64, always=True), Flag("mailbox_lost"),
        Flag("mailbox_ignore"), CacheFields("cache_fields"), Flag("have_guids"),
        Flag("have_save_guids"), Flag("have_only_guid128"),
    )),
    ItemFields("A", MailboxAttribute, (
        Choice("type", b"ps"), Text("key"), Text("value"), Flag("stream"), Flag("deleted"),
        Number("last_change", TIME), Number("modseq", U64),
    )),
    ItemFields("C", MailChange, (
        Choice("type", b"sef"), Number("uid", always=True), Text("guid"), Text("hdr_hash"),
        Number("modseq", U64), Number("pvt_modseq", U64),
        Number("add_flags", 0xFF, hexadecimal=True, show_value=True),
        Number("remove_flags", 0xFF, hexadecimal=True, show_value=True),
        Number("final_flags", 0xFF, hexadecimal=True, show_value=True), Flag("keywords_reset"),
        TabList("keyword_changes"), Number("received_timestamp", U64, hexadecimal=True),
        OptionalNumber("virtual_size", U64, hexadecimal=True),
    )),
    ItemFields("R", MailRequest, (Text("guid"), Number("uid"))),
    # M's `stream` key is the presence of `body`; the codec handles it (§6.10).
    ItemFields("M", Mail, (
        Text("guid"), Number("uid"), Text("pop3_uidl"), Number("pop3_order"),
        Number("received_date", TIME), Number("saved_date", TIME),
    )),
    ItemFields("F", Finish, (
        Text("error"), Number("mail_error", 2**31 - 1, signed=True), Flag("require_full_resync"),
    )),
)

FIELDS_BY_CHAR: Mapping[str, ItemFields] = {entry.char: entry for entry in ITEM_FIELDS}
FIELDS_BY_TYPE: Mapping[type, ItemFields] = {entry.cls: entry for entry in ITEM_FIELDS}
