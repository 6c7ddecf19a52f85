"""One doveadm command run by a doveadm server (`-S`): the command line goes out; its
printed values, log lines and reply come back (dsync-protocol.md §12.1).

The server's print formatter sends each value tab-escaped and followed by a TAB, so the
output holds no LF; then `\\n+\\n` (success) or `\\n-CODE\\n` (`\\n-\\n`: unknown or
refused command) [verified against Dovecot 2.3.19's doveadm server].
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ..errors import DsyncError, PeerClosedError
from ..protocol.escape import tab_escape, tab_unescape
from .doveadm_tcp import ClientSettings, DoveadmCommand, RemoteLog, SocketIO, open_session


@dataclass(frozen=True)
class CommandReply:
    values: list[str]  # what the command printed, in order
    code: str | None  # None: success; else the CODE of `-CODE` ("" for a bare `-`)


def open_unix(path: str, timeout: float) -> socket.socket:
    """Connect to a doveadm server's UNIX socket (e.g. base_dir/doveadm-server)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise DsyncError(f"connect({path}) failed: {exc.strerror or exc}") from exc
    return sock


def run_command(
    sock: socket.socket, settings: ClientSettings, command: DoveadmCommand, log: RemoteLog
) -> CommandReply:
    """Authenticate, send `command`, collect its output and reply; closes the socket."""
    io = SocketIO(sock)
    try:
        stream = open_session(io, settings, log)
    except BaseException:
        io.close()
        raise
    try:
        stream.write(command.encode())
        output = stream.read_line()
        reply = stream.read_line()
    finally:
        stream.close()
    return CommandReply(parse_values(output), parse_reply(reply))


def parse_values(line: bytes) -> list[str]:
    """The values of the print formatter's output line (each ends with a TAB)."""
    fields = line.split(b"\t")
    if fields[-1] == b"":
        fields.pop()
    return [tab_unescape(field).decode("utf-8", "surrogateescape") for field in fields]


def encode_values(values: list[str]) -> bytes:
    """What a server prints: each value tab-escaped, followed by a TAB."""
    return b"".join(tab_escape(v.encode("utf-8", "surrogateescape")) + b"\t" for v in values)


def parse_reply(line: bytes) -> str | None:
    if line == b"+":
        return None
    if line.startswith(b"-"):
        return line[1:].decode("ascii", "replace")
    raise PeerClosedError(f"doveadm server sent an invalid reply: {line[:80]!r}")
