"""`-U`: after a successful sync, tell Dovecot's replicator that a user was synced.

Dovecot 2.3 (dsync-protocol.md §2.2) connects to the UNIX socket
`<base_dir>/replicator-doveadm`, sends a handshake and one NOTIFY line and closes
without reading the answer; a missing socket (replicator not running) is no error.
`SyncTypeWatch` learns from the handshake passing through a channel whether the
session was a full sync, which the NOTIFY line reports.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable

from ..protocol.channel import Channel
from ..protocol.escape import tab_escape
from ..protocol.items import SYNC_TYPE_FULL, Handshake, Item

DEFAULT_BASE_DIR = "/run/dovecot"
SOCKET_NAME = "replicator-doveadm"
HANDSHAKE = b"VERSION\treplicator-doveadm-client\t1\t0\n"
TIMEOUT = 5.0  # never let a stuck replicator hold up the end of a sync
# The replicator is simply not running: Dovecot ignores these silently.
_NOT_RUNNING = (errno.ENOENT, errno.ECONNREFUSED)

Log = Callable[[str], None]


def notify_message(user: str, *, full: bool, state: str) -> bytes:
    """Handshake + `NOTIFY <user> <"f" if full> <state>` (user and state tab-escaped)."""
    fields = [
        b"NOTIFY",
        tab_escape(user.encode("utf-8", "surrogateescape")),
        b"f" if full else b"",
        tab_escape(state.encode("ascii")),
    ]
    return HANDSHAKE + b"\t".join(fields) + b"\n"


def notify_replicator(
    base_dir: str, user: str, *, full: bool = False, state: str = "", log: Log
) -> None:
    """Send the notification without waiting for a reply; failures are logged only.

    The sync already succeeded, so nothing here changes the exit code.
    """
    path = os.path.join(base_dir or DEFAULT_BASE_DIR, SOCKET_NAME)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(path)
        except OSError as exc:
            if exc.errno not in _NOT_RUNNING:
                log(f"Error: net_connect_unix({path}) failed: {exc.strerror or exc}")
            return
        try:
            sock.sendall(notify_message(user, full=full, state=state))
        except OSError as exc:
            log(f"Error: write({path}) failed: {exc.strerror or exc}")
    finally:
        sock.close()


class SyncTypeWatch:
    """A `Channel` that passes everything through and remembers the master's sync type.

    The master's `H` carries the sync type; the master sees it sent, the slave
    received (§6.2).
    """

    def __init__(self, inner: Channel) -> None:
        self._inner = inner
        self.sync_type: str | None = None

    @property
    def full(self) -> bool:
        return self.sync_type == SYNC_TYPE_FULL

    @property
    def peer_minor_version(self) -> int:
        return self._inner.peer_minor_version

    def send(self, item: Item) -> None:
        self._note(item)
        self._inner.send(item)

    def recv(self) -> Item:
        item = self._inner.recv()
        self._note(item)
        return item

    def flush(self) -> None:
        self._inner.flush()

    def close(self, *, send_done: bool) -> None:
        self._inner.close(send_done=send_done)

    def _note(self, item: Item) -> None:
        if isinstance(item, Handshake) and item.sync_type:
            self.sync_type = item.sync_type
