"""Merge the local and the remote mailbox tree into a list of local changes (§2.3–§2.5).

Both brains run this on the same two trees (with roles swapped) and apply only the
changes to their own storage, so every tie is broken by data, never by role. Both
trees are updated in memory to the merged result; the master then walks its own.
Renames follow §2.5.1 for the cases that occur in practice (a mailbox renamed on one
side, or on both with the newer rename winning, a name taken by another mailbox moved
to a temporary name); cycles beyond that are left to a later run, as Dovecot does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..storage.base import name_hash
from .tree import DeletionRecords, Existence, MailboxTree, Name, Node


class SyncType(Enum):
    TWOWAY = "twoway"
    PRESERVE_LOCAL = "preserve-local"  # backup source: never changes itself
    PRESERVE_REMOTE = "preserve-remote"  # backup destination: becomes the source


class ChangeKind(Enum):
    DELETE_BOX = "delete mailbox"
    DELETE_DIR = "delete dir"
    CREATE_BOX = "create mailbox"
    CREATE_DIR = "create dir"
    RENAME = "rename"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


@dataclass  # not frozen: never changed or hashed; frozen doubles its start-up cost
class TreeChange:
    kind: ChangeKind
    name: Name
    guid: bytes | None = None
    uid_validity: int = 0
    new_name: Name | None = None


def apply_deletions(local: MailboxTree, remote: MailboxTree, remote_dels: DeletionRecords) -> None:
    """Turn both sides' deletion records into DELETED nodes (§2.3)."""
    _apply_one_side(local, remote, remote_dels)
    _apply_one_side(remote, local, local.deletions)


def _apply_one_side(found_in: MailboxTree, mark_in: MailboxTree, dels: DeletionRecords) -> None:
    hashes = {name_hash(found_in.vname(name)): node for name, node in found_in.nodes.items()}
    guids = found_in.guid_index()
    for guid, _ts in dels.mailboxes:
        node = guids.get(guid)
        if node is not None:
            _mark_deleted(mark_in, node, guid=guid, unsubscribe_ts=None)
    for key, ts in dels.dirs:
        node = hashes.get(key)
        if node is not None and ts > node.last_renamed_or_created:
            _mark_deleted(mark_in, node, guid=None, unsubscribe_ts=None)
    for key, ts in dels.unsubscribes:
        node = hashes.get(key)
        if node is not None and ts > node.last_subscription_change:
            _mark_deleted(mark_in, node, guid=None, unsubscribe_ts=ts)


def _mark_deleted(
    tree: MailboxTree, found: Node, *, guid: bytes | None, unsubscribe_ts: int | None
) -> None:
    other = tree.get_or_create(found.name)
    if other.existence is Existence.EXISTS and (other.guid is not None or guid is None):
        if unsubscribe_ts is None:
            return  # the name has already been recreated
    if unsubscribe_ts is not None:
        other.subscribed = False
        other.last_subscription_change = unsubscribe_ts
        return
    other.existence = Existence.DELETED
    if guid is not None:
        other.guid = guid


