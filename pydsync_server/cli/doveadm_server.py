"""`pydsync doveadm-server`: a doveadm TCP server that runs only `dsync-server`, so
`doveadm sync tcp:host:port` (and pydsync's) can reach a pydsync store (§12).

Each connection authenticates with PLAIN against `doveadm_password` (user
`doveadm_username`, default `doveadm`), then its `dsync-server` command line runs our
slave brain exactly as `pydsync dsync-server` does; its log lines go back on channel L.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from ..errors import DsyncError, ExitCode, UsageError
from ..storage.location import UserEnv, expand_vars
from ..transport.doveadm_server import Listener, ServerSettings, ServerStream
from ..transport.doveadm_tcp import LOG_TYPES, DoveadmCommand
from .context import Context
from .doveadm_client import DEFAULT_USERNAME
from .dsync import Log, slave_session
from .options import DSYNC_SERVER_OPTIONS, Parsed, getopt
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
    host, port = parse_listen(parsed.value("listen"), ctx.config.get("doveadm_port"))
    settings = ServerSettings(
        username=ctx.config.get("doveadm_username") or DEFAULT_USERNAME,
        password=ctx.config.get("doveadm_password"),
        timeout=float(parse_uint(parsed.value("timeout"), "-T", 600)),
        tls=server_tls(parsed.value("ssl_cert"), parsed.value("ssl_key")),
    )
    if not settings.password:
        raise UsageError("doveadm_password is not set: clients could not authenticate")
    try:
        listener = Listener(host, port)
    except OSError as exc:
        raise DsyncError(f"listen({host}:{port}) failed: {exc.strerror or exc}") from exc
    log = ctx.log_for("doveadm-server")
    log(f"Info: listening on {host}:{listener.port}")
    try:
        listener.serve(settings, _handler(ctx, log), log, once=parsed.flag("once"))
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    return ExitCode.OK


def _handler(ctx: Context, server_log: Log) -> Callable[[DoveadmCommand, ServerStream], None]:
    def handle(command: DoveadmCommand, stream: ServerStream) -> None:
        try:
            run_dsync_command(ctx, command, stream)
        except DsyncError as exc:  # before the session started: the reply says why
            server_log(f"Error: {command.user}: {exc}")
            stream.reply(REPLY_CODES.get(exc.exit_code, "TEMPFAIL"))

    return handle


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
    # Without a userdb the home comes from mail_home; our own HOME only for our USER.
    home = ctx.environ.get("HOME") if name == ctx.environ.get("USER") else None
    user = UserEnv(name, home or None, ctx.environ)
    if ctx.config.get("mail_home"):
        user = UserEnv(name, expand_vars(ctx.config.get("mail_home"), user), ctx.environ)
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
