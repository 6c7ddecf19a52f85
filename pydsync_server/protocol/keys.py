"""The key-header table of protocol 3.5: item chars, names, keys, required keys, min minor.

Data only (dsync-protocol.md §5.3). Dovecot sends each record's fields in the order of
its own header line, and so do we.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .escape import TAB, tab_escape

PROTOCOL_MAJOR = 3
OWN_MINOR = 5

MINOR_ATTRIBUTES = 1  # A items and the attribute EOL
MINOR_SAVE_GUIDS = 2  # B.have_save_guids is honoured
MINOR_FINISH = 3  # the F item
MINOR_HDR_HASH_V2 = 4  # header hash version 3 (§8.8)


@dataclass(frozen=True)
class ItemSpec:
    """One line of the key header: an item type as Dovecot's `items[]` table has it."""

    char: str
    name: str
    keys: tuple[str, ...]
    required: tuple[str, ...]
    min_minor: int = 0


_HANDSHAKE_KEYS = (
    "hostname", "sync_ns_prefix", "sync_box", "sync_box_guid", "sync_type", "debug",
    "sync_visible_namespaces", "exclude_mailboxes", "send_mail_requests", "backup_send",
    "backup_recv", "lock_timeout", "no_mail_sync", "no_backup_overwrite", "purge_remote",
    "no_notify", "sync_since_timestamp", "sync_max_size", "sync_flags",
    "sync_until_timestamp", "virtual_all_box", "empty_hdr_workaround",
    "import_commit_msgs_interval", "hashed_headers", "alt_char",
)

ITEM_SPECS: tuple[ItemSpec, ...] = (
    ItemSpec("H", "handshake", _HANDSHAKE_KEYS, ("hostname",)),
    ItemSpec("S", "mailbox_state",
             ("mailbox_guid", "last_uidvalidity", "last_common_uid", "last_common_modseq",
              "last_common_pvt_modseq", "last_messages_count", "changes_during_sync"),
             ("mailbox_guid", "last_uidvalidity", "last_common_uid", "last_common_modseq",
              "last_common_pvt_modseq")),
    ItemSpec("N", "mailbox_tree_node",
             ("name", "existence", "mailbox_guid", "uid_validity", "uid_next",
              "last_renamed_or_created", "subscribed", "last_subscription_change"),
             ("name", "existence")),
    ItemSpec("D", "mailbox_delete",
             ("hierarchy_sep", "escape_char", "mailboxes", "dirs", "unsubscribes"),
             ("hierarchy_sep",)),
    ItemSpec("B", "mailbox",
             ("mailbox_guid", "uid_validity", "uid_next", "messages_count",
              "first_recent_uid", "highest_modseq", "highest_pvt_modseq", "mailbox_lost",
              "mailbox_ignore", "cache_fields", "have_guids", "have_save_guids",
              "have_only_guid128"),
             ("mailbox_guid", "uid_validity", "uid_next", "messages_count",
              "first_recent_uid", "highest_modseq", "highest_pvt_modseq")),
    ItemSpec("A", "mailbox_attribute",
             ("type", "key", "value", "stream", "deleted", "last_change", "modseq"),
             ("type", "key"), MINOR_ATTRIBUTES),
    ItemSpec("C", "mail_change",
             ("type", "uid", "guid", "hdr_hash", "modseq", "pvt_modseq", "add_flags",
              "remove_flags", "final_flags", "keywords_reset", "keyword_changes",
              "received_timestamp", "virtual_size"),
             ("type", "uid")),
    ItemSpec("R", "mail_request", ("guid", "uid"), ()),
    ItemSpec("M", "mail",
             ("guid", "uid", "pop3_uidl", "pop3_order", "received_date", "saved_date",
              "stream"),
             ()),
    ItemSpec("F", "finish", ("error", "mail_error", "require_full_resync"), (),
             MINOR_FINISH),
    ItemSpec("c", "mailbox_cache_field", ("name", "decision", "last_used"),
             ("name", "decision")),
)

SPECS_BY_CHAR: Mapping[str, ItemSpec] = {spec.char: spec for spec in ITEM_SPECS}

KeyHeaders = Mapping[str, tuple[str, ...]]
"""Item char -> the ordered key names one side announced for it."""

KEY_HEADERS: KeyHeaders = {spec.char: spec.keys for spec in ITEM_SPECS}
"""What Dovecot 2.3.19 (and pydsync) announce."""

KEY_HEADERS_24: KeyHeaders = {
    **KEY_HEADERS,
    "H": tuple(key for key in _HANDSHAKE_KEYS if key != "import_commit_msgs_interval"),
}
"""What Dovecot 2.4 announces: no `import_commit_msgs_interval` (dovecot-2.4-notes §4)."""


def version_line(minor: int) -> bytes:
    return b"VERSION\tdsync\t%d\t%d\n" % (PROTOCOL_MAJOR, minor)


def header_block(minor: int, key_headers: KeyHeaders = KEY_HEADERS) -> bytes:
    """The key header lines a side with this minor announces, ending with `.`.

    Items newer than `minor` are left out, as a minor-0 peer does for `A` and `F`.
    """
    lines = []
    for spec in ITEM_SPECS:
        keys = key_headers.get(spec.char)
        if keys is None or spec.min_minor > minor:
            continue
        joined = TAB.join(tab_escape(key.encode()) for key in keys)
        lines.append(spec.char.encode() + joined + b"\n")
    return b"".join(lines) + b".\n"
