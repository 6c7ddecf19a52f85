"""`pydsync [global options] <command> ...`: the doveadm-compatible command line.

`main(argv)` parses, runs one command and returns its exit code; it is the only
place that catches `DsyncError` (one "Error: ..." line, the error's exit code).
Anything else is a bug and propagates with its traceback; `entry_point()` is the
only function that exits.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO, NamedTuple, TextIO

from .. import __version__
from ..errors import DsyncError, ExitCode
from ..plugins.facade import Hooks
from ..plugins.manager import build_plugin_manager
from ..storage.location import UserEnv
from .config import config_path, load_config
from .context import Context
from .options import (
    BACKUP_OPTIONS,
    CONFIG_OPTIONS,
    DOVEADM_SERVER_OPTIONS,
    DSYNC_SERVER_OPTIONS,
    FETCH_OPTIONS,
    FORCE_RESYNC_OPTIONS,
    GLOBAL_OPTIONS,
    MAILBOX_LIST_OPTIONS,
    MAILBOX_STATUS_OPTIONS,
    PURGE_OPTIONS,
    SYNC_OPTIONS,
    CommandUsageError,
    Option,
    Parsed,
    getopt,
    synopsis,
)

PROG = "pydsync"
Handler = Callable[[Context, Parsed, list[str]], int]


class Command(NamedTuple):
    """One command: its words, option table, operand synopsis and handler.

    `permute=False`: options stop at the first operand (doveadm's `+` getopt), so a
    destination command keeps its own options. (A NamedTuple, not a dataclass: a tenth
    of the class-creation cost, which every run pays at start-up.)
    """

    name: str
    options: tuple[Option, ...]
    operands: str
    handler: Handler
    permute: bool

    @property
    def usage(self) -> str:
        return f"usage: {PROG} {self.name} {synopsis(self.options)} {self.operands}".rstrip()


def _lazy(module: str, name: str) -> Handler:
    """A handler imported when its command runs: start-up pays only for what runs
    (Python start-up is where pydsync loses time to doveadm)."""

    def handler(ctx: Context, parsed: Parsed, operands: list[str]) -> int:
        found: Handler = getattr(importlib.import_module(module, __package__), name)
        return found(ctx, parsed, operands)

    return handler


def _formatter(ctx: Context, parsed: Parsed, default: str) -> str:
    return parsed.value("formatter") or ctx.formatter or default


def _sync(ctx: Context, parsed: Parsed, operands: list[str]) -> int:
    return _sync_or_backup(ctx, "sync", parsed, operands)


def _backup(ctx: Context, parsed: Parsed, operands: list[str]) -> int:
    return _sync_or_backup(ctx, "backup", parsed, operands)


def _sync_or_backup(ctx: Context, name: str, parsed: Parsed, operands: list[str]) -> int:
    if not operands and not parsed.flag("mail_replica"):
        raise CommandUsageError(f"{name}: destination missing", COMMANDS[name].usage)
    from .dsync import run_sync

    return run_sync(ctx, name, parsed, operands)


def _user(ctx: Context, parsed: Parsed) -> UserEnv:
    return ctx.user_env(parsed.value("user"), lookup=not parsed.flag("no_userdb_lookup"))


def _mailbox_list(ctx: Context, parsed: Parsed, operands: list[str]) -> int:
    user = _user(ctx, parsed)
    with ctx.user_storage(user) as storage:
        from . import inspect

        return inspect.mailbox_list(
            ctx,
            storage,
            operands,
            subscribed=parsed.flag("subscribed"),
            mutf7=parsed.flag("mutf7"),
            formatter=_formatter(ctx, parsed, "flow"),
        )


def _mailbox_status(ctx: Context, parsed: Parsed, operands: list[str]) -> int:
    if len(operands) < 2:
        raise CommandUsageError(
            "mailbox status: fields and a mailbox are needed", COMMANDS["mailbox status"].usage
        )
    user = _user(ctx, parsed)
    with ctx.user_storage(user) as storage:
        from . import inspect

        return inspect.mailbox_status(
            ctx,
            storage,
            operands[0],
            operands[1:],
            total=parsed.flag("total"),
            formatter=_formatter(ctx, parsed, "flow"),
        )


def _fetch(ctx: Context, parsed: Parsed, operands: list[str]) -> int:
    if len(operands) < 2:
        raise CommandUsageError(
            "fetch: fields and a search query are needed", COMMANDS["fetch"].usage
        )
    user = _user(ctx, parsed)
    with ctx.user_storage(user) as storage:
        from .fetch import fetch

        return fetch(
            ctx,
            storage,
            user.user,
            operands[0],
            operands[1:],
            formatter=_formatter(ctx, parsed, "pager"),
        )


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("sync", SYNC_OPTIONS, "<destination>...", _sync, permute=False),
        Command("backup", BACKUP_OPTIONS, "<destination>...", _backup, permute=False),
        Command(
            "dsync-server",
            DSYNC_SERVER_OPTIONS,
            "[dsync-server]",
            _lazy(".dsync", "run_server"),
            permute=False,
        ),
        Command(
            "doveadm-server",
            DOVEADM_SERVER_OPTIONS,
            "",
            _lazy(".doveadm_server", "run_doveadm_server"),
            permute=False,
        ),
        Command(
            "mailbox list", MAILBOX_LIST_OPTIONS, "[<mailbox mask>...]", _mailbox_list, permute=True
        ),
        Command(
            "mailbox status",
            MAILBOX_STATUS_OPTIONS,
            "<fields> <mailbox mask>...",
            _mailbox_status,
            permute=True,
        ),
        Command("fetch", FETCH_OPTIONS, "<fields> <search query>", _fetch, permute=True),
        Command(
            "config",
            CONFIG_OPTIONS,
            "[<setting>...]",
            _lazy(".show_config", "show_config"),
            permute=True,
        ),
        Command(
            "force-resync",
            FORCE_RESYNC_OPTIONS,
            "<mailbox mask>",
            _lazy(".resync", "force_resync"),
            permute=True,
        ),
        Command("purge", PURGE_OPTIONS, "", _lazy(".resync", "purge"), permute=True),
    )
}


def usage_text() -> str:
    lines = [f"usage: {PROG} {synopsis(GLOBAL_OPTIONS)} <command> [<args>]"]
    lines += [f"  {c.name:<15} {synopsis(c.options)} {c.operands}" for c in COMMANDS.values()]
    return "\n".join(lines)


def find_command(words: Sequence[str]) -> tuple[Command | None, list[str]]:
    """The command named by the first one or two words, and the remaining arguments."""
    if len(words) >= 2 and f"{words[0]} {words[1]}" in COMMANDS:
        return COMMANDS[f"{words[0]} {words[1]}"], list(words[2:])
    if words and words[0] in COMMANDS:
        return COMMANDS[words[0]], list(words[1:])
    return None, list(words[1:])


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: BinaryIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run one pydsync command; returns the exit code (doveadm's numbering)."""
    args = list(sys.argv[1:] if argv is None else argv)
    err = stderr if stderr is not None else sys.stderr
    out = stdout if stdout is not None else sys.stdout.buffer
    env = dict(environ) if environ is not None else dict(os.environ)
    try:
        return _run(args, out, err, env)
    except CommandUsageError as exc:
        err.write(f"{exc}\n{exc.usage}\n")
        return ExitCode.USAGE
    except DsyncError as exc:
        err.write(f"Error: {exc}\n")
        return int(exc.exit_code)
    finally:
        out.flush()
        err.flush()


def _run(args: list[str], out: BinaryIO, err: TextIO, env: dict[str, str]) -> int:
    parsed, rest = getopt(PROG, args, GLOBAL_OPTIONS, permute=False, usage=usage_text())
    if parsed.flag("version"):
        from .. import _native  # which fast path is live: the C module or its pure twin

        out.write(f"{PROG} {__version__} (native: {_native.IMPLEMENTATION})\n".encode())
        return ExitCode.OK
    if parsed.flag("help"):
        out.write((usage_text() + "\n").encode())
        return ExitCode.OK
    command, cmd_args = find_command(rest)
    if command is None:
        what = f"Unknown command '{rest[0]}'" if rest else "No command given"
        raise CommandUsageError(f"{PROG}: {what}", usage_text())
    path = config_path(
        parsed.value("config"),
        no_config=parsed.flag("no_config"),
        instance=parsed.value("instance"),
        environ=env,
    )
    config = load_config(path, parsed.values("override"), warn=lambda line: err.write(line + "\n"))
    hooks = Hooks(build_plugin_manager(config.as_mapping()))
    ctx = Context(
        config=config,
        hooks=hooks,
        drivers=hooks.storage_drivers(),
        environ=env,
        stdout=out,
        stderr=err,
        formatter=parsed.value("formatter"),
        debug=parsed.flag("debug"),
        keep_environment=parsed.flag("keep_env"),
        verbose=parsed.flag("verbose") or parsed.flag("debug"),
    )
    prog = command.name.split()[-1]
    cmd_parsed, operands = getopt(
        prog, cmd_args, command.options, permute=command.permute, usage=command.usage
    )
    return command.handler(ctx, cmd_parsed, operands)


def entry_point() -> None:
    """Console script: exit with main()'s code; a bug's traceback exits 1."""
    sys.exit(main())
