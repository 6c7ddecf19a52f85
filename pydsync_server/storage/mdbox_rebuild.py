"""`doveadm force-resync` for mdbox (storage-formats.md §3.6): rebuild the map and every
mailbox index from what the m.N files hold.

With the map locked: walk every m.N (primary and alt), repairing damaged files as
Dovecot's dbox_file_fix does (readable records kept, the original kept as
`m.N.broken`); map records that still match a found record exactly keep their map_uid,
new ones get fresh map_uids. Each mailbox keeps the old index records whose GUID (or
map_uid) still names a found message, with their UIDs, flags and keywords, and its
GUID and UIDVALIDITY; messages no mailbox references (and that the old map did not mark
as expunged) go back to the mailbox their metadata `B` names, else INBOX. Each index is
then replaced by a new log (new history, modseqs continuing above the old ones).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StorageError
from . import dbox_file as dbox
from .base import guid128
from .changes import SYSTEM_FLAGS_MASK
from .dovecot_index import (
    GUID,
    MAP,
    MDBOX,
    MDBOX_HDR,
    REF,
    IndexPaths,
    IndexState,
    LogFormatError,
    LogHeader,
    locked_log,
    read_index,
)
from .dovecot_index import Transaction as LogTransaction
from .mdbox_mailbox import BOX_HDR, BOX_REC, box_header, box_record
from .mdbox_map import MAP_HDR, MAP_REC, REF_REC, LockedMap, MapView, view_from_state

if TYPE_CHECKING:
    from .mdbox import MdboxStorage


@dataclass
class Found:
    """A message record found in an m.N file."""

    file_id: int
    record: dbox.Record
    map_uid: int = 0
    refs: int = 0
    duplicate: bool = False

    @property
    def loc(self) -> tuple[int, int, int]:
        return self.file_id, self.record.offset, self.record.size

    @property
    def guid128(self) -> bytes:
        return guid128(self.record.metadata.guid)


@dataclass
class BoxPlan:
    """A mailbox's new index: identity and (uid, flags, keywords, save date, Found)."""

    box_dir: Path
    guid: bytes
    uid_validity: int
    next_uid: int
    first_recent_uid: int
    modseq: int
    records: list[tuple[int, int, frozenset[str], int, Found]] = field(default_factory=list)


def rebuild(storage: MdboxStorage) -> list[str]:
    """Rebuild the whole storage; the problems met, one line each."""
    ctx = storage.ctx
    problems: list[str] = []
    with ctx.map.locked() as locked:
        old = _old_map(locked, problems)
        found = _scan(storage, problems)
        _assign_map_uids(found, old)
        plans = _plan_mailboxes(storage, found, old, problems)
        uid_validity = old.uid_validity or int(ctx.clock())
        _write_map(locked, found, old, uid_validity, int(ctx.clock()))
        for plan in plans.values():
            _write_box(plan, uid_validity, int(ctx.clock()))
    return problems


def _old_map(locked: LockedMap, problems: list[str]) -> MapView:
    view = read_index(locked.paths, locked.log.data)
    if view.problem:
        problems.append(f"map index: {view.problem}")
    return view_from_state(view.state)


# -- files --


def _scan(storage: MdboxStorage, problems: list[str]) -> list[Found]:
    found: list[Found] = []
    for file_id, path in sorted(storage.ctx.files.file_ids().items()):
        walk = dbox.read_file(path, recover=True)
        if walk.errors or any(not r.metadata.guid for r in walk.records):
            problems += [str(err) for err in walk.errors]
            walk = _fix_file(path, walk, problems)
        found += [Found(file_id, rec) for rec in walk.records]
    seen: set[tuple[bytes, int]] = set()
    for f in found:  # same GUID and size twice: the later copy is a duplicate (§3.6)
        key = (f.guid128, f.record.body_size)
        f.duplicate = key in seen
        seen.add(key)
    return found


