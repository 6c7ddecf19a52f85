"""The store's mailbox-attribute dict: Dovecot's `file:` dict `dovecot-attributes`.

Dovecot 2.3 keeps attribute values there when configured with `mail_attribute_dict =
file:%h/Maildir/dovecot-attributes` (storage-formats.md §7.7): alternating key and value
lines, both tab-escaped as in §7.6, keys `priv/<mailbox GUID hex>/<key>` and
`shared/<GUID hex>/<key>`, in no particular order. Writers rewrite the whole file through
the dotlock `dovecot-attributes.lock` (written, fsync'ed, renamed over the file; Dovecot
waits while the lock exists), so pydsync and Dovecot can both change it. Change stamps are
not in the dict; the per-folder tracker keeps them (maildir_tracker).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import StorageError
from .maildir_files import (
    FILE_MODE,
    fsync_dir,
    lock_is_stale,
    makedirs,
    read_optional,
    storage_error,
    tab_escape,
    tab_unescape,
    write_all,
)

ATTRIBUTE_DICT = "dovecot-attributes"
AttrKey = tuple[str, str]  # (type "p"/"s", key without the /private/ or /shared/ prefix)
_PREFIXES = {"p": "priv", "s": "shared"}
_TYPES = {prefix: type_ for type_, prefix in _PREFIXES.items()}
_LOCK_TIMEOUT = 30.0
_LOCK_STALE = 120.0  # Dovecot's default dotlock stale timeout


def value_digest(value: str) -> str:
    """What the tracker remembers of a value, to notice other programs' changes."""
    return hashlib.sha1(value.encode("utf-8", "surrogateescape")).hexdigest()


def parse_dict(data: bytes) -> dict[str, str]:
    """Raw dict key -> value; a key without its value line (a torn file) is ignored."""
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return {tab_unescape(lines[i]): tab_unescape(lines[i + 1]) for i in range(0, len(lines) - 1, 2)}


def serialize_dict(entries: Mapping[str, str]) -> bytes:
    text = "".join(f"{tab_escape(k)}\n{tab_escape(v)}\n" for k, v in entries.items())
    return text.encode("utf-8", "surrogateescape")


def dict_key(guid: bytes, type_: str, key: str) -> str:
    return f"{_PREFIXES[type_]}/{guid.hex()}/{key}"


def mailbox_values(entries: Mapping[str, str], guid: bytes) -> dict[AttrKey, str]:
    """The attributes of the mailbox with this GUID, by (type, key)."""
    values: dict[AttrKey, str] = {}
    for raw, value in entries.items():
        prefix, _, rest = raw.partition("/")
        guid_hex, _, key = rest.partition("/")
        if prefix in _TYPES and key and guid_hex == guid.hex():
            values[_TYPES[prefix], key] = value
    return values


def _of_mailbox(raw: str, guid: bytes) -> bool:
    prefix, _, rest = raw.partition("/")
    return prefix in _TYPES and rest.startswith(guid.hex() + "/")


class AttributeDict:
    """One store's `dovecot-attributes` file. Methods raise StorageError."""

    def __init__(self, path: Path, hostname: str) -> None:
        self.path = path
        self.hostname = hostname

    def read(self) -> dict[str, str]:
        try:
            return parse_dict(read_optional(self.path) or b"")
        except OSError as exc:
            raise storage_error(exc, f"reading {self.path}") from exc

    def update(
        self, guid: bytes, changes: Mapping[AttrKey, str | None], new_guid: bytes | None = None
    ) -> Callable[[], None]:
        """Set (None: remove) values of the mailbox `guid`, first moving all its values
        to `new_guid` when given (a GUID change keeps the attributes). Returns an undo."""

        target = guid if new_guid is None else new_guid

        def change(entries: dict[str, str]) -> None:
            if target != guid:
                _drop(entries, target)
                for raw in [k for k in entries if _of_mailbox(k, guid)]:
                    prefix, _, rest = raw.partition("/")
                    entries[f"{prefix}/{target.hex()}{rest[len(guid.hex()) :]}"] = entries.pop(raw)
            for (type_, key), value in changes.items():
                _put(entries, dict_key(target, type_, key), value)

        previous = self._edit(change)
        return lambda: self._restore(previous)

    def drop_mailbox(self, guid: bytes) -> None:
        """Remove every value of a deleted mailbox, as Dovecot's mailbox delete does."""
        if self.path.exists():
            self._edit(lambda entries: _drop(entries, guid))

    def _restore(self, previous: Mapping[str, str | None]) -> None:
        def change(entries: dict[str, str]) -> None:
            for raw, value in previous.items():
                _put(entries, raw, value)

        self._edit(change)

    def _edit(self, change: Callable[[dict[str, str]], None]) -> dict[str, str | None]:
        """Read, change and rewrite the file under its dotlock; the previous values of
        the keys that changed (None: absent)."""
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = self._lock(lock)
        except OSError as exc:
            raise storage_error(exc, f"locking {self.path}") from exc
        try:
            try:
                old = parse_dict(read_optional(self.path) or b"")
                new = dict(old)
                change(new)
                if new != old:
                    write_all(fd, serialize_dict(new))
                    os.fsync(fd)
            finally:
                os.close(fd)
            if new == old:
                lock.unlink()
                return {}
            os.rename(lock, self.path)
        except BaseException as exc:
            lock.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise storage_error(exc, f"writing {self.path}") from exc
            raise
        try:
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise storage_error(exc, f"writing {self.path}") from exc
        return {k: old.get(k) for k in old.keys() | new.keys() if old.get(k) != new.get(k)}

    def _lock(self, lock: Path) -> int:
        """Create the dotlock (O_EXCL); a stale one is broken, a live one waited for."""
        makedirs(lock.parent)
        deadline = time.monotonic() + _LOCK_TIMEOUT
        delay = 0.005
        while True:
            try:
                return os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            except FileExistsError:
                if lock_is_stale(lock, self.hostname, _LOCK_STALE):
                    lock.unlink(missing_ok=True)
                    continue
                if time.monotonic() >= deadline:
                    raise StorageError(f"Timeout while waiting for lock {lock}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)


def _put(entries: dict[str, str], raw: str, value: str | None) -> None:
    if value is None:
        entries.pop(raw, None)
    else:
        entries[raw] = value


def _drop(entries: dict[str, str], guid: bytes) -> None:
    for raw in [k for k in entries if _of_mailbox(k, guid)]:
        del entries[raw]
