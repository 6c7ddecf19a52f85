"""The state an index describes (header, extensions, keywords, messages, modseqs) and
how each log record changes it (storage-formats.md §6.3, §6.5).

`IndexState.apply()` replays one record. Alongside the state it keeps what dsync's log
scan would find (dsync-algorithm.md §3.4): one `MessageChange` per non-dsync change
(plus dsync's expunges, which carry GUIDs) and the last ATTRIBUTE_UPDATE of each key.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..base import MessageChange
from . import records as r
from .logfile import RawRecord

BASE_HEADER_SIZE = 120
FIELD_UID_VALIDITY, FIELD_NEXT_UID, FIELD_FIRST_RECENT_UID = 24, 28, 48
SYSTEM_FLAGS = 0x1F  # \Answered \Flagged \Deleted \Seen \Draft
INTERNAL_FLAGS = 0xC0  # backend private (sdbox: in alt storage), DIRTY
KEYWORDS_EXT, MODSEQ_EXT = "keywords", "modseq"


@dataclass
class Extension:
    """One extension of the index: its sizes, reset id and header bytes."""

    name: str
    hdr_size: int
    record_size: int
    record_align: int
    reset_id: int = 0
    header: bytearray = field(default_factory=bytearray)

    def resize(self, intro: r.ExtIntro) -> None:
        if intro.flags & r.EXT_INTRO_NO_SHRINK:
            self.hdr_size = max(self.hdr_size, intro.hdr_size)
            self.record_size = max(self.record_size, intro.record_size)
        else:
            self.hdr_size, self.record_size = intro.hdr_size, intro.record_size
        self.record_align = intro.record_align or self.record_align
        self.header = bytearray(bytes(self.header[: self.hdr_size]).ljust(self.hdr_size, b"\0"))


@dataclass
class MessageRecord:
    """One message of the index. `ext` holds record data by extension name."""

    uid: int
    flags: int
    keywords: frozenset[str] = frozenset()
    ext: dict[str, bytes] = field(default_factory=dict)
    modseq: int = 0


@dataclass(frozen=True)
class AttributeStamp:
    """The last ATTRIBUTE_UPDATE of one (type, key): what it did, when, at which modseq."""

    set: bool
    timestamp: int
    modseq: int
    sync: bool
    value_len: int = 0


class IndexState:
    """An index as replayed so far. Mutated only by `apply()` and the loaders."""

    def __init__(self) -> None:
        self.base = bytearray(BASE_HEADER_SIZE)
        struct.pack_into("<I", self.base, FIELD_NEXT_UID, 1)
        self.extensions: list[Extension] = []
        self.keywords: list[str] = []
        self.messages: dict[int, MessageRecord] = {}
        self.modseq = 0  # running (highest) modseq of the log; 0 = not tracked yet
        self.has_modseq_ext = False
        self.deleted = False
        self.changes: list[MessageChange] = []
        self.attributes: dict[tuple[str, str], AttributeStamp] = {}
        self._cur_ext: Extension | None = None
        self._ignore_ext_updates = False
        self._txn_end = 0
        self._txn_appended: set[int] = set()
        self._modseq_ext_fresh = False
        self.scan_only = False  # records before a loaded dovecot.index: track changes only

    # -- header fields --

    def _u32(self, offset: int) -> int:
        return int(struct.unpack_from("<I", self.base, offset)[0])

    @property
    def uid_validity(self) -> int:
        return self._u32(FIELD_UID_VALIDITY)

    @property
    def next_uid(self) -> int:
        return self._u32(FIELD_NEXT_UID)

    @property
    def first_recent_uid(self) -> int:
        return self._u32(FIELD_FIRST_RECENT_UID)

    @property
    def tail_offset(self) -> int:
        return self._u32(r.TAIL_OFFSET_FIELD)

    def ext(self, name: str) -> Extension | None:
        for ext in self.extensions:
            if ext.name == name:
                return ext
        return None

    def ext_header(self, name: str) -> bytes | None:
        ext = self.ext(name)
        return bytes(ext.header) if ext is not None else None

    def record_data(self, msg: MessageRecord, name: str) -> bytes | None:
        """A message's record data of one extension, sized as the extension is now."""
        ext = self.ext(name)
        if ext is None or ext.record_size == 0:
            return None
        return msg.ext.get(name, b"")[: ext.record_size].ljust(ext.record_size, b"\0")

    def message_modseq(self, msg: MessageRecord) -> int:
        """Without a `modseq` extension Dovecot reports the highest modseq for every
        message (§6.5 step 4)."""
        return msg.modseq if self.has_modseq_ext and msg.modseq else self.modseq

    # -- replay --

    def apply(self, rec: RawRecord, minor_version: int = 3) -> None:
        """Replay one record; raises LogFormatError when it is broken."""
        if rec.offset >= self._txn_end:
            self._txn_appended = set()
        if rec.kind not in (r.EXT_HDR_UPDATE, r.EXT_HDR_UPDATE32, r.EXT_INTRO):
            self._modseq_ext_fresh = False
        if self.scan_only and rec.kind not in _SCAN_KINDS:
            if rec.kind == r.EXT_INTRO and self.modseq == 0:
                if any(i.name == MODSEQ_EXT for i in r.parse_ext_intros(rec.body)):
                    self.modseq = 1
            return
        handler = _HANDLERS.get(rec.kind)
        if handler is not None:
            handler(self, rec, minor_version)

    def _bump(self) -> int:
        if self.modseq:
            self.modseq += 1
        return self.modseq

    def _existing(self, uid1: int, uid2: int) -> list[MessageRecord]:
        if uid1 > uid2:
            raise r.LogFormatError(f"invalid uid range {uid1}-{uid2}")
        if uid2 - uid1 < len(self.messages):
            found = (self.messages.get(uid) for uid in range(uid1, uid2 + 1))
            return [m for m in found if m is not None]
        return [m for uid, m in self.messages.items() if uid1 <= uid <= uid2]

    def _scan_uids(self, uid1: int, uid2: int) -> list[int]:
        """UIDs a change record names, for the change scan."""
        if not self.scan_only:
            return [m.uid for m in self._existing(uid1, uid2)]
        return list(range(uid1, uid2 + 1)) if uid2 - uid1 < 100_000 else []

    def _note(self, rec: RawRecord, change: MessageChange) -> None:
        if rec.sync and not change.expunged:
            return  # dsync's own writes are not local changes (§3.4)
        if not change.expunged and change.uid in self._txn_appended:
            return  # set while saving the message: part of the delivery
        self.changes.append(change)


