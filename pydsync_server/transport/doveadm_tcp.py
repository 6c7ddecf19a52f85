"""The doveadm TCP protocol of `tcp:`/`tcps:` destinations: wire codec, socket I/O, client.

dsync-protocol.md §12: a line-based preamble (VERSION, `-`/`+`, PLAIN auth, one command
line), then the dsync stream; server→client bytes are wrapped in PACKET multiplexing
(channel 0 = command output, channel `L` = log lines), client→server bytes stay raw.
`connect_dsync` runs the client side and returns a `ByteStream` for `StreamChannel`.
"""

from __future__ import annotations

import base64
import binascii
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError, DsyncError, IOStalledError, PeerClosedError, UnknownUserError
from ..protocol.escape import tab_escape, tab_unescape
from .spill import SpillBuffer

CLIENT_VERSION = b"VERSION\tdoveadm-server\t1\t2\n"  # we announce protocol 1.2 (§12.1)
SERVER_VERSION = b"VERSION\tdoveadm-client\t1\t2\n"
CHANNEL_DATA = 0
CHANNEL_LOG = ord("L")
PACKET_HEADER = 5  # channel byte + 32-bit big-endian length (§12.2)
MAX_PACKET = 32 * 1024  # our payload cap; any size is valid on the wire
MAX_LINE = 64 * 1024  # preamble lines are short; a longer one is not this protocol
READ_SIZE = 64 * 1024
DSYNC_COMMAND = "dsync-server"
# Log-type bytes of channel L (§12.2), as the level words of our log lines.
LOG_LEVELS = {1: "Debug", 2: "Info", 3: "Warning", 4: "Error", 5: "Fatal", 6: "Panic"}
LOG_TYPES = {name: number for number, name in LOG_LEVELS.items()}

RemoteLog = Callable[[int, str], None]  # (log-type byte, text without LF)


class RemoteCommandError(DsyncError):
    """The doveadm server refused our command (`\\n-CODE\\n`)."""


# -- sans-I/O codec ---------------------------------------------------------------------


def encode_packet(channel: int, payload: bytes) -> bytes:
    """One multiplex packet (§12.2)."""
    return bytes((channel,)) + len(payload).to_bytes(4, "big") + payload


def encode_packets(channel: int, data: bytes) -> bytes:
    """`data` as packets of at most MAX_PACKET bytes each."""
    return b"".join(
        encode_packet(channel, data[i : i + MAX_PACKET]) for i in range(0, len(data), MAX_PACKET)
    )


class PacketDecoder:
    """Splits the server→client multiplex stream into (channel, payload) pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an unfinished packet (non-zero at EOF = truncated stream)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while len(self._buf) >= PACKET_HEADER:
            size = int.from_bytes(self._buf[1:PACKET_HEADER], "big")
            if len(self._buf) < PACKET_HEADER + size:
                break
            out.append((self._buf[0], bytes(self._buf[PACKET_HEADER : PACKET_HEADER + size])))
            del self._buf[: PACKET_HEADER + size]
        return out


class LogAssembler:
    """Channel-L payloads to whole log lines: (log-type byte, text); lines may span packets."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, payload: bytes) -> list[tuple[int, str]]:
        *lines, self._partial = (self._partial + payload).split(b"\n")
        return [(line[0], line[1:].decode("utf-8", "replace")) for line in lines if line]


def encode_log(level: int, text: str) -> bytes:
    """One log line as channel-L payload."""
    return bytes((level,)) + text.replace("\n", " ").encode("utf-8", "replace") + b"\n"


def plain_auth_line(username: str, password: str) -> bytes:
    """`PLAIN\\t<base64(\\0user\\0password)>\\n` (§12.1 step 4)."""
    token = b"\0" + username.encode() + b"\0" + password.encode()
    return b"PLAIN\t" + base64.b64encode(token) + b"\n"


def parse_plain_auth(line: bytes) -> tuple[str, str] | None:
    """(user, password) of a PLAIN line, None when it is not one."""
    mech, tab, token = line.partition(b"\t")
    if mech != b"PLAIN" or not tab:
        return None
    try:
        parts = base64.b64decode(token, validate=True).split(b"\0")
    except (binascii.Error, ValueError):
        return None
    if len(parts) != 3:
        return None
    return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")


