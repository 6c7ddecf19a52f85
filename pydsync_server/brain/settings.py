"""What a master brain is asked to do, and what a brain reports back.

Built by the CLI from the `sync`/`backup` options (dsync-algorithm.md §0.2); the
master sends the relevant part to the slave in its handshake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ..errors import ExitCode


class SyncMode(Enum):
    TWOWAY = "sync"
    BACKUP = "backup"  # master is the source, the slave is reverted to match
    BACKUP_REVERSE = "backup -R"  # master is the destination
    ONEWAY = "sync -1"
    ONEWAY_REVERSE = "sync -1 -R"


@dataclass  # not frozen: never changed or hashed; frozen doubles its start-up cost
class SyncSettings:
    mode: SyncMode = SyncMode.TWOWAY
    hostname: str = "localhost"
    full_sync: bool = False  # -f
    state: str | None = None  # -s STATE ("" = none yet); None = -s not given
    mailbox: str | None = None  # -m
    mailbox_guid: str | None = None  # -g
    namespace_prefixes: tuple[str, ...] | None = None  # -n
    visible_namespaces: bool = False  # -N
    exclude: tuple[str, ...] = ()  # -x
    virtual_all_box: str | None = None  # -a
    lock_timeout: int = 0  # -l
    purge_remote: bool = False  # -P
    since: int = 0  # -t
    until: int = 0  # -e
    max_size: int = 0  # -I
    only_flag: str | None = None  # -O
    debug: bool = False  # -D
    hashed_headers: tuple[str, ...] = ("Date", "Message-ID")
    alt_char: str = "_"
    commit_msgs_interval: int = 100
    empty_hdr_workaround: bool = False


@dataclass
class SyncResult:
    """How a brain ended. `state` is the new `-s` state string (master only)."""

    exit_code: ExitCode = ExitCode.OK
    state: str | None = None
    errors: list[str] = field(default_factory=list)
    changes_during_sync: str | None = None
    warnings: list[str] = field(default_factory=list)


Clock = Callable[[], float]
Log = Callable[[str], None]
# Take the per-user dsync lock within `timeout` seconds; returns the release function.
UserLock = Callable[[float], Callable[[], None]]
