"""Dovecot's binary index: read `dovecot.index` + `dovecot.index.log` (+ `.log.2`), and
append transactions to the log the way Dovecot accepts them (storage-formats.md §6).

Used by the sdbox and mdbox drivers (per-mailbox indexes, the mdbox map). Reading:

    view = read_index(IndexPaths(mailbox_dir))      # IndexView; view.state: IndexState
    view.state.uid_validity, .next_uid, .messages[uid].flags/.keywords/.ext["mdbox"]
    view.state.message_modseq(msg), view.state.changes, view.state.attributes

Writing (under the log's fcntl lock, re-reading the state through the locked fd):

    with locked_log(paths.log) as locked:
        view = read_index(paths, locked.data)
        t = Transaction(sync=True); t.append([(uid, flags)]); ...
        locked.append(t)
    create_log(paths.log, new_log_header(now), t)    # a brand-new index
"""

from .indexfile import IndexSnapshot, parse_index
from .logfile import LogFile, LogHeader, RawRecord
from .reader import INDEX_PREFIX, IndexPaths, IndexView, index_exists, read_index
from .records import AttributeChange, LogFormatError
from .state import AttributeStamp, Extension, IndexState, MessageRecord
from .writer import (
    DBOX_HDR,
    GUID,
    MAP,
    MDBOX,
    MDBOX_HDR,
    MODSEQ,
    REF,
    ExtSpec,
    LockedLog,
    Transaction,
    create_log,
    locked_log,
    new_log_header,
    replace_log,
)

__all__ = [
    "DBOX_HDR", "GUID", "INDEX_PREFIX", "MAP", "MDBOX", "MDBOX_HDR", "MODSEQ", "REF",
    "AttributeChange", "AttributeStamp", "ExtSpec", "Extension", "IndexPaths", "IndexSnapshot",
    "IndexState", "IndexView", "LockedLog", "LogFile", "LogFormatError", "LogHeader",
    "MessageRecord", "RawRecord", "Transaction", "create_log", "index_exists", "locked_log",
    "new_log_header", "parse_index", "read_index", "replace_log",
]  # fmt: skip