def _header_update(st: IndexState, rec: RawRecord, _minor: int) -> None:
    for offset, data in r.parse_updates(rec.body):
        if offset + len(data) > BASE_HEADER_SIZE:
            raise r.LogFormatError(f"header update outside the base header at {offset}")
        next_uid = st.next_uid
        st.base[offset : offset + len(data)] = data
        if st.next_uid < next_uid:  # a smaller next_uid is ignored
            struct.pack_into("<I", st.base, FIELD_NEXT_UID, next_uid)


def _ext_intro(st: IndexState, rec: RawRecord, _minor: int) -> None:
    for intro in r.parse_ext_intros(rec.body):
        if intro.ext_id == r.EXT_ID_BY_NAME:
            if intro.name == KEYWORDS_EXT or not intro.name:
                raise r.LogFormatError(f"invalid ext-intro for {intro.name!r}")
            ext = st.ext(intro.name)
            if ext is None:
                ext = Extension(
                    intro.name, intro.hdr_size, intro.record_size, intro.record_align,
                    intro.reset_id, bytearray(intro.hdr_size),
                )  # fmt: skip
                st.extensions.append(ext)
                if intro.name == MODSEQ_EXT:
                    _start_modseqs(st)
        elif intro.ext_id < len(st.extensions):
            ext = st.extensions[intro.ext_id]
        else:
            raise r.LogFormatError(f"ext-intro for unknown extension id {intro.ext_id}")
        if (ext.hdr_size, ext.record_size) != (intro.hdr_size, intro.record_size):
            ext.resize(intro)
        st._cur_ext = ext
        st._ignore_ext_updates = intro.reset_id != ext.reset_id


def _start_modseqs(st: IndexState) -> None:
    """The `modseq` extension appeared. Messages keep the modseqs the log gave them,
    unless the intro is followed by a header naming the highest modseq: then they all
    get that one (both observed with doveadm 2.3.19)."""
    if st.modseq == 0:
        st.modseq = 1
    st.has_modseq_ext = True
    st._modseq_ext_fresh = True


def _current_ext(st: IndexState) -> Extension | None:
    if st._cur_ext is None:
        raise r.LogFormatError("extension update without a preceding ext-intro")
    return None if st._ignore_ext_updates else st._cur_ext


def _ext_reset(st: IndexState, rec: RawRecord, _minor: int) -> None:
    if len(rec.body) < 8:
        raise r.LogFormatError("truncated ext-reset")
    ext = _current_ext(st)
    if ext is None:
        return
    new_reset_id, preserve = struct.unpack_from("<IB", rec.body)
    ext.reset_id = new_reset_id
    st._ignore_ext_updates = False
    if not preserve:
        ext.header = bytearray(ext.hdr_size)
        for msg in st.messages.values():
            msg.ext.pop(ext.name, None)


