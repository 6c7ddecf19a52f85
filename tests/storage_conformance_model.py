"""Model-based conformance test of change tracking.

Random sequences of client flag changes, client expunges, deliveries and dsync
writes; afterwards `changes_since(m)` for every modseq seen must equal what an
independent model of Dovecot's log scan (dsync-algorithm.md §3.4) computes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_conformance_base import ConformanceBase, msg

from pydsync_server.storage.base import Mailbox, MessageChange, Storage, guid128

KEYWORDS = ["a", "b", "$Label"]


@dataclass(frozen=True)
class Op:
    kind: str  # client_flags, client_expunge, deliver, dsync_flags, dsync_expunge
    pick: int  # which existing message, modulo their number
    flags: int
    keywords: frozenset[str]
    remove: int


OPS = st.builds(
    Op,
    kind=st.sampled_from(
        [
            "client_flags",
            "client_flags",
            "client_expunge",
            "deliver",
            "dsync_flags",
            "dsync_expunge",
        ]
    ),
    pick=st.integers(0, 9),
    flags=st.integers(0, 0x1F),
    keywords=st.frozensets(st.sampled_from(KEYWORDS)),
    remove=st.integers(0, 0x1F),
)


@dataclass(frozen=True)
class Record:
    """One expected log entry; `at` is the index of the modseq mark after it."""

    at: int
    uid: int
    modseq: int
    guid128: bytes | None = None  # set: an expunge
    added: int = 0
    removed: int = 0
    keywords: dict[str, str] = field(default_factory=dict)  # name -> "+" / "-"


@dataclass
class Merged:
    """The model's merged change of one UID."""

    expunged: bool = False
    guid128: bytes | None = None
    add: int = 0
    remove: int = 0
    keywords: dict[str, str] = field(default_factory=dict)
    modseq: int = 0

    def key(self) -> tuple[object, ...]:
        kws = frozenset(self.keywords.items())
        return (self.expunged, self.guid128, self.add, self.remove, kws, self.modseq)


def expected_changes(records: list[Record], after: int) -> dict[int, tuple[object, ...]]:
    """The model: per UID, merge the records made after mark `after`."""
    merged: dict[int, Merged] = {}
    for r in records:
        if r.at <= after:
            continue
        cur = merged.setdefault(r.uid, Merged())
        if cur.expunged:
            continue  # nothing follows an expunge
        cur.modseq = r.modseq
        if r.guid128 is not None:
            merged[r.uid] = Merged(expunged=True, guid128=r.guid128, modseq=r.modseq)
            continue
        cur.add, cur.remove = cur.add | r.added, (cur.remove & ~r.added) | r.removed
        cur.add &= ~r.removed
        cur.keywords.update(r.keywords)
    return {uid: m.key() for uid, m in merged.items()}


def observed(changes: list[MessageChange]) -> dict[int, tuple[object, ...]]:
    uids = [c.uid for c in changes]
    assert uids == sorted(set(uids)), "changes must be one per UID, ascending"
    out: dict[int, tuple[object, ...]] = {}
    for c in changes:
        names = [op[1:] for op in c.keyword_ops]
        assert len(names) == len(set(names)), c
        kws = frozenset((op[1:], op[0]) for op in c.keyword_ops)
        out[c.uid] = (c.expunged, c.guid128, c.add_flags, c.remove_flags, kws, c.modseq)
    return out


class ChangeModelConformance(ConformanceBase):
    """Checks `changes_since` against the model after random operation sequences."""

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=st.lists(OPS, max_size=14))
    def test_changes_match_model(self, ops: list[Op]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            storage = self.make_storage(Path(tmp))
            try:
                self._check_model(storage, ops)
            finally:
                storage.close()

    def _check_model(self, storage: Storage, ops: list[Op]) -> None:
        box = self.save(
            storage,
            "INBOX",
            msg(1, guid="0123456789abcdef0123456789abcdef"),
            msg(2, guid="1795913349.M1P2.host", flags=0x08),
            msg(3, keywords=frozenset({"a"})),
        )
        marks = [box.status().highest_modseq]
        records: list[Record] = []
        for op in ops:
            record = self._apply(storage, box, op, len(marks))
            box.refresh()
            marks.append(box.status().highest_modseq)
            assert marks[-1] >= marks[-2]
            if record is not None:
                assert marks[-1] > marks[-2]
                records.append(replace(record, modseq=marks[-1]))
        for i, mark in enumerate(marks):
            changes = box.changes_since(mark)
            assert changes is not None
            assert observed(changes) == expected_changes(records, i), f"since {mark}"
        assert box.changes_since(0) == box.changes_since(marks[0])

    def _apply(self, storage: Storage, box: Mailbox, op: Op, at: int) -> Record | None:
        """Perform `op`; the record it should leave (modseq filled in by the caller)."""
        infos = self.infos(box)
        if op.kind == "deliver":
            self.deliver(storage, "INBOX", b"Subject: d\r\n\r\n", op.flags, op.keywords)
            return None
        if not infos:
            return None
        info = infos[sorted(infos)[op.pick % len(infos)]]
        if op.kind == "client_expunge":
            self.external_expunge(storage, "INBOX", info.uid)
        elif op.kind == "dsync_expunge":
            with box.transaction() as t:
                t.expunge(info.uid)
        elif op.kind == "dsync_flags":
            with box.transaction() as t:
                t.update_flags(info.uid, op.flags, op.remove & ~op.flags, op.keywords)
            return None
        else:
            self.external_set_flags(storage, "INBOX", info.uid, op.flags, op.keywords)
            added, removed = op.flags & ~info.flags, info.flags & ~op.flags
            kws = {k: "+" for k in op.keywords - info.keywords}
            kws.update({k: "-" for k in info.keywords - op.keywords})
            if not (added or removed or kws):
                return None
            return Record(at, info.uid, 0, added=added, removed=removed, keywords=kws)
        return Record(at, info.uid, 0, guid128=guid128(info.guid))
