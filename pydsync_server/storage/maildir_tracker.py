"""pydsync's change tracker for one maildir folder (the `pydsync-changes` sidecar).

Dovecot keeps modseqs in its binary index, which pydsync does not write. Instead this
sidecar holds highest_modseq, a per-UID (modseq, flags, keywords, GUID) snapshot and a
bounded log of changes, each marked whether dsync made it (dsync-algorithm.md §3.4).
Comparing the snapshot with the directory turns other programs' work into modseqs.
Mailbox attributes get the same treatment: their values live in Dovecot's attribute dict
(maildir_attributes), their change stamps and remembered deletions here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

from .attributes import MAX_TOMBSTONES
from .base import MessageChange, guid128, value_record
from .maildir_attributes import AttrKey, value_digest

SIDECAR_NAME = "pydsync-changes"
MAX_LOG_RECORDS = 10000
# Other programs' changes advance highest_modseq by a random step: two sides that both
# changed then rarely show the same value, which fast mode would take as "in sync"
# (dsync-algorithm.md §9 pitfall 22). dsync's own writes step by one, as Dovecot's.
_FOREIGN_STEP = 1 << 16
# /2 keeps the per-message snapshot as columns (one JSON array per field): a big
# folder's tracker then loads and saves mostly in C. /1 (a row per message) is read.
_FORMAT = "pydsync-changes/2"
_FORMAT_ROWS = "pydsync-changes/1"
_NO_KEYWORDS: frozenset[str] = frozenset()


class MessageState(NamedTuple):
    """What the directory shows of one message (flags use protocol bits)."""

    flags: int
    keywords: frozenset[str]
    guid: str


class Snapshot(NamedTuple):
    modseq: int
    flags: int
    keywords: frozenset[str]
    guid: str
    saved_date: int = 0
    received_date: int = 0  # 0: not looked up yet (the file's mtime)


class LogRecord(NamedTuple):
    modseq: int
    uid: int
    dsync: bool
    expunged: bool = False
    guid128: bytes | None = None
    add_flags: int = 0
    remove_flags: int = 0
    keyword_ops: tuple[str, ...] = ()


@value_record
class AttrMeta:
    """The last change of one attribute: `digest` of its value ("" = deleted)."""

    digest: str
    last_change: int
    modseq: int
    dsync: bool


def keyword_ops(old: frozenset[str], new: frozenset[str]) -> tuple[str, ...]:
    return tuple(f"-{k}" for k in sorted(old - new)) + tuple(f"+{k}" for k in sorted(new - old))


@dataclass
class ChangeTracker:
    uid_validity: int
    mailbox_guid: bytes
    highest_modseq: int = 1
    first_recent_uid: int = 1
    log_floor: int = 1  # every change with modseq > log_floor is still in `log`
    msgs: dict[int, Snapshot] = field(default_factory=dict)
    log: list[LogRecord] = field(default_factory=list)
    attrs: dict[AttrKey, AttrMeta] = field(default_factory=dict)
    attrs_known: bool = False  # False: the attribute values were never looked at

    # -- construction and persistence --

    @classmethod
    def fresh(
        cls,
        uid_validity: int,
        mailbox_guid: bytes,
        current: dict[int, MessageState],
        first_recent_uid: int,
    ) -> ChangeTracker:
        """State for a folder pydsync has not tracked: every message at modseq 1, with
        a history nobody here knows. The counter starts a random step up, at the log
        floor: only that modseq (nothing since) can be answered, an older one leads to a
        full export. Like a Dovecot index that counted the folder's deliveries, it is
        then usually above a new, empty copy's, which raises itself to it after its
        import, so a first sync leaves both sides' counters equal (fast mode skips the
        pair next time). An empty folder starts at 1, below any such copy."""
        msgs = {uid: Snapshot(1, st.flags, st.keywords, st.guid) for uid, st in current.items()}
        if not msgs:
            return cls(uid_validity, mailbox_guid, 1, first_recent_uid, 2, msgs)
        start = 1 + 1 + _random_step()
        return cls(uid_validity, mailbox_guid, start, first_recent_uid, start, msgs)

    @classmethod
    def load(cls, path: Path) -> ChangeTracker | None:
        """The stored tracker, or None when missing or unreadable."""
        try:
            raw = json.loads(path.read_bytes())
            return cls._from_json(raw)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    @classmethod
    def _from_json(cls, raw: dict[str, Any]) -> ChangeTracker | None:
        if raw.get("format") == _FORMAT:
            msgs = _snapshots_from_columns(raw["msgs"])
        elif raw.get("format") == _FORMAT_ROWS:
            msgs = _snapshots_from_rows(raw["msgs"])
        else:
            return None
        log = [
            LogRecord(
                int(m), int(uid), bool(d), bool(e),
                bytes.fromhex(g) if g else None, int(a), int(r), tuple(map(str, ops)),
            )
            for m, uid, d, e, g, a, r, ops in raw["log"]
        ]  # fmt: skip
        return cls(
            int(raw["uid_validity"]),
            bytes.fromhex(raw["mailbox_guid"]),
            int(raw["highest_modseq"]),
            int(raw["first_recent_uid"]),
            int(raw["log_floor"]),
            msgs,
            log,
            attrs={
                (str(t), str(k)): AttrMeta(str(d), int(lc), int(m), bool(ds))
                for t, k, d, lc, m, ds in raw.get("attrs", [])
            },
            attrs_known="attrs" in raw,  # older sidecars had none
        )

    def serialize(self) -> bytes:
        # the snapshots are tuples: zip(*) cuts them into columns in C
        snaps = self.msgs.values()
        columns = zip(*snaps, strict=True) if snaps else iter([()] * len(Snapshot._fields))
        modseqs, flags, keywords, guids, saved, received = map(list, columns)
        msgs = {
            "uid": list(self.msgs),
            "modseq": modseqs,
            "flags": flags,
            "keywords": [sorted(kws) if kws else [] for kws in keywords],
            "guid": guids,
            "saved": saved,
            "received": received,
        }
        log = [
            [r.modseq, r.uid, int(r.dsync), int(r.expunged),
             r.guid128.hex() if r.guid128 else "", r.add_flags, r.remove_flags,
             list(r.keyword_ops)]
            for r in self.log
        ]  # fmt: skip
        doc = {
            "format": _FORMAT,
            "uid_validity": self.uid_validity,
            "mailbox_guid": self.mailbox_guid.hex(),
            "highest_modseq": self.highest_modseq,
            "first_recent_uid": self.first_recent_uid,
            "log_floor": self.log_floor,
            "msgs": msgs,
            "log": log,
        }
        if self.attrs_known:
            doc["attrs"] = [
                [t, k, a.digest, a.last_change, a.modseq, int(a.dsync)]
                for (t, k), a in sorted(self.attrs.items())
            ]
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogateescape"
        )

    def copy(self) -> ChangeTracker:
        return replace(self, msgs=dict(self.msgs), log=list(self.log), attrs=dict(self.attrs))

    # -- noticing other programs' changes --

    def reconcile(
        self, uid_validity: int, mailbox_guid: bytes, current: dict[int, MessageState]
    ) -> bool:
        """Bring the snapshot to `current` as one non-dsync change; True if anything changed."""
        if uid_validity != self.uid_validity or mailbox_guid != self.mailbox_guid:
            self._reset(uid_validity, mailbox_guid, current)
            return True
        return self.record_foreign(current.keys(), current)

    def record_foreign(self, live: Collection[int], changed: Mapping[int, MessageState]) -> bool:
        """Record other programs' work as one change: UIDs not `live` were expunged,
        `changed` holds the messages that may differ from the snapshot (new ones
        included; unchanged ones may be left out). True if anything changed."""
        modseq = _LazyModseq(self._foreign_modseq)
        changed_any = False
        for uid in sorted(self.msgs.keys() - set(live)):
            self.expunged(uid, modseq.value, dsync=False)
            changed_any = True
        for uid, state in sorted(changed.items()):
            snap = self.msgs.get(uid)
            if snap is None:
                self.msgs[uid] = Snapshot(modseq.value, state.flags, state.keywords, state.guid)
                changed_any = True
            elif (snap.flags, snap.keywords) != (state.flags, state.keywords):
                self.set_flags(uid, state.flags, state.keywords, modseq.value, dsync=False)
                changed_any = True
            elif snap.guid != state.guid:
                self.msgs[uid] = snap._replace(guid=state.guid)
                changed_any = True
        if changed_any:
            self.highest_modseq = max(self.highest_modseq, modseq.value)
            self._trim()
        return changed_any

    def _reset(
        self, uid_validity: int, mailbox_guid: bytes, current: dict[int, MessageState]
    ) -> None:
        """The folder was recreated under us: old UIDs mean nothing, the log restarts."""
        modseq = self._foreign_modseq()
        self.uid_validity, self.mailbox_guid = uid_validity, mailbox_guid
        self.msgs = {
            uid: Snapshot(modseq, st.flags, st.keywords, st.guid) for uid, st in current.items()
        }
        self.log = []
        self.highest_modseq = self.log_floor = modseq
        self.attrs, self.attrs_known = {}, False

    def reconcile_attributes(self, values: dict[AttrKey, str], now: int) -> None:
        """Record values that differ from the remembered ones (set, changed or gone) as
        one non-dsync change stamped `now`. Values seen for the first time have unknown
        stamps (0), as nothing says when they were set (storage-formats.md §8)."""
        if not self.attrs_known:
            self.attrs = {k: AttrMeta(value_digest(v), 0, 0, False) for k, v in values.items()}
            self.attrs_known = True
            return
        modseq = _LazyModseq(self._foreign_modseq)
        changed = False
        for key, value in values.items():
            meta = self.attrs.get(key)
            if meta is None or meta.digest != value_digest(value):
                self.attrs[key] = AttrMeta(value_digest(value), now, modseq.value, False)
                changed = True
        for key, meta in list(self.attrs.items()):
            if meta.digest and key not in values:
                self.attrs[key] = AttrMeta("", now, modseq.value, False)
                changed = True
        if changed:
            self.highest_modseq = modseq.value
            self._trim_tombstones()

    def _foreign_modseq(self) -> int:
        return self.highest_modseq + 1 + _random_step()

    # -- recording changes (dsync writes and reconcile) --

    def next_modseq(self, min_modseq: int = 0) -> int:
        return max(self.highest_modseq + 1, min_modseq)

    def saved(
        self, uid: int, state: MessageState, modseq: int, saved_date: int = 0,
        received_date: int = 0,
    ) -> None:  # fmt: skip
        self.msgs[uid] = Snapshot(
            modseq, state.flags, state.keywords, state.guid, saved_date, received_date
        )
        self.highest_modseq = max(self.highest_modseq, modseq)

    def set_flags(
        self, uid: int, flags: int, keywords: frozenset[str], modseq: int, *, dsync: bool
    ) -> None:
        snap = self.msgs[uid]
        self.log.append(
            LogRecord(
                modseq, uid, dsync,
                add_flags=flags & ~snap.flags, remove_flags=snap.flags & ~flags,
                keyword_ops=keyword_ops(snap.keywords, keywords),
            )
        )  # fmt: skip
        self.msgs[uid] = snap._replace(modseq=modseq, flags=flags, keywords=keywords)
        self.highest_modseq = max(self.highest_modseq, modseq)

    def raise_modseq(self, uid: int, modseq: int) -> None:
        """A dsync modseq-only update: the message keeps its flags, no change is logged."""
        snap = self.msgs.get(uid)
        if snap is not None and modseq > snap.modseq:
            self.msgs[uid] = snap._replace(modseq=modseq)
            self.highest_modseq = max(self.highest_modseq, modseq)

    def expunged(self, uid: int, modseq: int, *, dsync: bool, guid: str = "") -> None:
        snap = self.msgs.pop(uid, None)
        guid = guid or (snap.guid if snap is not None else "")
        key = guid128(guid) if guid else None
        self.log.append(LogRecord(modseq, uid, dsync, expunged=True, guid128=key))
        self.highest_modseq = max(self.highest_modseq, modseq)

    def set_attribute(self, key: AttrKey, value: str | None, last_change: int, modseq: int) -> None:
        """A dsync write of an attribute (None: deleted)."""
        digest = value_digest(value) if value is not None else ""
        self.attrs[key] = AttrMeta(digest, last_change, modseq, True)
        self.attrs_known = True
        self.highest_modseq = max(self.highest_modseq, modseq)
        self._trim_tombstones()

    def _trim_tombstones(self) -> None:
        tombstones = sorted((m.modseq, k) for k, m in self.attrs.items() if not m.digest)
        for _, key in tombstones[: max(0, len(tombstones) - MAX_TOMBSTONES)]:
            del self.attrs[key]

    def _trim(self) -> None:
        """Keep at most MAX_LOG_RECORDS, dropping whole modseqs from the old end."""
        if len(self.log) <= MAX_LOG_RECORDS:
            return
        cut = self.log[len(self.log) - MAX_LOG_RECORDS - 1].modseq
        self.log = [r for r in self.log if r.modseq > cut]
        self.log_floor = max(self.log_floor, cut)

    def finish_commit(self) -> None:
        self._trim()

    # -- answering dsync --

    def changes_since(self, modseq: int) -> list[MessageChange] | None:
        """Merged non-dsync changes (and all expunges) newer than `modseq`, by UID.

        None when the log can't answer: `modseq` is older than the log, or newer than
        anything this store handed out (a number from another program's index)."""
        if modseq != 0 and (modseq < self.log_floor or modseq > self.highest_modseq):
            return None
        merged: dict[int, MessageChange] = {}
        for rec in self.log:
            if rec.modseq <= modseq or (rec.dsync and not rec.expunged):
                continue
            prev = merged.get(rec.uid)
            if prev is not None and prev.expunged:
                continue  # an expunge ends the UID's history
            merged[rec.uid] = _merge(prev, rec)
        return [merged[uid] for uid in sorted(merged)]


def _snapshots_from_columns(cols: dict[str, list[Any]]) -> dict[int, Snapshot]:
    """Snapshots from format /2's columns, checked for type and length (a malformed
    file raises ValueError or TypeError: the tracker is then treated as missing)."""
    ints = [cols[name] for name in ("uid", "modseq", "flags", "saved", "received")]
    guids, keywords = cols["guid"], cols["keywords"]
    if any(set(map(type, col)) - {int} for col in ints) or set(map(type, guids)) - {str}:
        raise ValueError("tracker column of the wrong type")
    kw_sets = [frozenset(map(str, kws)) if kws else _NO_KEYWORDS for kws in keywords]
    uids, modseqs, flags, saved, received = ints
    rows = zip(modseqs, flags, kw_sets, guids, saved, received, strict=True)
    # tuple.__new__ builds each NamedTuple in C: the columns are already checked
    return dict(zip(uids, map(tuple.__new__, repeat(Snapshot), rows), strict=True))


def _snapshots_from_rows(rows: list[list[Any]]) -> dict[int, Snapshot]:
    """Snapshots from format /1 (a row per message)."""
    return {
        int(uid): Snapshot(
            int(m), int(f), frozenset(map(str, kws)), str(g), int(sd), int(rd[0] if rd else 0)
        )
        for uid, m, f, kws, g, sd, *rd in rows
    }


def _random_step() -> int:
    """Uniform in [0, _FOREIGN_STEP) from the OS's generator (secrets.randbelow's
    source, without the start-up cost of importing secrets)."""
    return int.from_bytes(os.urandom(4), "little") % _FOREIGN_STEP


class _LazyModseq:
    """One change's modseq, drawn (a random step, which costs a syscall) when first
    used: most reconciles find nothing changed."""

    def __init__(self, draw: Callable[[], int]) -> None:
        self._draw = draw
        self._value = 0

    @property
    def value(self) -> int:
        if not self._value:
            self._value = self._draw()
        return self._value


def _merge(prev: MessageChange | None, rec: LogRecord) -> MessageChange:
    """Fold one log record into a UID's change (dsync-transaction-log-scan.c rules)."""
    modseq = max(rec.modseq, prev.modseq if prev else 0)
    if rec.expunged:
        key = rec.guid128 if rec.guid128 is not None else (prev.guid128 if prev else None)
        return MessageChange(rec.uid, modseq, expunged=True, guid128=key)
    add, remove, ops = (
        (prev.add_flags, prev.remove_flags, list(prev.keyword_ops)) if prev else (0, 0, [])
    )
    add = (add | rec.add_flags) & ~rec.remove_flags
    remove = (remove & ~rec.add_flags) | rec.remove_flags
    for op in rec.keyword_ops:
        ops = [o for o in ops if o[1:] != op[1:]]
        ops.append(op)
    return MessageChange(
        rec.uid, modseq, add_flags=add, remove_flags=remove, keyword_ops=tuple(ops)
    )
