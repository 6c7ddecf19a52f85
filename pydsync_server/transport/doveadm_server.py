"""Server side of the doveadm TCP protocol (dsync-protocol.md §12): listener, preamble,
PLAIN auth, command lines, channel-0 framing of the output and channel-L log lines.

What a command does is the caller's business (`Handler`); this module knows only the
wire. One connection carries any number of commands, and at most one dsync session,
which ends it (§12.1). A listener on a UNIX socket of mode 0600 pre-authenticates its
clients, as Dovecot's does.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import DsyncError, PeerClosedError
from .doveadm_tcp import (
    CHANNEL_DATA,
    CHANNEL_LOG,
    SERVER_VERSION,
    DoveadmCommand,
    LineReader,
    SessionStream,
    SocketIO,
    encode_log,
    encode_packet,
    encode_packets,
    parse_plain_auth,
    parse_version_line,
)

FINISH_WAIT = 5.0  # after a session, how long we wait for the client's EOF before closing
BACKLOG = 16

Log = Callable[[str], None]


class ServerStream(SessionStream):
    """The server's stream: raw client bytes in; output as channel-0 packets when the
    client announced a minor > 0 (§12.2), else plain."""

    def __init__(self, io: SocketIO, *, timeout: float, initial: bytes, multiplex: bool) -> None:
        self._multiplex = multiplex
        super().__init__(io, timeout=timeout, initial=initial)

    def _frame(self, data: bytes) -> bytes:
        return encode_packets(CHANNEL_DATA, data) if self._multiplex else data

    def reply(self, code: str | None) -> None:
        """The command's verdict: `\\n+\\n`, or `\\n-CODE\\n` (`""`: bare `\\n-\\n`)."""
        self.write(b"\n+\n" if code is None else b"\n-" + code.encode("ascii") + b"\n")

    def log(self, level: int, text: str) -> None:
        """One log line on channel L; dropped for a minor-0 client or a gone peer."""
        if not self._multiplex:
            return
        packet = encode_packet(CHANNEL_LOG, encode_log(level, text))
        try:
            with self._write_lock:
                self._send(packet)
        except (OSError, DsyncError):
            pass  # the session itself reports the broken connection

    def finish(self, wait: float = FINISH_WAIT) -> None:
        """Send EOF and give the client `wait` seconds to close too, so unread input
        cannot turn our close into a reset that loses the last output."""
        self.close_write()
        deadline = time.monotonic() + wait
        with self._cond:
            while not self._eof and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())


# (the command, its stream) -> True when the command took over the connection (a dsync
# session: it is closed afterwards); the handler sends the reply itself.
Handler = Callable[[DoveadmCommand, ServerStream], bool]


@dataclass(frozen=True)
class ServerSettings:
    username: str  # doveadm_username: the only user PLAIN accepts
    password: str  # doveadm_password
    timeout: float = 600.0
    tls: ssl.SSLContext | None = None
    preauthenticated: bool = False  # a private UNIX socket: `+` without auth (§12.1)


def serve_connection(
    sock: socket.socket, settings: ServerSettings, handler: Handler, log: Log
) -> None:
    """Speak the server side on an accepted connection until the client leaves or one
    dsync session ended; closes the socket."""
    try:
        sock.settimeout(settings.timeout)
        if settings.tls is not None:
            sock = settings.tls.wrap_socket(sock, server_side=True)
    except (OSError, ssl.SSLError) as exc:
        log(f"Error: TLS handshake failed: {exc}")
        sock.close()
        return
    io = SocketIO(sock)
    try:
        stream = _preamble(io, settings, log)
    except (OSError, DsyncError) as exc:
        log(f"Error: doveadm client: {exc}")
        io.close()
        return
    if stream is None:
        io.close()
        return
    try:
        _commands(stream, handler)
    finally:
        stream.close()


def _preamble(io: SocketIO, settings: ServerSettings, log: Log) -> ServerStream | None:
    """VERSION exchange and authentication; the session stream, None when refused."""
    lines = LineReader(io, settings.timeout)
    minor = parse_version_line(lines.line(), b"doveadm-server")
    if minor is None:
        log("Error: doveadm client not compatible with this server (mixed old and new binaries?)")
        return None
    greeting = SERVER_VERSION if minor > 0 else b""
    if settings.preauthenticated:
        _send(io, greeting + b"+\n", settings.timeout)
    else:
        _send(io, greeting + b"-\n", settings.timeout)
        if not _authenticated(lines.line(), settings):
            log("Error: doveadm client authentication failed")
            _send(io, b"-\n", settings.timeout)
            return None
        _send(io, b"+\n", settings.timeout)
    return ServerStream(io, timeout=settings.timeout, initial=lines.rest, multiplex=minor > 0)


def _authenticated(line: bytes, settings: ServerSettings) -> bool:
    creds = parse_plain_auth(line)
    if creds is None or not settings.password:
        return False
    user, password = creds
    return user == settings.username and hmac.compare_digest(
        password.encode("utf-8", "surrogateescape"),
        settings.password.encode("utf-8", "surrogateescape"),
    )


def _send(io: SocketIO, data: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    view = memoryview(data)
    while view:
        written, event = io.send_some(view)
        view = view[written:]
        if not written:
            io.wait_writable(event, deadline)


def _commands(stream: ServerStream, handler: Handler) -> None:
    """Command lines until EOF, or until a command takes the connection over."""
    while True:
        try:
            line = stream.read_line()
        except PeerClosedError:
            return
        command = DoveadmCommand.parse(line)
        if command is None:
            stream.reply("")  # not a command line: `\n-\n` (§12.1)
            continue
        if handler(command, stream):
            stream.finish()
            return


class Listener:
    """A listening TCP (or UNIX) socket handing each connection to `serve_connection`."""

    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.path: str | None = None
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(BACKLOG)
        except OSError:
            self.sock.close()
            raise

    @classmethod
    def unix(cls, path: str, mode: int = 0o600) -> Listener:
        """A UNIX socket at `path` (a stale socket there is replaced) with `mode`."""
        self = cls.__new__(cls)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.path = path
        try:
            if os.path.lexists(path):
                if not stat.S_ISSOCK(os.lstat(path).st_mode):
                    raise FileExistsError(f"{path} exists and is not a socket")
                os.unlink(path)
            old_umask = os.umask(0o777 & ~mode)  # never world-connectable, even briefly
            try:
                self.sock.bind(path)
            finally:
                os.umask(old_umask)
            os.chmod(path, mode)
            self.sock.listen(BACKLOG)
        except OSError:
            self.sock.close()
            raise
        return self

    @property
    def port(self) -> int:
        return 0 if self.path is not None else int(self.sock.getsockname()[1])

    @property
    def preauthenticated(self) -> bool:
        """Dovecot's rule: a UNIX listener whose socket has mode 0600 (§12.1)."""
        if self.path is None:
            return False
        try:
            return os.stat(self.path).st_mode & 0o777 == 0o600
        except OSError:
            return False

    def serve(
        self, settings: ServerSettings, handler: Handler, log: Log, *, once: bool = False
    ) -> None:
        """Accept connections: one in this thread with `once`, else each in its own thread."""
        while True:
            conn, _ = self.sock.accept()
            if once:
                serve_connection(conn, settings, handler, log)
                return
            threading.Thread(
                target=serve_connection,
                args=(conn, settings, handler, log),
                name="doveadm-connection",
                daemon=True,
            ).start()

    def close(self) -> None:
        self.sock.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