def _fix_file(path: Path, walk: dbox.Walk, problems: list[str]) -> dbox.Walk:
    """Rewrite a damaged file with every readable record (a missing GUID gets a new
    one), keeping the original as `<name>.broken`, as Dovecot's repair does."""
    data = path.read_bytes()
    messages = []
    for rec in walk.records:
        meta = rec.metadata
        if not meta.guid:
            meta = replace(meta, guid=secrets.token_hex(16))
            problems.append(f"{path}: message at offset {rec.offset} had no GUID, gave it one")
        body = data[rec.body_offset : rec.body_offset + rec.body_size]
        messages.append((body, meta))
    broken = path.with_name(path.name + ".broken")
    try:
        broken.unlink(missing_ok=True)
        os.link(path, broken)
        dbox.write_new_file(path, dbox.encode_file(walk.header.create_stamp, messages))
    except OSError as exc:
        raise StorageError(f"repairing {path} failed: {exc.strerror or exc}") from exc
    problems.append(f"{path}: rewritten with {len(messages)} readable messages ({broken} kept)")
    return dbox.read_file(path)


def _assign_map_uids(found: list[Found], old: MapView) -> None:
    """Exact (file_id, offset, size) matches keep their map_uid (§3.6 step 3)."""
    by_loc = {(r.file_id, r.offset, r.size): r.map_uid for r in old.records.values()}
    next_uid = old.next_uid
    for f in found:
        f.map_uid = by_loc.get(f.loc, 0)
        if not f.map_uid:
            f.map_uid = next_uid
            next_uid += 1


# -- mailboxes --


def _plan_mailboxes(
    storage: MdboxStorage, found: list[Found], old: MapView, problems: list[str]
) -> dict[str, BoxPlan]:
    by_guid = {f.guid128: f for f in reversed(found) if not f.duplicate}
    old_locs = {r.map_uid: (r.file_id, r.offset, r.size) for r in old.records.values()}
    by_loc = {f.loc: f for f in found}
    plans: dict[str, BoxPlan] = {}
    for vname, selectable in sorted(storage.scan().items()):
        if selectable:
            plans[vname] = _plan_box(storage, vname, by_guid, by_loc, old_locs, problems)
    dead = {(r.file_id, r.offset, r.size) for r in old.records.values() if r.refcount == 0}
    for f in found:
        if f.refs == 0 and not f.duplicate and f.loc not in dead:
            _restore(storage, plans, f, problems)
    return plans


def _plan_box(
    storage: MdboxStorage,
    vname: str,
    by_guid: dict[bytes, Found],
    by_loc: dict[tuple[int, int, int], Found],
    old_locs: dict[int, tuple[int, int, int]],
    problems: list[str],
) -> BoxPlan:
    box_dir = storage.box_dir(vname)
    try:
        view = read_index(IndexPaths(box_dir))
        if view.problem:
            problems.append(f"{vname}: {view.problem}")
        state = view.state
    except LogFormatError as exc:
        problems.append(f"{vname}: index unreadable, rebuilt without it: {exc}")
        state = IndexState()
    header = box_header(state)
    plan = BoxPlan(
        box_dir,
        header.guid if header else storage.new_guid(),
        state.uid_validity or storage.allocate_uid_validity(),
        state.next_uid,
        state.first_recent_uid,
        state.modseq,
    )
    for uid in sorted(state.messages):
        msg = state.messages[uid]
        raw_guid = state.record_data(msg, GUID.name) or b""
        if raw_guid.strip(b"\0"):
            target = by_guid.get(raw_guid)
        else:  # no GUID in the index: the old map location, if a record still sits there
            target = by_loc.get(old_locs.get(box_record(state, msg)[0], (0, 0, 0)))
        if target is None:
            problems.append(f"{vname}: UID {uid} lost (its message is in no m.N file)")
            continue
        target.refs += 1
        flags = msg.flags & SYSTEM_FLAGS_MASK
        plan.records.append(
            (uid, flags, frozenset(msg.keywords), box_record(state, msg)[1], target)
        )
    return plan


