"""A folder's status without a rescan, while nothing on disk moved (`pydsync-summary`).

A maildir folder can only change through its cur/ and new/ directories and its text
files. Their stat data (the stamp) taken before a scan, stored next to what the scan
found, answers the next open when the stamp is unchanged — as Dovecot trusts its index
while the directories' mtimes stay put. A directory modified within a timestamp tick
before the scan may change again within that tick, so such a stamp is not trusted
("dirty", as Dovecot's maildir sync calls it). The file is a cache: a missing,
stale or unreadable one only costs a rescan, so it is replaced atomically, not fsynced.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .base import MailboxStatus, value_record

SUMMARY_NAME = "pydsync-summary"
_FORMAT = "pydsync-summary/3"
# A file system that stamps whole seconds may stamp two seconds (FAT): Dovecot's
# MAILDIR_SYNC_SECS rule, doubled. One with sub-second stamps takes them from the
# kernel's coarse clock, a jiffy (at most 10 ms) behind the time we read.
_COARSE_TICK_NS = 2_000_000_000
_CLOCK_REALTIME_COARSE = 5  # Linux's clock id; the time module does not name it


def _fine_tick_ns() -> int:
    """Twice the coarse clock's resolution (the jiffy: 4 ms at HZ=250), and at least
    20 ms, which also covers file systems that stamp in 10 ms steps (exFAT); 50 ms
    where the kernel can't tell. A close that must wait for its folders to settle
    waits this long at most."""
    try:
        jiffy = time.clock_getres(_CLOCK_REALTIME_COARSE)
    except (OSError, AttributeError):
        return 50_000_000
    return max(20_000_000, int(2 * jiffy * 1e9)) if 0 < jiffy <= 0.02 else 50_000_000


_FINE_TICK_NS = _fine_tick_ns()


def _tick_ns(mtime_ns: int) -> int:
    return _FINE_TICK_NS if mtime_ns % 1_000_000_000 else _COARSE_TICK_NS


# (size, mtime ns); zeros = missing. No inode: like Dovecot's index, which keeps cur/'s
# mtime, a copy that keeps mtimes (cp -a, rsync -t, a restore) stays valid; a file
# replaced by one of the same size shows a later mtime once the stamp is settled.
StatKey = tuple[int, int]


def stat_key(path: Path) -> StatKey:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


@value_record
class FolderStamp:
    """Stat data of a folder's directories (`dirs`) and text files (`files`), taken at
    `taken_ns` (wall clock, nanoseconds)."""

    dirs: tuple[StatKey, ...]
    files: tuple[StatKey, ...]
    taken_ns: int

    @classmethod
    def take(cls, dirs: tuple[Path, ...], files: tuple[Path, ...]) -> FolderStamp:
        taken = time.time_ns()
        # a directory's size depends on its history (a copy's differs): mtime only
        dir_keys = tuple((0, mtime) for _, mtime in map(stat_key, dirs))
        return cls(dir_keys, tuple(map(stat_key, files)), taken)

    def same_disk(self, other: FolderStamp) -> bool:
        return (self.dirs, self.files) == (other.dirs, other.files)

    @property
    def settled(self) -> bool:
        """Nothing watched was modified within a timestamp tick of the stamp, so any
        later change shows a later mtime."""
        return all(key[1] + _tick_ns(key[1]) <= self.taken_ns for key in (*self.dirs, *self.files))

    @staticmethod
    def wait_to_settle(stamps: list[FolderStamp]) -> None:
        """Sleep until the newest mtime of `stamps` is a fine-grained tick old (at most
        that long); whole-second file systems are not waited for."""
        newest = max(
            (key[1] for st in stamps for key in (*st.dirs, *st.files) if key[1] % 1_000_000_000),
            default=0,
        )
        wait_ns = newest + _FINE_TICK_NS - time.time_ns()
        if 0 < wait_ns <= _FINE_TICK_NS:
            time.sleep(wait_ns / 1e9)

    def vouches_for(self, newer: FolderStamp) -> bool:
        """A scan made after this stamp still shows the folder at `newer`."""
        return self.settled and self.same_disk(newer)


@value_record
class Summary:
    stamp: FolderStamp
    status: MailboxStatus
    log_floor: int
    has_attributes: bool

    def serialize(self) -> bytes:
        st = self.status
        return json.dumps(
            {
                "format": _FORMAT,
                "dirs": self.stamp.dirs,
                "files": self.stamp.files,
                "taken_ns": self.stamp.taken_ns,
                "status": [
                    st.guid.hex(),
                    st.uid_validity,
                    st.uid_next,
                    st.messages,
                    st.first_recent_uid,
                    st.highest_modseq,
                ],
                "log_floor": self.log_floor,
                "has_attributes": self.has_attributes,
            }  # fmt: skip
        ).encode()

    @classmethod
    def load(cls, path: Path) -> Summary | None:
        try:
            raw = json.loads(path.read_bytes())
            if raw.get("format") != _FORMAT:
                return None
            guid, validity, uid_next, messages, recent, modseq = raw["status"]
            stamp = FolderStamp(
                tuple(_stat_key(k) for k in raw["dirs"]),
                tuple(_stat_key(k) for k in raw["files"]),
                int(raw["taken_ns"]),
            )
            status = MailboxStatus(
                bytes.fromhex(guid), int(validity), int(uid_next), int(messages),
                int(recent), int(modseq),
            )  # fmt: skip
            return cls(stamp, status, int(raw["log_floor"]), bool(raw["has_attributes"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        """Best effort: a summary that can't be written is a rescan next time."""
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(self.serialize())
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)


def _stat_key(raw: list[int]) -> StatKey:
    size, mtime = (int(v) for v in raw)
    return (size, mtime)