class _Merge:
    def __init__(self, local: MailboxTree, remote: MailboxTree, sync_type: SyncType) -> None:
        self.local = local
        self.remote = remote
        self.type = sync_type
        self.changes: list[TreeChange] = []

    def run(self) -> list[TreeChange]:
        self._delete_mailboxes()
        self._inherit_timestamps(self.local)
        self._inherit_timestamps(self.remote)
        self._renames()
        if self.type is SyncType.PRESERVE_LOCAL:
            self._delete_wrong(self.remote, self.local, emit=False)
        elif self.type is SyncType.PRESERVE_REMOTE:
            self._delete_wrong(self.local, self.remote, emit=True)
        if self.type is not SyncType.PRESERVE_LOCAL:
            self._create_mailboxes(self.remote, self.local, emit=True)
        if self.type is not SyncType.PRESERVE_REMOTE:
            self._create_mailboxes(self.local, self.remote, emit=False)
        self._dirs_and_subscriptions()
        return self.changes

    # step 2
    def _delete_mailboxes(self) -> None:
        for tree, other in ((self.remote, self.local), (self.local, self.remote)):
            for node in list(tree.nodes.values()):
                if node.existence is not Existence.DELETED or node.guid is None:
                    continue
                if self.type is SyncType.TWOWAY:
                    twin = other.guid_index().get(node.guid)
                    if twin is not None:
                        self._delete_node(other, twin)
                node.guid = None
                node.uid_validity = 0

    def _delete_node(self, tree: MailboxTree, node: Node) -> None:
        if tree is self.local and node.existence is not Existence.DELETED:
            self.changes.append(TreeChange(ChangeKind.DELETE_BOX, node.name, guid=node.guid))
        node.existence = Existence.DELETED
        node.guid = None
        node.uid_validity = 0

    # step 3
    @staticmethod
    def _inherit_timestamps(tree: MailboxTree) -> None:
        for name in tree.sorted_names():
            if len(name) > 1 and name[:-1] in tree.nodes:
                parent = tree.nodes[name[:-1]]
                node = tree.nodes[name]
                node.last_renamed_or_created = max(
                    node.last_renamed_or_created, parent.last_renamed_or_created
                )

    # step 4
    def _renames(self) -> None:
        for _ in range(3 * (len(self.local.nodes) + len(self.remote.nodes)) + 1):
            if not self._one_rename():
                return

    def _one_rename(self) -> bool:
        """Settle one mailbox known to both sides under different names.

        Both brains walk the same pairs in the same order (parents first, then by GUID)
        and give a name away only once, so two mailboxes racing for one name end up the
        same on both sides: the winner takes it, the other keeps its other name.
        """
        local_guids, remote_guids = self.local.guid_index(), self.remote.guid_index()
        common = [g for g in local_guids if g in remote_guids]
        agreed = {
            local_guids[g].name for g in common if local_guids[g].name == remote_guids[g].name
        }
        differing = sorted(
            (g for g in common if local_guids[g].name != remote_guids[g].name),
            key=lambda g: (min(len(local_guids[g].name), len(remote_guids[g].name)), g),
        )
        for guid in differing:
            lnode, rnode = local_guids[guid], remote_guids[guid]
            if self._local_wins(lnode, rnode):
                first, second = lnode.name, rnode.name
            else:
                first, second = rnode.name, lnode.name
            target = next((name for name in (first, second) if name not in agreed), None)
            if target is None:
                continue
            if lnode.name != target:
                self._rename_in(self.local, lnode.name, target)
            if rnode.name != target:
                self._rename_in(self.remote, rnode.name, target)
            return True
        return False

    def _local_wins(self, lnode: Node, rnode: Node) -> bool:
        if self.type is SyncType.PRESERVE_LOCAL:
            return True
        if self.type is SyncType.PRESERVE_REMOTE:
            return False
        if lnode.temp != rnode.temp:
            return rnode.temp  # a temporary name never wins (§2.5.1 ts())
        if lnode.last_renamed_or_created != rnode.last_renamed_or_created:
            return lnode.last_renamed_or_created > rnode.last_renamed_or_created
        # Same rename time on both: both sides must choose the same name.
        return _name_key(lnode.name) < _name_key(rnode.name)

    def _rename_in(self, tree: MailboxTree, old: Name, new: Name) -> None:
        if new[: len(old)] == old:
            # Into its own subtree: step aside under a temporary name first, as
            # Dovecot does ("Don't introduce loop", §2.5.1).
            aside = self._temp_name(tree, old)
            self._move_subtree(tree, old, aside, temp=True)
            old = aside
        occupant = tree.nodes.get(new)
        if occupant is not None and (occupant.is_mailbox or tree.has_existing_descendant(new)):
            self._move_subtree(tree, new, self._temp_name(tree, new), temp=True)
        if old in tree.nodes:
            self._move_subtree(tree, old, new)

    def _temp_name(self, tree: MailboxTree, name: Name) -> Name:
        counter = 1
        while True:
            candidate = name[:-1] + (f"{name[-1][:86]}-temp-{counter:x}",)
            if candidate not in tree.nodes:
                return candidate
            counter += 1

    def _move_subtree(self, tree: MailboxTree, old: Name, new: Name, *, temp: bool = False) -> None:
        moved = {n: node for n, node in tree.nodes.items() if n[: len(old)] == old}
        exists = any(node.existence is Existence.EXISTS for node in moved.values())
        if tree is self.local and exists:
            self.changes.append(TreeChange(ChangeKind.RENAME, old, new_name=new))
        renamed_at = tree.nodes[old].last_renamed_or_created if old in tree.nodes else 0
        for name in moved:
            del tree.nodes[name]
        for name, node in moved.items():
            node.name = new + name[len(old) :]
            target = tree.get_or_create(node.name)
            _copy_node(node, target)
        tree.nodes[new].last_renamed_or_created = 0 if temp else renamed_at
        tree.nodes[new].temp = temp

    # step 5
    def _delete_wrong(self, fix: MailboxTree, wanted: MailboxTree, *, emit: bool) -> None:
        for name in reversed(fix.sorted_names()):
            node = fix.nodes[name]
            if not node.is_mailbox:
                continue
            want = wanted.nodes.get(name)
            if (
                want is None
                or not want.is_mailbox
                or want.guid != node.guid
                or want.uid_validity != node.uid_validity
                or want.uid_next < node.uid_next
            ):
                if emit:
                    self._delete_node(fix, node)
                else:
                    node.existence = Existence.DELETED
                    node.guid = None

    # step 6
    def _create_mailboxes(self, source: MailboxTree, target: MailboxTree, *, emit: bool) -> None:
        target_guids = target.guid_index()
        for name in source.sorted_names():
            node = source.nodes[name]
            if not node.is_mailbox or node.guid in target_guids:
                continue
            twin = target.get_or_create(name)
            if twin.is_mailbox and twin.guid == node.guid:
                continue
            if emit:
                self.changes.append(
                    TreeChange(ChangeKind.CREATE_BOX, name, node.guid, node.uid_validity)
                )
            if not twin.is_mailbox:
                twin.existence = Existence.EXISTS
                twin.guid = node.guid
                twin.uid_validity = node.uid_validity
                twin.uid_next = 0

    # step 8
    def _dirs_and_subscriptions(self) -> None:
        names = sorted(set(self.local.nodes) | set(self.remote.nodes), key=_name_key)
        for name in names:
            lnode = self.local.get_or_create(name)
            rnode = self.remote.get_or_create(name)
            self._sync_dir(lnode, rnode)
            self._sync_subscription(lnode, rnode)
        for name in reversed(names):
            self._delete_dir(self.local.nodes[name], self.remote.nodes[name])

    def _sync_dir(self, lnode: Node, rnode: Node) -> None:
        l_exists = lnode.existence is Existence.EXISTS
        r_exists = rnode.existence is Existence.EXISTS
        if l_exists and rnode.existence is Existence.NONEXISTENT:
            if self.type is not SyncType.PRESERVE_REMOTE:
                rnode.existence = Existence.EXISTS
        elif r_exists and lnode.existence is Existence.NONEXISTENT and rnode.guid is None:
            if self.type is not SyncType.PRESERVE_LOCAL:
                lnode.existence = Existence.EXISTS
                self.changes.append(TreeChange(ChangeKind.CREATE_DIR, lnode.name))

    def _sync_subscription(self, lnode: Node, rnode: Node) -> None:
        if lnode.subscribed == rnode.subscribed:
            return
        if self.type is SyncType.PRESERVE_LOCAL:
            take_remote = False
        elif self.type is SyncType.PRESERVE_REMOTE:
            take_remote = True
        elif lnode.last_subscription_change != rnode.last_subscription_change:
            take_remote = rnode.last_subscription_change > lnode.last_subscription_change
        else:
            take_remote = rnode.subscribed
        if take_remote:
            lnode.subscribed = rnode.subscribed
            lnode.last_subscription_change = rnode.last_subscription_change
            kind = ChangeKind.SUBSCRIBE if rnode.subscribed else ChangeKind.UNSUBSCRIBE
            self.changes.append(TreeChange(kind, lnode.name))
        else:
            rnode.subscribed = lnode.subscribed
            rnode.last_subscription_change = lnode.last_subscription_change

    def _delete_dir(self, lnode: Node, rnode: Node) -> None:
        if lnode.guid is not None or rnode.guid is not None:
            return
        if (
            lnode.existence is Existence.DELETED
            and rnode.existence is Existence.EXISTS
            and not self.remote.has_existing_descendant(rnode.name)
            and self.type is not SyncType.PRESERVE_REMOTE
        ):
            rnode.existence = Existence.NONEXISTENT
        elif (
            rnode.existence is Existence.DELETED
            and lnode.existence is Existence.EXISTS
            and not self.local.has_existing_descendant(lnode.name)
            and self.type is not SyncType.PRESERVE_LOCAL
        ):
            lnode.existence = Existence.NONEXISTENT
            self.changes.append(TreeChange(ChangeKind.DELETE_DIR, lnode.name))


def _copy_node(src: Node, dst: Node) -> None:
    dst.existence = src.existence
    dst.guid = src.guid
    dst.uid_validity = src.uid_validity
    dst.uid_next = src.uid_next
    dst.last_renamed_or_created = src.last_renamed_or_created
    dst.subscribed = src.subscribed
    dst.last_subscription_change = src.last_subscription_change
    dst.temp = src.temp


def _depth_key(name: Name) -> tuple[int, list[bytes]]:
    return len(name), _name_key(name)


def _name_key(name: Name) -> list[bytes]:
    return [level.encode("utf-8", "surrogateescape") for level in name]


def sync_trees(local: MailboxTree, remote: MailboxTree, sync_type: SyncType) -> list[TreeChange]:
    """Merge both trees in place; return the changes this side applies, in order."""
    return _Merge(local, remote, sync_type).run()