def _restore(
    storage: MdboxStorage, plans: dict[str, BoxPlan], f: Found, problems: list[str]
) -> None:
    """A message no mailbox holds goes back where metadata B says it was saved."""
    vname = storage.names.vname_from_storage(f.record.metadata.orig_mailbox.split("/"))
    if f.record.metadata.orig_mailbox == "INBOX" or vname is None:
        vname = "INBOX"
    if vname not in plans:
        try:
            storage.create_mailbox(vname)
        except StorageError:
            vname = "INBOX"
            if vname not in plans:
                storage.create_mailbox(vname)
        plans[vname] = _plan_box(storage, vname, {}, {}, {}, problems)
    plan = plans[vname]
    uid = max([plan.next_uid, *(r[0] + 1 for r in plan.records)])
    plan.records.append((uid, 0, frozenset(), int(storage.clock()), f))
    plan.next_uid = uid + 1
    f.refs += 1


# -- writing --


def _new_log(paths: IndexPaths, t: LogTransaction, now: int, initial_modseq: int) -> None:
    """Replace the index by a new log holding `t`; stale snapshots go (Dovecot's backup
    of the index is kept as `.backup`)."""
    head = LogHeader(indexid=now, file_seq=1, create_stamp=now, initial_modseq=initial_modseq)
    data = head.encode()
    data += t.encode(len(data))
    tmp = paths.directory / f".{paths.prefix}.rebuild.{secrets.token_hex(6)}"
    dbox.write_new_file(tmp, data, sync_dir=False)
    os.replace(tmp, paths.log)
    if paths.index.exists():
        os.replace(paths.index, paths.backup)
    for stale in (paths.log2, paths.cache):
        stale.unlink(missing_ok=True)
    dbox.fsync_dir(str(paths.directory))


def _write_map(
    locked: LockedMap, found: list[Found], old: MapView, uid_validity: int, now: int
) -> None:
    """The new map: every found record (unreferenced ones with refcount 0, for purge)."""
    live = sorted(found, key=lambda f: f.map_uid)
    t = LogTransaction()
    t.set_uid_validity(uid_validity)
    highest = max([old.highest_file_id, *(f.file_id for f in found)])
    t.ext_intro(MAP)
    t.ext_hdr_update(0, MAP_HDR.pack(highest, old.rebuild_count + 1))
    t.ext_intro(REF)
    if live:
        t.append([(f.map_uid, 0) for f in live])
        t.ext_intro(MAP)
        t.ext_rec_update([(f.map_uid, MAP_REC.pack(*f.loc)) for f in live])
        t.ext_intro(REF)
        t.ext_rec_update([(f.map_uid, REF_REC.pack(min(f.refs, 0xFFFF))) for f in live])
    next_uid = max([old.next_uid, *(f.map_uid + 1 for f in found)])
    t.set_next_uid(next_uid)
    _new_log(locked.paths, t, now, 1)


def _write_box(plan: BoxPlan, map_uid_validity: int, now: int) -> None:
    paths = IndexPaths(plan.box_dir)
    records = sorted(plan.records, key=lambda r: r[0])
    t = LogTransaction(sync=True)
    state = IndexState()
    state.modseq = max(plan.modseq, 1)
    t.enable_modseqs(state)
    t.ext_intro(MDBOX_HDR)
    t.ext_hdr_update(0, BOX_HDR.pack(map_uid_validity, plan.guid, 0))
    t.set_uid_validity(plan.uid_validity)
    if records:
        t.append([(uid, flags) for uid, flags, _, _, _ in records])
        t.ext_intro(MDBOX)
        t.ext_rec_update([(r[0], BOX_REC.pack(r[4].map_uid, r[3] or now)) for r in records])
        t.ext_intro(GUID)
        t.ext_rec_update([(r[0], r[4].guid128) for r in records])
        by_keyword: dict[str, list[int]] = {}
        for uid, _, keywords, _, _ in records:
            for kw in sorted(keywords):
                by_keyword.setdefault(kw, []).append(uid)
        for kw, uids in by_keyword.items():
            t.keyword_update(kw, True, uids)
    next_uid = max([plan.next_uid, *(r[0] + 1 for r in records)])
    t.set_next_uid(next_uid)
    if plan.first_recent_uid > 1:
        t.set_first_recent_uid(plan.first_recent_uid)
    plan.box_dir.mkdir(parents=True, exist_ok=True)
    try:
        with locked_log(paths.log):
            _new_log(paths, t, now, max(plan.modseq, 1))
    except FileNotFoundError:
        _new_log(paths, t, now, max(plan.modseq, 1))