@dataclass(frozen=True)
class DoveadmCommand:
    """A command line: `<flags>\\t<user>\\t<command>\\t<args…>` (§12.1 step 6)."""

    flags: str
    user: str
    name: str
    args: tuple[str, ...]

    def encode(self) -> bytes:
        fields = [self.flags, self.user, self.name, *self.args]
        return b"\t".join(tab_escape(f.encode("utf-8")) for f in fields) + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> DoveadmCommand | None:
        fields = [tab_unescape(f).decode("utf-8", "surrogateescape") for f in line.split(b"\t")]
        if len(fields) < 3:
            return None
        return cls(fields[0], fields[1], fields[2], tuple(fields[3:]))


def dsync_command(user: str, *, debug: bool, replicator_notify: bool) -> DoveadmCommand:
    """The command a `tcp:` master sends: `dsync-server -u<user> [-U]`, flag D with -D."""
    args = (f"-u{user}",) + (("-U",) if replicator_notify else ())
    return DoveadmCommand("D" if debug else "", user, DSYNC_COMMAND, args)


def parse_version_line(line: bytes, service: bytes) -> int | None:
    """The minor of `VERSION\\t<service>\\t1\\t<minor>`, None if it is not that."""
    parts = line.split(b"\t")
    if len(parts) != 4 or parts[:3] != [b"VERSION", service, b"1"] or not parts[3].isdigit():
        return None
    return int(parts[3])


# -- socket I/O -------------------------------------------------------------------------


