"""Reading an index: `dovecot.index` (when needed) + `.log.2` + `.log` replayed into one
`IndexView` (storage-formats.md §6.5, §6.6).

With the whole history in the logs (the oldest log starts it: `prev_file_seq == 0`)
the logs alone are replayed, which also yields every change for dsync's scan.
Otherwise the `dovecot.index` snapshot is loaded and the log continues from its
position; records before that position only feed modseqs and the change scan.
A broken record stops the replay: everything before it is kept and `problem` says
what was wrong. A file that cannot be read at all raises `LogFormatError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import StorageError
from .indexfile import parse_index
from .logfile import LogFile
from .records import LogFormatError
from .state import IndexState

INDEX_PREFIX = "dovecot.index"


@dataclass(frozen=True)
class IndexPaths:
    """The files of one index: `<dir>/<prefix>`, `.log`, `.log.2`, `.cache`, `.backup`."""

    directory: Path
    prefix: str = INDEX_PREFIX

    @property
    def index(self) -> Path:
        return self.directory / self.prefix

    @property
    def log(self) -> Path:
        return self.directory / f"{self.prefix}.log"

    @property
    def log2(self) -> Path:
        return self.directory / f"{self.prefix}.log.2"

    @property
    def cache(self) -> Path:
        return self.directory / f"{self.prefix}.cache"

    @property
    def backup(self) -> Path:
        return self.directory / f"{self.prefix}.backup"


@dataclass(frozen=True)
class IndexView:
    """An index as read. `exists` is False when there is neither index nor log.

    `log_end` is where the last complete record of `.log` ends, `log_seq` its file
    sequence, `indexid` the index id writers must keep. `history_start` is the modseq
    the oldest log file starts at: `changes` covers everything after it.
    """

    state: IndexState
    exists: bool
    indexid: int = 0
    log_seq: int = 0
    log_end: int = 0
    history_start: int = 0
    problem: str | None = None


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"Can't read {path}: {exc.strerror}") from exc


def read_index(paths: IndexPaths, log_data: bytes | None = None) -> IndexView:
    """Read and replay an index. `log_data`: the `.log` bytes when the caller already
    holds them (read through the locked descriptor: closing another descriptor of a
    file drops this process's fcntl locks on it)."""
    data = log_data if log_data is not None else _read_optional(paths.log)
    if data is None:
        return _index_only(paths)
    log = LogFile.parse(data, str(paths.log))
    files = [log]
    if log.header.prev_file_seq != 0:
        old = _read_optional(paths.log2)
        if old is not None:
            try:
                log2 = LogFile.parse(old, str(paths.log2))
            except LogFormatError:
                log2 = None  # a broken old log only loses history
            if log2 is not None and _chained(log2, log):
                files.insert(0, log2)
    if files[0].header.prev_file_seq == 0:
        return _replay(IndexState(), files, log, (files[0].header.file_seq, 0))
    snapshot_data = _read_optional(paths.index)
    if snapshot_data is None:
        raise LogFormatError(
            f"{paths.log}: the log no longer reaches the start of the history and "
            f"{paths.index} is missing (index lost: force-resync rebuilds it)"
        )
    snap = parse_index(snapshot_data, str(paths.index))
    if snap.indexid != log.header.indexid:
        raise LogFormatError(f"{paths.index}: index id differs from its log (being recreated)")
    seqs = [f.header.file_seq for f in files]
    if snap.log_file_seq not in seqs:
        raise LogFormatError(f"{paths.index}: points to log file {snap.log_file_seq}, not present")
    files = files[seqs.index(snap.log_file_seq) :]
    return _replay(snap.state, files, log, (snap.log_file_seq, snap.log_file_head_offset))


def _chained(old: LogFile, new: LogFile) -> bool:
    return (
        old.header.file_seq == new.header.prev_file_seq and old.header.indexid == new.header.indexid
    )


def _index_only(paths: IndexPaths) -> IndexView:
    data = _read_optional(paths.index)
    if data is None:
        return IndexView(IndexState(), exists=False)
    snap = parse_index(data, str(paths.index))
    snap.state.modseq = snap.modseq_hdr[0] or 1
    return IndexView(snap.state, True, snap.indexid, snap.log_file_seq, 0, snap.state.modseq)


def _replay(
    state: IndexState, files: list[LogFile], log: LogFile, start: tuple[int, int]
) -> IndexView:
    """Replay `files` into `state`, applying records from `start` (seq, offset) on and
    only scanning the ones before it."""
    problem = None
    history_start = files[0].header.initial_modseq
    log_end = log.header.hdr_size
    for file in files:
        if file is not files[0] and file.header.prev_file_seq == 0:
            state = IndexState()  # the index was reset: its history starts again here
            history_start = file.header.initial_modseq
        state.modseq = max(state.modseq, file.header.initial_modseq)
        minor = file.header.minor_version
        try:
            for rec in file.records():
                state.scan_only = (file.header.file_seq, rec.offset) < start
                try:
                    state.apply(rec, minor)
                except LogFormatError as exc:
                    raise LogFormatError(f"{exc} (record at offset {rec.offset})") from None
                if file is log:
                    log_end = rec.end
        except LogFormatError as exc:
            text = str(exc)
            problem = text if text.startswith(file.path) else f"{file.path}: {text}"
            break
    state.scan_only = False
    return IndexView(
        state, True, log.header.indexid, log.header.file_seq, log_end, history_start, problem
    )


def index_exists(paths: IndexPaths) -> bool:
    return os.path.exists(paths.log) or os.path.exists(paths.index)