def _ext_hdr_update(st: IndexState, rec: RawRecord, _minor: int) -> None:
    ext = _current_ext(st)
    for offset, data in r.parse_updates(rec.body, wide=rec.kind == r.EXT_HDR_UPDATE32):
        if ext is None:
            continue
        if offset + len(data) > ext.hdr_size:
            raise r.LogFormatError(f"{ext.name} header update past its size at {offset}")
        ext.header[offset : offset + len(data)] = data
        if ext.name == MODSEQ_EXT and st._modseq_ext_fresh and offset == 0 and len(data) >= 8:
            highest = int.from_bytes(data[:8], "little")
            for msg in st.messages.values() if highest else ():
                msg.modseq = highest


def _ext_rec_update(st: IndexState, rec: RawRecord, _minor: int) -> None:
    ext = _current_ext(st)
    assert st._cur_ext is not None
    size = st._cur_ext.record_size
    step = 4 + size + (-(4 + size) % 4)
    if size == 0 or len(rec.body) % step:
        raise r.LogFormatError(f"ext-rec update of {st._cur_ext.name} has a broken size")
    if ext is None:
        return
    for pos in range(0, len(rec.body), step):
        msg = st.messages.get(struct.unpack_from("<I", rec.body, pos)[0])
        if msg is not None:
            msg.ext[ext.name] = rec.body[pos + 4 : pos + 4 + size]


def _ext_atomic_inc(st: IndexState, rec: RawRecord, _minor: int) -> None:
    ext = _current_ext(st)
    entries = list(r.parse_fixed(rec.body, r.ATOMIC_INC_FMT, "ext-atomic-inc"))
    if ext is None:
        return
    if ext.record_size not in (1, 2, 4, 8):
        raise r.LogFormatError(f"atomic increment of {ext.name} with record size {ext.record_size}")
    for uid, diff in entries:
        msg = st.messages.get(uid)
        if msg is None:
            continue
        old = int.from_bytes(st.record_data(msg, ext.name) or b"", "little")
        if old + diff < 0:
            raise r.LogFormatError(f"atomic increment of {ext.name} below zero for uid {uid}")
        msg.ext[ext.name] = (old + diff).to_bytes(ext.record_size, "little")


def _append(st: IndexState, rec: RawRecord, _minor: int) -> None:
    entries = list(r.parse_fixed(rec.body, r.APPEND_FMT, "append"))
    modseq = st._bump()
    for uid, flags in entries:
        if rec.offset < st._txn_end:
            st._txn_appended.add(uid)
        if st.scan_only:
            continue
        if uid < st.next_uid or uid == 0:
            raise r.LogFormatError(f"append of uid {uid}, but next_uid is {st.next_uid}")
        st.messages[uid] = MessageRecord(uid, flags, modseq=modseq)
        struct.pack_into("<I", st.base, FIELD_NEXT_UID, uid + 1)


def _expunge(st: IndexState, rec: RawRecord, _minor: int) -> None:
    entries: list[tuple[int, bytes | None]]
    if rec.kind == r.EXPUNGE:
        ranges = r.parse_fixed(rec.body, r.RANGE_FMT, "expunge")
        entries = [(uid, None) for a, b in ranges for uid in st._scan_uids(a, b)]
    else:
        entries = list(r.parse_fixed(rec.body, r.EXPUNGE_GUID_FMT, "expunge-guid"))
    if not rec.external:
        # Only a request: the backend has not done it yet (§6.5). A request whose message
        # is already gone still tells dsync the GUID.
        for uid, guid in entries:
            if rec.kind == r.EXPUNGE_GUID and uid not in st.messages and not st.scan_only:
                st._note(rec, _expunged(uid, st.modseq, guid))
        return
    modseq = st._bump()
    for uid, guid in entries:
        if st.scan_only or st.messages.pop(uid, None) is not None:
            st._note(rec, _expunged(uid, modseq, guid))


def _expunged(uid: int, modseq: int, guid: bytes | None) -> MessageChange:
    known = guid if guid and guid != bytes(16) else None
    return MessageChange(uid, modseq, expunged=True, guid128=known)


def _flag_update(st: IndexState, rec: RawRecord, minor: int) -> None:
    entries = list(r.parse_fixed(rec.body, r.FLAG_UPDATE_FMT, "flag-update"))

    def counts(add: int, remove: int, inc: int) -> bool:
        return minor < 3 or inc != 0 or (add | remove) & ~INTERNAL_FLAGS != 0

    modseq = st._bump() if any(counts(a, rm, i) for _, _, a, rm, i in entries) else st.modseq
    for uid1, uid2, add, remove, inc in entries:
        for msg in [] if st.scan_only else st._existing(uid1, uid2):
            msg.flags = (msg.flags & ~remove) | add
            if counts(add, remove, inc):
                msg.modseq = max(msg.modseq, modseq)
        if add & SYSTEM_FLAGS or remove & SYSTEM_FLAGS:
            for uid in st._scan_uids(uid1, uid2):
                change = MessageChange(
                    uid, modseq, add_flags=add & SYSTEM_FLAGS, remove_flags=remove & SYSTEM_FLAGS
                )
                st._note(rec, change)