class SocketIO:
    """A non-blocking (TLS) socket used by one reading and one writing thread.

    OpenSSL must not run two operations on one connection at once, so every socket call
    takes a lock; waiting for readiness happens outside it. `wake()` makes a waiting
    `recv` return b"" (used to stop a reader thread).
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._woken = False

    def recv(self, n: int, deadline: float | None = None) -> bytes:
        """Up to n bytes (b"" at EOF or after wake()); IOStalledError past `deadline`."""
        while not self._woken:
            with self._lock:
                try:
                    return self.sock.recv(n)
                except (BlockingIOError, ssl.SSLWantReadError):
                    want = select.POLLIN
                except ssl.SSLWantWriteError:
                    want = select.POLLOUT
            self._wait(want, deadline)
        return b""

    def send_some(self, data: memoryview) -> tuple[int, int]:
        """(bytes written, poll event to wait for when 0)."""
        with self._lock:
            try:
                return self.sock.send(data[:READ_SIZE]), 0
            except (BlockingIOError, ssl.SSLWantWriteError):
                return 0, select.POLLOUT
            except ssl.SSLWantReadError:
                return 0, select.POLLIN

    def _wait(self, event: int, deadline: float | None) -> None:
        poller = select.poll()
        poller.register(self.sock, event)
        poller.register(self._wake_r, select.POLLIN)
        if deadline is None:
            poller.poll()
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(max(1, int(remaining * 1000))):
            if time.monotonic() >= deadline:
                raise IOStalledError("I/O has stalled")

    def wait_writable(self, event: int, deadline: float) -> None:
        self._wait(event, deadline)

    def shutdown_write(self) -> None:
        """EOF towards the peer; TLS has no half-close, so there only the close ends it."""
        if isinstance(self.sock, ssl.SSLSocket):
            return
        with self._lock:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # already gone: EOF is what the peer sees anyway

    def wake(self) -> None:
        self._woken = True
        self._wake_w.send(b"x")

    def close(self) -> None:
        for s in (self.sock, self._wake_r, self._wake_w):
            s.close()


class LineReader:
    """Synchronous preamble lines from a `SocketIO`; keeps what follows the last line."""

    def __init__(self, io: SocketIO, timeout: float) -> None:
        self.io = io
        self.rest = b""
        self._timeout = timeout

    def line(self) -> bytes:
        deadline = time.monotonic() + self._timeout
        while b"\n" not in self.rest:
            if len(self.rest) > MAX_LINE:
                raise PeerClosedError("doveadm protocol line too long")
            data = self.io.recv(READ_SIZE, deadline)
            if not data:
                raise PeerClosedError("Disconnected from remote")
            self.rest += data
        line, _, self.rest = self.rest.partition(b"\n")
        return line


# -- the session stream -----------------------------------------------------------------


class SessionStream:
    """`ByteStream` over a `SocketIO` after the preamble: a reader thread fills a spill
    buffer; the -T stall timeout covers both directions as in `DuplexStream`.

    Subclasses decide what received bytes mean (`_received`) and how output is framed
    (`_frame`).
    """

    def __init__(self, io: SocketIO, *, timeout: float, initial: bytes = b"") -> None:
        self._io = io
        self._timeout = timeout
        self._buffer = SpillBuffer()
        self._cond = threading.Condition()
        self._eof = False
        self._error: Exception | None = None
        self._closed = False
        self._write_lock = threading.Lock()
        self._last_activity = time.monotonic()
        if initial:
            self._received(initial)
        self._thread = threading.Thread(target=self._reader, name="doveadm-reader", daemon=True)
        self._thread.start()

    def _received(self, data: bytes) -> None:
        self._deliver(data)

    def _frame(self, data: bytes) -> bytes:
        return data

    def _finish_input(self) -> Exception | None:
        """Called at EOF; an error to raise instead of a plain EOF."""
        return None

    def _deliver(self, data: bytes) -> None:
        with self._cond:
            self._buffer.append(data)
            self._cond.notify_all()

    def read(self, n: int = READ_SIZE) -> bytes:
        """Up to `n` bytes, at least one; b"" at EOF."""
        with self._cond:
            while True:
                data = self._buffer.take(n)
                if data:
                    return data
                if self._error is not None:
                    raise self._error
                if self._eof or self._closed:
                    return b""
                remaining = self._last_activity + self._timeout - time.monotonic()
                if remaining <= 0:
                    raise self._stalled()
                self._cond.wait(remaining)

    def read_line(self) -> bytes:
        """One LF-terminated line of the stream (without LF), byte by byte so nothing
        after it is consumed; PeerClosedError at EOF."""
        line = bytearray()
        while not line.endswith(b"\n"):
            byte = self.read(1)
            if not byte or len(line) > MAX_LINE:
                raise PeerClosedError("Disconnected from remote")
            line += byte
        return bytes(line[:-1])

    def _reader(self) -> None:
        try:
            while data := self._io.recv(READ_SIZE):
                with self._cond:
                    self._last_activity = time.monotonic()
                self._received(data)
            error = self._finish_input()
        except Exception as exc:  # handed to the reading thread
            error = exc
        with self._cond:
            self._eof = True
            self._error = error
            self._cond.notify_all()

    def write(self, data: bytes | memoryview) -> None:
        with self._write_lock:
            self._send(self._frame(bytes(data)))

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written, event = self._io.send_some(view)
            if written:
                view = view[written:]
                with self._cond:
                    self._last_activity = time.monotonic()
                continue
            with self._cond:
                deadline = self._last_activity + self._timeout
            try:
                self._io.wait_writable(event, deadline)
            except IOStalledError:
                raise self._stalled() from None

    def close_write(self) -> None:
        self._io.shutdown_write()

    def close(self) -> None:
        """Stop the reader thread and close the connection."""
        if self._closed:
            return
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._io.wake()
        self._thread.join()
        self._io.close()
        self._buffer.close()

    def _stalled(self) -> IOStalledError:
        return IOStalledError(f"I/O has stalled, no activity for {self._timeout:g} seconds")


class ClientStream(SessionStream):
    """The client's stream: demultiplexes server output (§12.2); channel 0 is the
    command's output, channel L goes to `log`, unknown channels are ignored."""

    def __init__(self, io: SocketIO, *, timeout: float, log: RemoteLog, initial: bytes) -> None:
        self._packets = PacketDecoder()
        self._logs = LogAssembler()
        self._log = log
        super().__init__(io, timeout=timeout, initial=initial)

    def _received(self, data: bytes) -> None:
        for channel, payload in self._packets.feed(data):
            if channel == CHANNEL_DATA:
                self._deliver(payload)
            elif channel == CHANNEL_LOG:
                for level, text in self._logs.feed(payload):
                    self._log(level, text)

    def _finish_input(self) -> Exception | None:
        if self._packets.pending:
            return PeerClosedError("read(remote) failed: EOF inside a multiplex packet")
        return None


