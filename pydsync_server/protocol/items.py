"""The dsync protocol items as dataclasses, compared by value, never changed once made.

One class per item character of the 3.5 key header (dsync-protocol.md §5.3, §6).
Field names are Dovecot's key names. Conventions, so the codec can be table-driven:

* `str` fields hold the wire bytes decoded as UTF-8 with `surrogateescape`, so any
  byte string round-trips; `None` is the wire NULL.
* Optional numbers use 0 for "absent" (Dovecot omits zero values), except where a
  field says otherwise (`MailChange.virtual_size`: None = absent).
* Presence flags are `bool`.
* Lists nested inside one field are tuples of their elements.
* `Mail.body` / `MailboxAttribute.stream` carry the streamed value as a readable
  binary file object (or None when no stream follows); they are excluded from
  equality so that items compare by their fields.
* Items are never changed (a changed item is made with `dataclasses.replace`) and
  never hashed. mypy checks them as frozen; at run time they are plain dataclasses,
  as `frozen` doubles what each class costs to create, paid at every start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, BinaryIO, TypeVar

_T = TypeVar("_T")

if TYPE_CHECKING:
    from typing import dataclass_transform

    @dataclass_transform(frozen_default=True, field_specifiers=(field,))
    def _item(cls: type[_T]) -> type[_T]: ...

else:
    _item = dataclass


class Marker(Enum):
    """Lines that are not records: the end-of-list `.` line."""

    END_OF_LIST = "."


END_OF_LIST = Marker.END_OF_LIST

# System flag bits used by `MailChange` (dsync-protocol.md §6.8).
FLAG_ANSWERED = 0x01
FLAG_FLAGGED = 0x02
FLAG_DELETED = 0x04
FLAG_SEEN = 0x08
FLAG_DRAFT = 0x10
FLAG_RECENT = 0x20
SYSTEM_FLAGS_MASK = 0x1F  # the five flags a mailbox stores (\Recent is per session)

SYNC_TYPE_FULL = "f"
SYNC_TYPE_CHANGED = "c"
SYNC_TYPE_STATE = "s"


@_item
class Handshake:
    """`H`: the master's settings, or the slave's hostname (§6.2)."""

    hostname: str
    sync_ns_prefix: tuple[str, ...] | None = None
    sync_box: str | None = None
    sync_box_guid: str | None = None
    sync_type: str | None = None
    debug: bool = False
    sync_visible_namespaces: bool = False
    exclude_mailboxes: tuple[str, ...] = ()
    send_mail_requests: bool = False
    backup_send: bool = False
    backup_recv: bool = False
    lock_timeout: int = 0
    no_mail_sync: bool = False
    no_backup_overwrite: bool = False
    purge_remote: bool = False
    no_notify: bool = False
    sync_since_timestamp: int = 0
    sync_max_size: int = 0
    sync_flags: str | None = None
    sync_until_timestamp: int = 0
    virtual_all_box: str | None = None
    empty_hdr_workaround: bool = False
    import_commit_msgs_interval: int = 0
    hashed_headers: tuple[str, ...] | None = None
    alt_char: str | None = None


@_item
class MailboxState:
    """`S`: a mailbox's last common state (§6.3)."""

    mailbox_guid: str
    last_uidvalidity: int
    last_common_uid: int
    last_common_modseq: int
    last_common_pvt_modseq: int
    last_messages_count: int = 0
    changes_during_sync: bool = False


@_item
class MailboxTreeNode:
    """`N`: one node of the sender's mailbox tree (§6.4)."""

    name: tuple[str, ...]
    existence: str  # "n", "y" or "d"
    mailbox_guid: str | None = None
    uid_validity: int = 0
    uid_next: int = 0
    last_renamed_or_created: int = 0
    subscribed: bool = False
    last_subscription_change: int = 0


@_item
class MailboxDelete:
    """`D`: separator, escape char and the sender's deletion records (§6.5).

    Each record is (32-hex id, UNIX timestamp).
    """

    hierarchy_sep: str
    escape_char: str | None = None
    mailboxes: tuple[tuple[str, int], ...] = ()
    dirs: tuple[tuple[str, int], ...] = ()
    unsubscribes: tuple[tuple[str, int], ...] = ()


@_item
class CacheField:
    """`c`: a cache decision, nested in `Mailbox.cache_fields` (§6.6)."""

    name: str
    decision: str
    last_used: int = 0


@_item
class Mailbox:
    """`B`: the mailbox record both sides exchange per mailbox (§6.6)."""

    mailbox_guid: str
    uid_validity: int
    uid_next: int
    messages_count: int
    first_recent_uid: int
    highest_modseq: int
    highest_pvt_modseq: int
    mailbox_lost: bool = False
    mailbox_ignore: bool = False
    cache_fields: tuple[CacheField, ...] | None = ()
    have_guids: bool = False
    have_save_guids: bool = False
    have_only_guid128: bool = False


@_item
class MailboxAttribute:
    """`A`: one METADATA attribute (§6.7). A streamed value is read into `value`."""

    type: str  # "p" or "s"
    key: str
    value: str | None = None
    stream: bool = False
    deleted: bool = False
    last_change: int = 0
    modseq: int = 0


@_item
class MailChange:
    """`C`: a save, expunge or flag change of one message (§6.8)."""

    type: str  # "s", "e" or "f"
    uid: int
    guid: str | None = None
    hdr_hash: str | None = None
    modseq: int = 0
    pvt_modseq: int = 0
    add_flags: int = 0
    remove_flags: int = 0
    final_flags: int = 0
    keywords_reset: bool = False
    keyword_changes: tuple[str, ...] = ()
    received_timestamp: int = 0
    virtual_size: int | None = None


@_item
class MailRequest:
    """`R`: ask the peer for a message body (§6.9)."""

    guid: str | None = None
    uid: int = 0


@_item
class Mail:
    """`M`: a message body and its dates (§6.10). `body` None = no stream (expunged)."""

    guid: str | None = None
    uid: int = 0
    pop3_uidl: str | None = None
    pop3_order: int = 0
    received_date: int = 0
    saved_date: int = 0
    body: BinaryIO | None = field(default=None, compare=False, repr=False)


@_item
class Finish:
    """`F`: the slave's outcome (§6.11)."""

    error: str | None = None
    mail_error: int = 0
    require_full_resync: bool = False


@_item
class Done:
    """`X`: the sender is closing."""


Item = (
    Handshake
    | MailboxState
    | MailboxTreeNode
    | MailboxDelete
    | Mailbox
    | MailboxAttribute
    | MailChange
    | MailRequest
    | Mail
    | Finish
    | Done
    | Marker
)
