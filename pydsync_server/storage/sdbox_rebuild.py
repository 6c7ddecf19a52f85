"""Rebuilding an sdbox mailbox's index from its `u.<uid>` files, as `doveadm
force-resync` does (storage-formats.md §4.3).

Every readable `u.<n>` (primary, then alt) becomes UID n; flags, keywords and modseqs
come from the old index, else from `dovecot.index.backup`; the mailbox GUID and
UIDVALIDITY are kept when the old index (or backup) has them, else new ones are
made; `rebuild_count` goes up by one. The new log replaces the old one atomically
while the old one is locked; the old snapshot is kept as `dovecot.index.backup`.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StorageError
from .dbox_file import DboxCorruptError
from .dovecot_index import (
    DBOX_HDR,
    IndexPaths,
    IndexState,
    LockedLog,
    LogFormatError,
    create_log,
    locked_log,
    new_log_header,
    parse_index,
    read_index,
    replace_log,
)
from .dovecot_index import Transaction as LogTransaction
from .sdbox_mailbox import FLAG_ALT, SYSTEM_FLAGS, dbox_hdr, read_file_info

_UID_FILE = re.compile(r"u\.([1-9][0-9]{0,9})")


@dataclass
class RebuildResult:
    """What a rebuild found: the UIDs it indexed and the files it had to leave out."""

    uids: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Identity:
    guid: bytes
    uid_validity: int
    next_uid: int
    rebuild_count: int


def scan_files(box_dir: Path, alt_dir: Path | None, result: RebuildResult) -> dict[int, bool]:
    """UID -> in alt storage, for every readable `u.<n>` (primary wins over alt)."""
    found: dict[int, bool] = {}
    for directory, alt in ((box_dir, False), (alt_dir, True)):
        if directory is None:
            continue
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        for name in names:
            match = _UID_FILE.fullmatch(name)
            if match is None:
                if name.startswith("u."):
                    result.skipped.append(f"{directory / name}: not a u.<uid> name")
                continue
            uid = int(match[1])
            if uid in found or uid > 0xFFFFFFFF:
                continue
            try:
                read_file_info(directory / name)
            except (DboxCorruptError, OSError) as exc:
                result.skipped.append(str(exc))
                continue
            found[uid] = alt
    return found


def _old_states(paths: IndexPaths, locked: LockedLog | None) -> list[IndexState]:
    """The old index (whatever is readable of it), then the backup snapshot."""
    states = []
    try:
        states.append(read_index(paths, locked.data if locked else None).state)
    except (LogFormatError, StorageError):
        pass
    with contextlib.suppress(OSError, LogFormatError):
        states.append(parse_index(paths.backup.read_bytes(), str(paths.backup)).state)
    return states


def _identity(states: list[IndexState], allocate: int | None, new_guid: bytes) -> Identity:
    guid, uid_validity, next_uid, count = b"", 0, 1, 0
    for st in states:
        hdr = st.ext_header(DBOX_HDR.name)
        if not guid and hdr is not None and len(hdr) >= 20 and hdr[4:20] != bytes(16):
            guid, count = bytes(hdr[4:20]), struct.unpack_from("<I", hdr)[0]
        uid_validity = uid_validity or st.uid_validity
        next_uid = max(next_uid, st.next_uid)
    return Identity(guid or new_guid, uid_validity or (allocate or 0), next_uid, count + 1)


def rebuild(
    box_dir: Path,
    alt_dir: Path | None,
    *,
    now: int,
    new_guid: bytes,
    allocate_uid_validity: Callable[[], int],
) -> RebuildResult:
    """Rebuild the index of the mailbox in `box_dir`; raises StorageError."""
    paths = IndexPaths(box_dir)
    result = RebuildResult()
    with _lock_if_present(paths) as locked:
        states = _old_states(paths, locked)
        files = scan_files(box_dir, alt_dir, result)
        needs_uidv = not any(st.uid_validity for st in states)
        ident = _identity(states, allocate_uid_validity() if needs_uidv else None, new_guid)
        log = _log_for(ident, files, states)
        result.uids = sorted(files)
        if locked is None:
            if not create_log(paths.log, new_log_header(now), log):
                raise StorageError(f"{paths.log} appeared during the rebuild; run it again")
            return result
        if paths.index.exists():
            os.replace(paths.index, paths.backup)
        for stale in (paths.log2, paths.cache):
            stale.unlink(missing_ok=True)
        replace_log(paths.log, new_log_header(now), log)
    return result


@contextlib.contextmanager
def _lock_if_present(paths: IndexPaths) -> Iterator[LockedLog | None]:
    try:
        with locked_log(paths.log) as locked:
            yield locked
    except FileNotFoundError:
        yield None


def _log_for(ident: Identity, files: dict[int, bool], states: list[IndexState]) -> LogTransaction:
    """The whole new index as one transaction (§4.4), keeping per-UID flags, keywords
    and modseqs from the first old state that has the UID."""
    t = LogTransaction(sync=True)
    t.enable_modseqs(IndexState())
    t.ext_intro(DBOX_HDR)
    t.ext_hdr_update(0, dbox_hdr(ident.guid, ident.rebuild_count))
    t.set_uid_validity(ident.uid_validity)
    kept = {}
    modseqs = []
    for uid in sorted(files):
        st = next((st for st in states if uid in st.messages), None)
        kept[uid] = st.messages[uid] if st is not None else None
        if st is not None:
            modseqs.append((uid, st.message_modseq(st.messages[uid])))
    t.append(
        (uid, ((old.flags & SYSTEM_FLAGS) if old else 0) | (FLAG_ALT if files[uid] else 0))
        for uid, old in kept.items()
    )
    for name in sorted({kw for old in kept.values() if old for kw in old.keywords}):
        t.keyword_update(name, True, [u for u, old in kept.items() if old and name in old.keywords])
    highest = max((st.modseq for st in states), default=0)
    t.modseq_update(modseqs + ([(0, highest)] if highest else []))
    top = max(files, default=0)
    t.set_next_uid(max(ident.next_uid, top + 1))
    return t
