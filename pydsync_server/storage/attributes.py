"""What every driver checks of a mailbox attribute write (storage-formats.md §7.7).

Keys come from the wire (`A` items, dsync-protocol.md §6.7) or from a client, without
the `/private/` or `/shared/` prefix; the type says which of the two it was.
"""

from __future__ import annotations

from ..errors import MailError, StorageError

ATTRIBUTE_TYPES = ("p", "s")  # private, shared: separate key spaces (dsync-algorithm.md §5)
MAX_TOMBSTONES = 1000
"""Deleted attributes a mailbox remembers for dsync; the oldest are forgotten first, as
Dovecot forgets deletions once its transaction log rotates."""


def check_attribute(type_: str, key: str) -> None:
    """Raise StorageError (PARAMS) for a type other than p/s or an unusable key."""
    if type_ not in ATTRIBUTE_TYPES:
        raise StorageError(f"Invalid attribute type {type_!r}", MailError.PARAMS)
    if not key or "\0" in key:
        raise StorageError(f"Invalid attribute key {key!r}", MailError.PARAMS)
