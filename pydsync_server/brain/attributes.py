"""Mailbox attributes (METADATA): which to send, and whose value wins (§5).

Export: with no usable state every attribute is sent, otherwise only those changed
since the last common modseq; a deletion is sent only when it was a real change (not
one dsync itself wrote). Import: nonexistent on either side, then "changed on one
side only" by modseq against the state, then the newer `last_change`, then modseq,
then the byte-wise larger value, so both sides pick the same winner.
"""

from __future__ import annotations

from ..protocol.items import MailboxAttribute
from ..storage.base import Attribute


def export_attributes(
    attributes: list[Attribute], last_common_modseq: int, return_all: bool
) -> list[MailboxAttribute]:
    """The `A` list: private ones first, then shared (Dovecot's iteration order)."""
    items = []
    for attr in sorted(attributes, key=lambda a: (a.type != "p", a.key)):
        changed = not attr.from_dsync and attr.modseq > last_common_modseq
        if not return_all and not changed:
            continue
        if attr.value is None and (attr.from_dsync or not changed):
            continue  # only a logged client deletion is news to the peer
        items.append(
            MailboxAttribute(
                type=attr.type,
                key=attr.key,
                value=attr.value,
                deleted=attr.value is None,
                last_change=attr.last_change,
                modseq=0 if attr.from_dsync else attr.modseq,
            )
        )
    return items


def remote_wins(remote: MailboxAttribute, local: Attribute | None, last_common_modseq: int) -> bool:
    """Whether to take the peer's value (dsync_mailbox_import_attribute, §5 table)."""
    if local is None:
        return not remote.deleted
    if remote.deleted and local.value is None:
        return False
    local_modseq = 0 if local.from_dsync else local.modseq
    ms = last_common_modseq
    if ms > 0 and local_modseq <= ms < remote.modseq:
        return True
    if ms > 0 and remote.modseq <= ms < local_modseq:
        return False
    if remote.last_change != local.last_change:
        return remote.last_change > local.last_change
    order = _compare_values(remote.value if not remote.deleted else None, local.value)
    if order == 0:
        return False
    if remote.modseq != local_modseq:
        return remote.modseq > local_modseq
    return order > 0


def _compare_values(remote: str | None, local: str | None) -> int:
    if remote is None or local is None:
        return (remote is not None) - (local is not None)
    a, b = remote.encode("utf-8", "surrogateescape"), local.encode("utf-8", "surrogateescape")
    return (a > b) - (a < b)