def _keyword_update(st: IndexState, rec: RawRecord, _minor: int) -> None:
    add, name, ranges = r.parse_keyword_update(rec.body)
    if name not in st.keywords and not st.scan_only:
        st.keywords.append(name)
        if st.ext(KEYWORDS_EXT) is None:  # created implicitly, at the next map index (§6.3)
            st.extensions.append(Extension(KEYWORDS_EXT, 0, 0, 1))
    modseq = st._bump()
    for uid1, uid2 in ranges:
        for msg in [] if st.scan_only else st._existing(uid1, uid2):
            msg.keywords = msg.keywords | {name} if add else msg.keywords - {name}
            msg.modseq = max(msg.modseq, modseq)
        for uid in st._scan_uids(uid1, uid2):
            st._note(rec, MessageChange(uid, modseq, keyword_ops=(("+" if add else "-") + name,)))


def _keyword_reset(st: IndexState, rec: RawRecord, _minor: int) -> None:
    ranges = list(r.parse_fixed(rec.body, r.RANGE_FMT, "keyword-reset"))
    modseq = st._bump()
    for uid1, uid2 in ranges:
        for msg in [] if st.scan_only else st._existing(uid1, uid2):
            ops = tuple(f"-{kw}" for kw in sorted(msg.keywords))
            msg.keywords = frozenset()
            msg.modseq = max(msg.modseq, modseq)
            if ops:
                st._note(rec, MessageChange(msg.uid, modseq, keyword_ops=ops))


def _modseq_update(st: IndexState, rec: RawRecord, _minor: int) -> None:
    for uid, low, high in r.parse_fixed(rec.body, r.MODSEQ_FMT, "modseq-update"):
        modseq = high << 32 | low
        st.modseq = max(st.modseq, modseq)
        if uid == 0:
            continue
        msg = st.messages.get(uid)
        if msg is not None:
            msg.modseq = max(msg.modseq, modseq)
        if msg is not None or st.scan_only:
            st._note(rec, MessageChange(uid, modseq))


def _attribute_update(st: IndexState, rec: RawRecord, _minor: int) -> None:
    changes = r.parse_attribute_update(rec.body)
    modseq = st._bump()
    for c in changes:
        st.attributes[c.type, c.key] = AttributeStamp(
            c.set, c.timestamp, modseq, rec.sync, c.value_len
        )


def _boundary(st: IndexState, rec: RawRecord, _minor: int) -> None:
    if len(rec.body) < 4:
        raise r.LogFormatError("truncated boundary record")
    st._txn_end = rec.offset + struct.unpack_from("<I", rec.body)[0]
    st._txn_appended = set()


def _index_deleted(st: IndexState, rec: RawRecord, _minor: int) -> None:
    st.deleted = rec.kind == r.INDEX_DELETED


# What matters of the records before a loaded dovecot.index's position: modseqs and
# the change scan, not the state (the index file already holds it).
_SCAN_KINDS = frozenset(
    {
        r.APPEND, r.EXPUNGE, r.EXPUNGE_GUID, r.FLAG_UPDATE, r.KEYWORD_UPDATE,
        r.KEYWORD_RESET, r.MODSEQ_UPDATE, r.ATTRIBUTE_UPDATE, r.BOUNDARY,
    }
)  # fmt: skip

_HANDLERS = {
    r.HEADER_UPDATE: _header_update,
    r.EXT_INTRO: _ext_intro,
    r.EXT_RESET: _ext_reset,
    r.EXT_HDR_UPDATE: _ext_hdr_update,
    r.EXT_HDR_UPDATE32: _ext_hdr_update,
    r.EXT_REC_UPDATE: _ext_rec_update,
    r.EXT_ATOMIC_INC: _ext_atomic_inc,
    r.APPEND: _append,
    r.EXPUNGE: _expunge,
    r.EXPUNGE_GUID: _expunge,
    r.FLAG_UPDATE: _flag_update,
    r.KEYWORD_UPDATE: _keyword_update,
    r.KEYWORD_RESET: _keyword_reset,
    r.MODSEQ_UPDATE: _modseq_update,
    r.ATTRIBUTE_UPDATE: _attribute_update,
    r.BOUNDARY: _boundary,
    r.INDEX_DELETED: _index_deleted,
    r.INDEX_UNDELETED: _index_deleted,
}
