"""`pydsync doveadm-server`: a doveadm server (TCP, TLS or a UNIX socket) so that
`doveadm sync tcp:host:port` (and pydsync's) can reach a pydsync store (§12), and so
that `sync`/`backup -S` (doveadm's or pydsync's) can run here.

Each TCP connection authenticates with PLAIN against `doveadm_password` (user
`doveadm_username`, default `doveadm`); a 0600 UNIX socket is pre-authenticated, as
Dovecot's. A `dsync-server` command line runs our slave brain exactly as `pydsync
dsync-server` does and ends the connection; `sync` and `backup` run as `pydsync sync`/
`backup` would here, their printed values and reply going back (doveadm_command.py).
Log lines go back on channel L. Other commands are refused with `\n-\n`.
"""

from __future__ import annotations

import contextlib
import io
import re
import signal
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

from ..errors import DsyncError, ExitCode, UsageError
from ..storage.location import UserEnv, expand_vars
from ..transport.doveadm_command import encode_values
from ..transport.doveadm_server import Listener, ServerSettings, ServerStream
from ..transport.doveadm_tcp import DSYNC_COMMAND, LOG_TYPES, DoveadmCommand
from .context import Context
from .doveadm_client import DEFAULT_USERNAME
from .dsync import Log, run_sync, slave_session
from .options import BACKUP_OPTIONS, DSYNC_SERVER_OPTIONS, SYNC_OPTIONS, Parsed, getopt
from .sync_options import parse_uint

DEFAULT_HOST = "127.0.0.1"
# doveadm's reply codes for a command that could not run (§12.1).
REPLY_CODES = {
    ExitCode.USAGE: "USAGE",
    ExitCode.NOUSER: "NOUSER",
    ExitCode.NOPERM: "NOPERM",
    ExitCode.DATAERR: "DATAERR",
    ExitCode.NOTFOUND: "NOTFOUND",
    ExitCode.TEMPFAIL: "TEMPFAIL",
}
UNKNOWN_CODE = "UNKNOWN"  # what Dovecot replies for any other exit code (e.g. 2)
MAIL_COMMANDS = {"sync": SYNC_OPTIONS, "backup": BACKUP_OPTIONS}
# `[name: ]Level: text`, as our log callbacks write lines.
_LOG_LINE = re.compile(r"^(?:(?P<name>[^:]*): )?(?P<level>[A-Z][a-z]+): (?P<text>.*)$", re.S)


def parse_listen(text: str | None, default_port: str) -> tuple[str, int]:
    """`host:port`, `host`, `:port` or `[v6]:port`; the port defaults to doveadm_port;
    port 0 = any free port (the log line says which)."""
    host, port = text or "", ""
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":")
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
    port = port or (default_port if default_port != "0" else "")  # 0 = unset (Dovecot)
    if not port.isdigit() or int(port) >= 65536:
        raise UsageError(f"Invalid or missing listen port (-l host:port or doveadm_port): {text}")
    return host or DEFAULT_HOST, int(port)


def server_tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--ssl-cert and --ssl-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"Can't load the TLS certificate {cert} / key {key}: {exc}") from exc
    return context


