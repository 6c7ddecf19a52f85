"""`doveadm purge` for mdbox (storage-formats.md §3.5): every m.N holding a record whose
refcount is 0 is rewritten. Its live records are copied, byte for byte, into new files
(in the same storage, primary or alt), the map moves them there (same map_uids) and
expunges the dead ones, and only then is the old file unlinked. Mailbox indexes do not
change: they name map_uids.

Each file being purged is flocked (skipped when another writer holds it) and the map
stays locked for the whole rewrite, so no one adds a reference meanwhile.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StorageError
from . import dbox_file as dbox
from .mdbox_map import LockedMap, MapChanges, MapRecord

if TYPE_CHECKING:
    from .mdbox_mailbox import MdboxContext


def purge(ctx: MdboxContext) -> list[str]:
    """Purge the store; the files it could not purge, with the reason, one line each."""
    if not ctx.map.read().exists:
        return []
    skipped: list[str] = []
    locks: list[int] = []
    try:
        with ctx.map.locked() as locked:
            by_file: dict[int, list[MapRecord]] = {}
            for rec in locked.view.records.values():
                by_file.setdefault(rec.file_id, []).append(rec)
            doomed = [fid for fid, recs in by_file.items() if any(r.refcount == 0 for r in recs)]
            paths: dict[int, Path] = {}
            for file_id in sorted(doomed):
                path = ctx.files.path(file_id)
                fd = _lock(path)
                if fd is None:
                    skipped.append(f"{path}: in use, not purged")
                    continue
                locks.append(fd)
                paths[file_id] = path
            _rewrite(ctx, locked, {fid: by_file[fid] for fid in paths}, paths, skipped)
    finally:
        for fd in locks:
            os.close(fd)
    return skipped


def _lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _rewrite(
    ctx: MdboxContext,
    locked: LockedMap,
    files: dict[int, list[MapRecord]],
    paths: dict[int, Path],
    skipped: list[str],
) -> None:
    if not files:
        return
    writer = ctx.files.new_writer(locked.view, append=False)
    live: list[tuple[int, int]] = []  # (map_uid, writer index)
    changes = MapChanges()
    purged: list[Path] = []
    for file_id, recs in sorted(files.items()):
        path = paths[file_id]
        try:
            copies = [(rec, _raw(path, rec)) for rec in recs if rec.refcount > 0]
        except StorageError as exc:
            skipped.append(f"{path}: {exc} (not purged: force-resync repairs it)")
            continue
        for rec, raw in copies:
            live.append((rec.map_uid, writer.add(raw, directory=path.parent)))
        changes.expunged += [rec.map_uid for rec in recs if rec.refcount == 0]
        purged.append(path)
    try:
        writer.sync()
        locations = writer.assign(locked)
        changes.highest_file_id = writer.highest_file_id
        changes.moved = {map_uid: locations[index] for map_uid, index in live}
        locked.commit(changes)
    except BaseException:
        writer.abort()
        raise
    writer.finish()
    for path in purged:
        path.unlink(missing_ok=True)  # the map no longer points into it
    if purged:
        dbox.fsync_dir(str(purged[0].parent))


def _raw(path: Path, rec: MapRecord) -> bytes:
    """A live record's bytes, checked to be one complete record of the mapped size."""
    with open(path, "rb") as f:
        header = dbox.parse_file_header(f.read(dbox.MAX_HEADER_LINE), str(path))
        dbox.read_message(f, rec.offset, rec.size, header.msg_header_size, str(path))
        f.seek(rec.offset)
        raw = f.read(rec.size)
    if header.msg_header_size != dbox.MSG_HEADER_SIZE:
        # A v1-style header: re-encode the record as v2 (the only kind appended to).
        record = dbox.parse_record(raw, 0, header.msg_header_size, str(path))
        body = raw[record.body_offset : record.body_offset + record.body_size]
        return dbox.encode_record(body, record.metadata)
    return raw