# -- the client -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    """What the client needs from the settings and the command line."""

    username: str  # doveadm_username
    password: str  # doveadm_password ("" = not set)
    user: str  # the mail user to sync
    debug: bool = False
    replicator_notify: bool = False
    timeout: float = 600.0


def client_tls_context(ca_file: str = "", ca_dir: str = "") -> ssl.SSLContext:
    """Verifying client context: `ssl_client_ca_file`/`_dir`, else the system store."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file or ca_dir:
        context.load_verify_locations(cafile=ca_file or None, capath=ca_dir or None)
    return context


def open_connection(
    host: str, port: int, *, tls: ssl.SSLContext | None, timeout: float
) -> socket.socket:
    """TCP connect (and TLS handshake, with `host` as the server name)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise DsyncError(f"connect({host}:{port}) failed: {exc.strerror or exc}") from exc
    if tls is None:
        return sock
    try:
        return tls.wrap_socket(sock, server_hostname=host)
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise DsyncError(f"TLS handshake with {host}:{port} failed: {exc}") from exc


def connect_dsync(sock: socket.socket, settings: ClientSettings, log: RemoteLog) -> ClientStream:
    """Run the preamble on a connected socket and start `dsync-server` (§12.1); the
    returned stream carries the dsync session. Closes the socket on failure."""
    io = SocketIO(sock)
    try:
        return _start(io, settings, log)
    except BaseException:
        io.close()
        raise


def open_session(io: SocketIO, settings: ClientSettings, log: RemoteLog) -> ClientStream:
    """VERSION exchange and authentication (§12.1 steps 1-5): the stream for command
    lines; it owns `io` (the caller closes `io` only when this raises)."""
    lines = LineReader(io, settings.timeout)
    _send_all(io, CLIENT_VERSION, settings.timeout)
    if parse_version_line(lines.line(), b"doveadm-client") is None:
        raise PeerClosedError("Remote doveadm server sent an invalid VERSION line")
    if _authenticate(io, lines, settings) is not True:
        raise DsyncError("doveadm server authentication failed")
    return ClientStream(io, timeout=settings.timeout, log=log, initial=lines.rest)


def _start(io: SocketIO, settings: ClientSettings, log: RemoteLog) -> ClientStream:
    stream = open_session(io, settings, log)
    try:
        stream.write(dsync_command(settings.user, **_flags(settings)).encode())
        _expect_success(stream)
    except BaseException:
        stream.close()
        raise
    return stream


def _flags(settings: ClientSettings) -> dict[str, bool]:
    return {"debug": settings.debug, "replicator_notify": settings.replicator_notify}


def _authenticate(io: SocketIO, lines: LineReader, settings: ClientSettings) -> bool:
    """`+` = pre-authenticated; `-` = send PLAIN and read the verdict."""
    line = lines.line()
    if line == b"+":
        return True
    if line != b"-":
        raise PeerClosedError(f"Remote doveadm server sent unexpected {line[:80]!r}")
    if not settings.password:
        raise ConfigError("doveadm_password not set, can't authenticate to remote server")
    _send_all(io, plain_auth_line(settings.username, settings.password), settings.timeout)
    return lines.line() == b"+"


def _send_all(io: SocketIO, data: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    view = memoryview(data)
    while view:
        written, event = io.send_some(view)
        view = view[written:]
        if not written:
            io.wait_writable(event, deadline)


def _expect_success(stream: ClientStream) -> None:
    """`\\n+\\n` on channel 0, or `\\n-CODE\\n` (§12.1 step 7)."""
    first = stream.read_line()
    reply = stream.read_line() if first == b"" else first
    if reply == b"+":
        return
    code = reply[1:].decode("ascii", "replace") if reply.startswith(b"-") else ""
    if code == "NOUSER":
        raise UnknownUserError("Unknown user in remote")
    raise RemoteCommandError(
        f"Failed to start remote dsync-server command: Remote exit_code={code or 'unknown'}"
    )