def run_doveadm_server(ctx: Context, parsed: Parsed, operands: list[str]) -> int:
    """Listen and serve until killed (with `-1`: one connection, then exit 0)."""
    if operands:
        raise UsageError(f"Unexpected parameter: {operands[0]}")
    listener, where = _listen(ctx, parsed.value("listen") or "")
    settings = ServerSettings(
        username=ctx.config.get("doveadm_username") or DEFAULT_USERNAME,
        password=ctx.config.get("doveadm_password"),
        timeout=float(parse_uint(parsed.value("timeout"), "-T", 600)),
        tls=server_tls(parsed.value("ssl_cert"), parsed.value("ssl_key")),
        preauthenticated=listener.preauthenticated,
    )
    if not settings.password and not settings.preauthenticated:
        listener.close()
        raise UsageError("doveadm_password is not set: clients could not authenticate")
    log = ctx.log_for("doveadm-server")
    log(f"Info: listening on {where}")
    try:
        with _stop_on_sigterm():
            listener.serve(settings, _handler(ctx, log), log, once=parsed.flag("once"))
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()  # and a UNIX socket is removed, as Dovecot removes its own
    return ExitCode.OK


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM ends serving like ^C (in the main thread only: signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _listen(ctx: Context, text: str) -> tuple[Listener, str]:
    """`-l /path` = a 0600 UNIX socket, else `host:port` (parse_listen)."""
    try:
        if text.startswith("/"):
            return Listener.unix(text), text
        host, port = parse_listen(text or None, ctx.config.get("doveadm_port"))
        listener = Listener(host, port)
    except OSError as exc:
        raise DsyncError(f"listen({text}) failed: {exc.strerror or exc}") from exc
    return listener, f"{host}:{listener.port}"


def _handler(ctx: Context, server_log: Log) -> Callable[[DoveadmCommand, ServerStream], bool]:
    def handle(command: DoveadmCommand, stream: ServerStream) -> bool:
        if command.name in MAIL_COMMANDS:
            run_mail_command(ctx, command, stream)
            return False
        if command.name != DSYNC_COMMAND:
            stream.reply("")  # unknown or not served: `\n-\n` (§12.1)
            return False
        try:
            run_dsync_command(ctx, command, stream)
        except DsyncError as exc:  # before the session started: the reply says why
            server_log(f"Error: {command.user}: {exc}")
            stream.reply(REPLY_CODES.get(exc.exit_code, "TEMPFAIL"))
        return True

    return handle


def run_mail_command(ctx: Context, command: DoveadmCommand, stream: ServerStream) -> None:
    """`sync`/`backup <options> [--] <destination>` for the command's user, run as
    `pydsync sync`/`backup` would run it here; what it prints on stdout goes back as
    values, its log lines on channel L, its exit code as the reply."""
    out = io.BytesIO()
    err = _LogWriter(stream, debug="D" in command.flags)
    try:
        parsed, operands = getopt(
            command.name, list(command.args), MAIL_COMMANDS[command.name], permute=False
        )
        if parsed.value("socket_path") is not None:
            raise UsageError("-S can't be used on the doveadm server")
        name = parsed.value("user") or command.user
        if not name:
            raise UsageError("No user given")
        if not operands and not parsed.flag("mail_replica"):
            raise UsageError(f"{command.name}: destination missing")
        sub = replace(
            ctx,
            environ=_user_environ(ctx, name),
            stdout=out,
            stderr=err,
            debug="D" in command.flags,
            verbose=bool(set(command.flags) & {"D", "v"}),
            records={},
        )
        code = run_sync(sub, command.name, Parsed([*parsed.pairs, ("user", name)]), operands)
    except DsyncError as exc:
        err.write(f"Error: {exc}\n")
        code = int(exc.exit_code)
    err.flush()
    stream.write(encode_values(out.getvalue().decode("utf-8", "surrogateescape").splitlines()))
    stream.reply(_reply_code(code))


def _reply_code(code: int) -> str | None:
    """None (`+`) for 0, else doveadm's word for the exit code."""
    if code == ExitCode.OK:
        return None
    try:
        return REPLY_CODES.get(ExitCode(code), UNKNOWN_CODE)
    except ValueError:
        return UNKNOWN_CODE


def _user_environ(ctx: Context, name: str) -> dict[str, str]:
    """The command's environment: USER = the user; HOME from mail_home (else our HOME
    for our own USER), as for the `dsync-server` command."""
    environ = dict(ctx.environ)
    home = _home(ctx, name)
    environ["USER"] = name
    if home:
        environ["HOME"] = home
    else:
        environ.pop("HOME", None)
    return environ


def _home(ctx: Context, name: str) -> str | None:
    """Without a userdb the home comes from mail_home; our own HOME only for our USER."""
    home = ctx.environ.get("HOME") if name == ctx.environ.get("USER") else None
    if ctx.config.get("mail_home"):
        return expand_vars(ctx.config.get("mail_home"), UserEnv(name, home or None, ctx.environ))
    return home or None


class _LogWriter(io.StringIO):
    """A stderr whose lines go to the client on channel L with their level (debug lines
    only for flag D), `[name: ]Level: text` sent as `[name: ]text` (Dovecot sends the log
    prefix and the message; the level is the type byte)."""

    def __init__(self, stream: ServerStream, *, debug: bool) -> None:
        super().__init__()
        self._stream = stream
        self._debug = debug
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._send(line)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._send(self._partial)
            self._partial = ""

    def _send(self, line: str) -> None:
        match = _LOG_LINE.match(line)
        level = LOG_TYPES.get(match.group("level")) if match else None
        if match is None or level is None:
            self._stream.log(LOG_TYPES["Info"], line)
            return
        if level == LOG_TYPES["Debug"] and not self._debug:
            return
        name = match.group("name")
        self._stream.log(level, f"{name}: {match.group('text')}" if name else match.group("text"))


def run_dsync_command(ctx: Context, command: DoveadmCommand, stream: ServerStream) -> None:
    """`dsync-server [-u user] [-U] …` from a command line: reply `+`, run the slave."""
    parsed, operands = getopt(
        "dsync-server", list(command.args), DSYNC_SERVER_OPTIONS, permute=False
    )
    if operands not in ([], ["dsync-server"]) or parsed.flag("user_from_stdin"):
        raise UsageError("Unexpected dsync-server parameters")
    name = parsed.value("user") or command.user
    if not name:
        raise UsageError("No user given")
    user = UserEnv(name, _home(ctx, name), ctx.environ)
    ctx.location(user)  # an unusable location fails here, before `+`
    log = _remote_log(stream, f"dsync-server({name}): ", debug="D" in command.flags)
    stream.reply(None)
    slave_session(ctx, user, stream, log, replicator_notify=parsed.flag("replicator_notify"))


def _remote_log(stream: ServerStream, prefix: str, *, debug: bool) -> Log:
    """Our `Level: text` log lines as channel-L lines (debug ones only for flag D)."""

    def log(line: str) -> None:
        word, sep, text = line.partition(": ")
        level = LOG_TYPES.get(word) if sep else None
        if level is None:
            level, text = LOG_TYPES["Info"], line
        if level == LOG_TYPES["Debug"] and not debug:
            return
        stream.log(level, prefix + text)

    return log
