"""The mailbox tree one brain sends and receives (dsync-algorithm.md §2.1–§2.4).

A tree maps a name (tuple of raw hierarchy levels, namespace prefix included) to a
node. Local trees are filled from the storage, its subscriptions and its mailbox log;
remote trees from the peer's `N` items and `D` item. Names travel as levels, so they
are independent of either side's separator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ..errors import RemoteProtocolError
from ..protocol.items import MailboxDelete, MailboxTreeNode
from ..storage.base import LogType, MailboxEntry, Storage, name_hash

Name = tuple[str, ...]


class Existence(Enum):
    NONEXISTENT = "n"
    EXISTS = "y"
    DELETED = "d"


@dataclass
class Node:
    name: Name
    existence: Existence = Existence.NONEXISTENT
    guid: bytes | None = None
    uid_validity: int = 0
    uid_next: int = 0
    last_renamed_or_created: int = 0
    subscribed: bool = False
    last_subscription_change: int = 0
    temp: bool = False  # moved aside to a temporary name by the merge

    @property
    def is_mailbox(self) -> bool:
        return self.existence is Existence.EXISTS and self.guid is not None


@dataclass
class DeletionRecords:
    mailboxes: list[tuple[bytes, int]] = field(default_factory=list)
    dirs: list[tuple[bytes, int]] = field(default_factory=list)
    unsubscribes: list[tuple[bytes, int]] = field(default_factory=list)


@dataclass
class MailboxTree:
    separator: str
    escape_char: str = "%"
    nodes: dict[Name, Node] = field(default_factory=dict)
    deletions: DeletionRecords = field(default_factory=DeletionRecords)

    def get_or_create(self, name: Name) -> Node:
        node = self.nodes.get(name)
        if node is None:
            node = Node(name)
            self.nodes[name] = node
        for depth in range(1, len(name)):
            self.nodes.setdefault(name[:depth], Node(name[:depth]))
        return node

    def guid_index(self) -> dict[bytes, Node]:
        return {n.guid: n for n in self.nodes.values() if n.guid is not None and n.is_mailbox}

    def vname(self, name: Name) -> str:
        return self.separator.join(name)

    def sorted_names(self) -> list[Name]:
        """Depth-first pre-order: parents before children, siblings byte-sorted."""
        return sorted(
            self.nodes, key=lambda n: [level.encode("utf-8", "surrogateescape") for level in n]
        )

    def has_existing_descendant(self, name: Name) -> bool:
        depth = len(name)
        return any(
            len(other) > depth and other[:depth] == name and node.existence is Existence.EXISTS
            for other, node in self.nodes.items()
        )


def split_vname(vname: str, separator: str) -> Name:
    return tuple(vname.split(separator))


def fill_local_tree(
    storage: Storage,
    *,
    wanted: MailboxFilter,
) -> MailboxTree:
    """Build the local tree from storage, subscriptions and mailbox log (§2.2)."""
    tree = MailboxTree(storage.separator, storage.escape_char)
    for entry in storage.list_mailboxes():
        if not wanted.lists(entry):
            continue
        node = tree.get_or_create(split_vname(entry.vname, storage.separator))
        node.existence = Existence.EXISTS
        node.guid = entry.guid
        node.uid_validity = entry.uid_validity
        node.uid_next = entry.uid_next
    for vname in storage.subscriptions():
        if wanted.subscription(vname):
            tree.get_or_create(split_vname(vname, storage.separator)).subscribed = True
    _apply_mailbox_log(tree, storage)
    return tree


def _apply_mailbox_log(tree: MailboxTree, storage: Storage) -> None:
    by_hash = {name_hash(tree.vname(name)): node for name, node in tree.nodes.items()}
    guids = tree.guid_index()
    for record in storage.mailbox_log():
        node = by_hash.get(record.key)
        if record.type is LogType.DELETE_MAILBOX:
            if record.key not in guids:
                tree.deletions.mailboxes.append((record.key, record.timestamp))
        elif record.type is LogType.DELETE_DIR:
            if node is None or node.existence is not Existence.EXISTS:
                tree.deletions.dirs.append((record.key, record.timestamp))
        elif record.type in (LogType.RENAME, LogType.CREATE_DIR):
            if node is not None:
                node.last_renamed_or_created = record.timestamp
        elif record.type is LogType.SUBSCRIBE:
            if node is not None:
                node.last_subscription_change = record.timestamp
        elif record.type is LogType.UNSUBSCRIBE:
            if node is not None:
                node.last_subscription_change = record.timestamp
            else:
                tree.deletions.unsubscribes.append((record.key, record.timestamp))


@dataclass  # not frozen: never changed or hashed; frozen doubles its start-up cost
class MailboxFilter:
    """-m / -g / -x as tree filters (§7.2, §7.3)."""

    mailbox: str | None = None
    mailbox_guid: bytes | None = None
    exclude: tuple[str, ...] = ()

    def lists(self, entry: MailboxEntry) -> bool:
        if self.mailbox_guid is not None and entry.guid != self.mailbox_guid:
            return False
        if self.mailbox and not _matches_mailbox(self.mailbox, entry):
            return False
        return not any(_matches_mask(mask, entry) for mask in self.exclude)

    def subscription(self, vname: str) -> bool:
        if self.mailbox_guid is not None:
            return False
        if self.mailbox and not self.mailbox.startswith("\\"):
            return _wildcard(self.mailbox, vname, percent_stops=True)
        return True


def _matches_mailbox(pattern: str, entry: MailboxEntry) -> bool:
    if pattern.startswith("\\"):
        return pattern.lower() in {use.lower() for use in entry.special_use}
    if pattern.upper() == "INBOX":  # INBOX is case-insensitive
        return entry.vname == "INBOX"
    return _wildcard(pattern, entry.vname, percent_stops=True)


def _matches_mask(mask: str, entry: MailboxEntry) -> bool:
    if mask.startswith("\\"):
        return mask.lower() in {use.lower() for use in entry.special_use}
    return _wildcard(mask, entry.vname, percent_stops=False)


def _wildcard(pattern: str, name: str, *, percent_stops: bool, sep: str = "/") -> bool:
    """IMAP LIST-style match: `*` any run, `%` any run without the separator, `?` one char."""
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "*" or (head == "%" and not percent_stops):
        return any(
            _wildcard(rest, name[i:], percent_stops=percent_stops) for i in range(len(name) + 1)
        )
    if head == "%":
        for i in range(len(name) + 1):
            if _wildcard(rest, name[i:], percent_stops=percent_stops):
                return True
            if i < len(name) and name[i] == sep:
                return False
        return False
    if not name:
        return False
    if head == "?" or head == name[0]:
        return _wildcard(rest, name[1:], percent_stops=percent_stops)
    return False


def tree_to_items(tree: MailboxTree) -> list[MailboxTreeNode]:
    """The `N` items for a tree, parents before children (§6.4)."""
    items = []
    for name in tree.sorted_names():
        node = tree.nodes[name]
        if node.existence is Existence.DELETED:
            continue
        items.append(
            MailboxTreeNode(
                name=name,
                existence=node.existence.value,
                mailbox_guid=node.guid.hex() if node.guid is not None else None,
                uid_validity=node.uid_validity,
                uid_next=node.uid_next,
                last_renamed_or_created=node.last_renamed_or_created,
                subscribed=node.subscribed,
                last_subscription_change=node.last_subscription_change,
            )
        )
    return items


def deletions_to_item(tree: MailboxTree) -> MailboxDelete:
    def pairs(records: list[tuple[bytes, int]]) -> tuple[tuple[str, int], ...]:
        return tuple((key.hex(), ts) for key, ts in records)

    return MailboxDelete(
        hierarchy_sep=tree.separator,
        escape_char=tree.escape_char,
        mailboxes=pairs(tree.deletions.mailboxes),
        dirs=pairs(tree.deletions.dirs),
        unsubscribes=pairs(tree.deletions.unsubscribes),
    )


def add_remote_node(
    tree: MailboxTree, item: MailboxTreeNode, fix_name: Callable[[Name], Name]
) -> None:
    """Insert a received `N` into the remote tree under a name we can store (§2.4)."""
    if not item.name or any(level == "" for level in item.name):
        raise RemoteProtocolError("mailbox_tree_node: Invalid name")
    node = tree.get_or_create(fix_name(item.name))
    node.existence = {"y": Existence.EXISTS, "d": Existence.DELETED}.get(
        item.existence, Existence.NONEXISTENT
    )
    try:
        guid = bytes.fromhex(item.mailbox_guid) if item.mailbox_guid else None
    except ValueError as exc:
        raise RemoteProtocolError("mailbox_tree_node: Invalid mailbox_guid") from exc
    node.guid = guid if guid and guid != bytes(16) else None
    node.uid_validity = item.uid_validity
    node.uid_next = item.uid_next
    node.last_renamed_or_created = item.last_renamed_or_created
    node.subscribed = item.subscribed
    node.last_subscription_change = item.last_subscription_change


def remote_deletions(item: MailboxDelete) -> DeletionRecords:
    def parse(pairs: tuple[tuple[str, int], ...]) -> list[tuple[bytes, int]]:
        try:
            return [(bytes.fromhex(key), ts) for key, ts in pairs]
        except ValueError as exc:
            raise RemoteProtocolError("mailbox_delete: Invalid GUID") from exc

    return DeletionRecords(parse(item.mailboxes), parse(item.dirs), parse(item.unsubscribes))
