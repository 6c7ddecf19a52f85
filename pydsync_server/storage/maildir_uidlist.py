"""Maildir text formats: `dovecot-uidlist` v3, `dovecot-keywords` and message file names.

Parsing follows Dovecot's maildir-uidlist.c reader rules (storage-formats.md §1.3–§1.5):
a file Dovecot would call corrupted is reported as None so the caller never builds on it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import NamedTuple

MAILDIR_INFO_SEP = ":"
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_KEYWORDS = 26
_UID_MAX = 0xFFFFFFFF

# Flag letters inside ":2," (storage-formats.md §1.3) -> protocol flag bits.
FLAG_LETTERS = {"D": 0x10, "F": 0x02, "R": 0x01, "S": 0x08, "T": 0x04}
_LETTER_FOR_FLAG = {bit: letter for letter, bit in FLAG_LETTERS.items()}
ALL_FLAGS = 0x1F


@dataclass
class UidlistRecord:
    uid: int
    base: str
    ext: dict[str, str] = field(default_factory=dict)  # 'G', 'P', 'O', 'S', 'W', ...

    def line(self) -> str:
        exts = "".join(f" {key}{value}" for key, value in self.ext.items())
        return f"{self.uid}{exts} :{self.base}\n"


@dataclass
class Uidlist:
    uid_validity: int
    hdr_next_uid: int
    guid: bytes | None
    records: list[UidlistRecord] = field(default_factory=list)
    hdr_extra: list[str] = field(default_factory=list)  # unknown header tokens, kept
    version: int = 3

    @property
    def next_uid(self) -> int:
        """max(N, last UID + 1): N lags behind appended records (§1.4)."""
        last = self.records[-1].uid + 1 if self.records else 1
        return max(self.hdr_next_uid, last)

    def copy(self) -> Uidlist:
        # records are never changed in place (a new UID or name is a new record)
        records = list(self.records)
        return Uidlist(
            self.uid_validity, self.hdr_next_uid, self.guid, records, list(self.hdr_extra),
            self.version,
        )  # fmt: skip

    def header(self) -> str:
        assert self.guid is not None
        tokens = [f"V{self.uid_validity}", f"N{self.next_uid}", f"G{self.guid.hex()}"]
        return "3 " + " ".join(tokens + self.hdr_extra) + "\n"

    def serialize(self) -> bytes:
        text = self.header() + "".join(rec.line() for rec in self.records)
        return text.encode("utf-8", "surrogateescape")


def parse_uidlist(data: bytes) -> Uidlist | None:
    """Parse v1 or v3; None when Dovecot would treat the file as corrupted."""
    text = data.decode("utf-8", "surrogateescape")
    # a last line without LF is an append still being written: not read yet
    lines = text.split("\n")[:-1]
    if not lines or len(lines[0]) < 2 or not lines[0][0].isdigit() or lines[0][1] != " ":
        return None
    version = int(lines[0][0])
    if version == 3:
        uidlist = _parse_v3_header(lines[0][2:])
    elif version == 1:
        uidlist = _parse_v1_header(lines[0][2:])
    else:
        return None
    if uidlist is None:
        return None
    prev = 0
    for line in lines[1:]:
        record = _parse_record(line, version)
        if record is None or record.uid <= prev or record.uid >= _UID_MAX:
            return None
        prev = record.uid
        uidlist.records.append(record)
    # The same base twice: the later line wins (maildir_uidlist_next).
    seen: dict[str, int] = {}
    for idx, rec in enumerate(uidlist.records):
        seen[rec.base] = idx
    if len(seen) != len(uidlist.records):
        keep = set(seen.values())
        uidlist.records = [r for i, r in enumerate(uidlist.records) if i in keep]
    return uidlist


def _parse_v3_header(rest: str) -> Uidlist | None:
    values: dict[str, str] = {}
    extra: list[str] = []
    for token in rest.split(" "):
        if not token:
            continue
        if token[0] in "VNG":
            values[token[0]] = token[1:]
        else:
            extra.append(token)
    try:
        uid_validity = int(values.get("V", "0"))
        next_uid = int(values.get("N", "0"))
        guid = bytes.fromhex(values["G"]) if "G" in values else None
    except ValueError:
        return None
    if guid is not None and len(guid) != 16:
        return None
    if not 0 < uid_validity <= _UID_MAX or not 0 < next_uid <= _UID_MAX:
        return None
    return Uidlist(uid_validity, next_uid, guid, hdr_extra=extra)


def _parse_v1_header(rest: str) -> Uidlist | None:
    parts = rest.split()
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    uid_validity, next_uid = int(parts[0]), int(parts[1])
    if uid_validity == 0 or next_uid == 0:
        return None
    return Uidlist(uid_validity, next_uid, None, version=1)


_RECORD_UID = re.compile(r"([0-9]+) +")


def _parse_record(line: str, version: int) -> UidlistRecord | None:
    uid_text, _, rest = line.partition(" ")
    if version == 3 and rest[:1] == ":" and uid_text.isascii() and uid_text.isdigit():
        # the usual line, "<uid> :<base>": no extension keys to pick apart
        uid, base = int(uid_text), rest[1:]
        if uid == 0 or not base or "/" in base:
            return None
        return UidlistRecord(uid, base, {})
    match = _RECORD_UID.match(line)
    if match is None or int(match.group(1)) == 0:
        return None
    uid, rest = int(match.group(1)), line[match.end() :]
    ext: dict[str, str] = {}
    if version == 3:
        while rest and rest[0] != ":":
            token, _, rest = rest.partition(" ")
            rest = rest.lstrip(" ")
            if not ("A" <= token[0] <= "Z"):
                return None
            if token[0] == "G" and len(token) == 1:
                continue  # empty GUID key: Dovecot drops it
            ext[token[0]] = token[1:]
        if not rest.startswith(":"):
            return None
        rest = rest[1:]
    if not rest or "/" in rest:
        return None
    return UidlistRecord(uid, rest, ext)


# -- dovecot-keywords -------------------------------------------------------------


def parse_keywords(data: bytes | None) -> list[str | None]:
    """Letter index -> keyword name (None = unused) from `<idx> <name>` lines."""
    names: list[str | None] = [None] * MAX_KEYWORDS
    if not data:
        return names
    for line in data.decode("utf-8", "surrogateescape").split("\n"):
        idx_text, sep, name = line.partition(" ")
        if not sep or not name or not idx_text.isdigit():
            continue
        idx = int(idx_text)
        if idx < MAX_KEYWORDS:
            names[idx] = name
    return names


def serialize_keywords(names: list[str | None]) -> bytes:
    lines = "".join(f"{idx} {name}\n" for idx, name in enumerate(names) if name is not None)
    return lines.encode("utf-8", "surrogateescape")


class KeywordMap:
    """Keyword letters of one folder; names are looked up case-insensitively."""

    def __init__(self, names: list[str | None]) -> None:
        self.names = list(names)
        self.changed = False

    def copy(self) -> KeywordMap:
        twin = KeywordMap(self.names)
        twin.changed = self.changed
        return twin

    def name_for(self, idx: int) -> str:
        """The name of letter `idx`; a lost name becomes `unknown-<idx>` like Dovecot."""
        name = self.names[idx]
        if name is not None:
            return name
        name = f"unknown-{idx}"
        while self.index_of(name) is not None:
            name += "?"
        self.names[idx] = name
        self.changed = True
        return name

    def index_of(self, keyword: str) -> int | None:
        folded = keyword.casefold()
        for idx, name in enumerate(self.names):
            if name is not None and name.casefold() == folded:
                return idx
        return None

    def index_or_create(self, keyword: str) -> int | None:
        """The letter index for `keyword`, allocating a free one; None when all 26 are used."""
        idx = self.index_of(keyword)
        if idx is not None:
            return idx
        for idx, name in enumerate(self.names):
            if name is None:
                self.names[idx] = keyword
                self.changed = True
                return idx
        return None


# -- file names -------------------------------------------------------------------


class FileInfo(NamedTuple):
    """What a message file name says: flags, keyword letter indexes, other letters."""

    flags: int
    keyword_idx: frozenset[int]
    other_letters: str  # unknown flag letters, preserved on rewrite
    tail: str  # ",..." after the flag letters, preserved


def split_name(filename: str) -> tuple[str, str | None]:
    """(base, info): base = text before the first ':', info = text after the last ':'."""
    base, sep, _ = filename.partition(MAILDIR_INFO_SEP)
    if not sep:
        return base, None
    return base, filename.rsplit(MAILDIR_INFO_SEP, 1)[1]


# A folder's files share a handful of flag strings: parse each once (FileInfo is
# immutable, so the parsed value can be shared).
@functools.lru_cache(maxsize=1024)
def parse_info(info: str | None) -> FileInfo:
    if info is None or not info.startswith("2,"):
        return FileInfo(0, frozenset(), "", "")
    letters, _, tail = info[2:].partition(",")
    flags = 0
    kw: set[int] = set()
    other: list[str] = []
    for ch in letters:
        if ch in FLAG_LETTERS:
            flags |= FLAG_LETTERS[ch]
        elif "a" <= ch <= "z":
            kw.add(ord(ch) - ord("a"))
        else:
            other.append(ch)
    return FileInfo(flags, frozenset(kw), "".join(other), "," + tail if tail else "")


def build_filename(base: str, flags: int, keyword_idx: frozenset[int], keep: FileInfo) -> str:
    """`<base>:2,<letters sorted by ASCII>` keeping unknown letters and any tail."""
    letters = {_LETTER_FOR_FLAG[bit] for bit in _LETTER_FOR_FLAG if flags & bit}
    letters.update(KEYWORD_LETTERS[idx] for idx in keyword_idx)
    letters.update(keep.other_letters)
    return f"{base}{MAILDIR_INFO_SEP}2,{''.join(sorted(letters))}{keep.tail}"


def size_from_base(base: str, key: str) -> int | None:
    """The `,S=` / `,W=` value of a base name (maildir_filename_get_size): the digits
    after the first `,<key>=` that they fill up to a `,`, a `:` or the end."""
    tag = f",{key}="
    start = base.find(tag)
    while start != -1:
        pos = start + len(tag)
        end = len(base)
        for stop in (",", ":"):
            found = base.find(stop, pos, end)
            if found != -1:
                end = found
        digits = base[pos:end]
        if not digits or (digits.isascii() and digits.isdigit()):
            return int(digits or 0)
        start = base.find(tag, start + 1)
    return None


def _sort_parts(name: str) -> tuple[int, int | None, str]:
    match = re.match(r"[0-9]*", name)
    digits = match.group(0) if match else ""
    rest = name[len(digits) :]
    usecs: int | None = None
    uniq = re.match(r"\.([^.:]*)", rest)
    if uniq is not None and "M" in uniq.group(1):
        after = re.match(r"[0-9]*", uniq.group(1).split("M", 1)[1])
        usecs = int(after.group(0) or 0) if after else 0
    return (int(digits) if digits else 0, usecs, rest.split(MAILDIR_INFO_SEP, 1)[0])


def sort_cmp(name1: str, name2: str) -> int:
    """Order of new files when UIDs are assigned: seconds, then M<usecs> when both have
    it, then the rest of the base (maildir_filename_sort_cmp, storage-formats.md §1.4)."""
    secs1, usecs1, rest1 = _sort_parts(name1)
    secs2, usecs2, rest2 = _sort_parts(name2)
    if secs1 != secs2:
        return -1 if secs1 < secs2 else 1
    if usecs1 is not None and usecs2 is not None and usecs1 != usecs2:
        return -1 if usecs1 < usecs2 else 1
    b1, b2 = rest1.encode("utf-8", "surrogateescape"), rest2.encode("utf-8", "surrogateescape")
    return (b1 > b2) - (b1 < b2)


def usable_base(guid: str, size: int, vsize: int) -> bool:
    """Can a message GUID serve as the file base name (Dovecot then reports it back)?"""
    if not guid or guid.startswith((".", ":")) or len(guid.encode("utf-8", "replace")) > 200:
        return False
    if any(c in guid for c in "/:") or any(c.isspace() or ord(c) < 0x20 for c in guid):
        return False
    try:
        guid.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if size_from_base(guid, "S") != size:
        return False
    stated_vsize = size_from_base(guid, "W")
    return stated_vsize is None or stated_vsize == vsize


def valid_guid_text(guid: str) -> bool:
    """A GUID can be written as a uidlist `G` value: no whitespace or control chars."""
    return bool(guid) and not any(c.isspace() or ord(c) < 0x20 for c in guid)
