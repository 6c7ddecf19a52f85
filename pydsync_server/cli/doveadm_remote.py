"""`sync`/`backup -S socket_path`: the command runs on the doveadm server at that address
(an absolute UNIX socket path, or host[:port]) instead of here, as doveadm's `-S` does.

The command line is rebuilt from the parsed options as doveadm 2.3 sends it: `-u USER`,
the other options, `--`, the destination (dsync-protocol.md §12.1, captured from
`doveadm sync -S`). `-A`/`-F`/masks are expanded here; each user gets one connection.
The server's printed values (the `-s` state) go to stdout, one per line; its log lines
to stderr as `Level: remote(ADDRESS): text`; its reply code becomes the exit code.
A 0600 UNIX socket of Dovecot needs no password; TCP authenticates with PLAIN
(`doveadm_username`, `doveadm_password`).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from ..errors import ExitCode, UsageError
from ..transport.doveadm_command import CommandReply, open_unix, run_command
from ..transport.doveadm_tcp import LOG_LEVELS, ClientSettings, DoveadmCommand, open_connection
from .context import Context
from .doveadm_client import DEFAULT_USERNAME
from .options import Option, Parsed
from .sync_options import parse_uint
from .users import run_users, select_users, worker_count

EX_PROTOCOL = 76  # sysexits.h; doveadm's "PROTOCOL"
# doveadm's reply codes and the exit codes they stand for; anything else (UNKNOWN, a
# bare `-`, NOREPLICATE, REFERRAL) is a temporary failure.
REPLY_EXIT_CODES = {
    "TEMPFAIL": int(ExitCode.TEMPFAIL),
    "USAGE": int(ExitCode.USAGE),
    "NOUSER": int(ExitCode.NOUSER),
    "NOPERM": int(ExitCode.NOPERM),
    "PROTOCOL": EX_PROTOCOL,
    "DATAERR": int(ExitCode.DATAERR),
    "NOTFOUND": int(ExitCode.NOTFOUND),
}
# Options that choose users or workers here; the server gets `-u USER` for each user.
LOCAL_ONLY = frozenset({"socket_path", "user", "all_users", "user_file", "workers"})


def parse_address(text: str, default_port: str) -> tuple[str, int] | str:
    """An absolute path (UNIX socket), or (host, port) from `host[:port]`/`[v6]:port`."""
    if text.startswith("/"):
        return text
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    port = port or (default_port if default_port != "0" else "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"-S {text}: expected an absolute socket path or host:port")
    return host, int(port)


def remote_args(
    options: Sequence[Option], parsed: Parsed, user: str, operands: list[str]
) -> list[str]:
    """The command's arguments as sent to the server."""
    by_dest = {o.dest: o for o in options}
    args = ["-u", user]
    for dest, value in parsed.pairs:
        if dest in LOCAL_ONLY:
            continue
        opt = by_dest[dest]
        if opt.short is None and opt.metavar is not None:
            args.append(f"--{opt.long}" + ("" if value is None else f"={value}"))
        else:
            args.append(f"-{opt.short}" if opt.short else f"--{opt.long}")
            if opt.metavar is not None and value is not None:
                args.append(value)
    return [*args, "--", *operands]


def run_on_server(
    ctx: Context, command: str, options: Sequence[Option], parsed: Parsed, operands: list[str]
) -> int:
    """`command` for the selected users on the `-S` server; the worst exit code."""
    address = parse_address(parsed.value("socket_path") or "", ctx.config.get("doveadm_port"))
    timeout = float(parse_uint(parsed.value("timeout"), "-T", 600))

    def one(name: str) -> tuple[int, str]:
        args = remote_args(options, parsed, name, operands)
        reply = _run(ctx, address, DoveadmCommand(_flags(ctx), name, command, tuple(args)), timeout)
        for value in reply.values:
            ctx.stdout.write(value.encode("utf-8", "surrogateescape") + b"\n")
        ctx.stdout.flush()
        if reply.code is None:
            return int(ExitCode.OK), ""
        why = f"Remote exit_code={reply.code or 'unknown'}"
        return REPLY_EXIT_CODES.get(reply.code, int(ExitCode.TEMPFAIL)), why

    users = select_users(ctx, parsed)
    if users is None:
        name = parsed.value("user") or ctx.environ.get("USER", "")
        if not name:
            raise UsageError("USER environment is missing and -u option not used")
        code, why = one(name)
        if why:
            ctx.error(f"{command} on {_describe(address)} failed: {why}")
        return code
    return run_users(ctx, users, worker_count(ctx, parsed), one)


def _flags(ctx: Context) -> str:
    """`D` with -D, `v` with -v (the server's own logging level for the command)."""
    return "D" if ctx.debug else "v" if ctx.verbose else ""


def _describe(address: tuple[str, int] | str) -> str:
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"


def _run(
    ctx: Context, address: tuple[str, int] | str, command: DoveadmCommand, timeout: float
) -> CommandReply:
    settings = ClientSettings(
        username=ctx.config.get("doveadm_username") or DEFAULT_USERNAME,
        password=ctx.config.get("doveadm_password"),
        user=command.user,
        timeout=timeout,
    )
    log = ctx.log_for(f"dsync({command.user})")
    where = _describe(address)

    def remote_log(level: int, text: str) -> None:
        log(f"{LOG_LEVELS.get(level, 'Error')}: remote({where}): {text}")

    sock: socket.socket
    if isinstance(address, str):
        sock = open_unix(address, timeout)
    else:
        sock = open_connection(address[0], address[1], tls=None, timeout=timeout)
    return run_command(sock, settings, command, remote_log)
