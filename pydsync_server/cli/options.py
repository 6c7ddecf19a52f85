"""Option tables and a doveadm-style getopt over them.

Every command declares its options once, as `Option` rows; the parser, the usage
lines and the man-page test (tests/test_manpages.py) all read the same tables.
Like doveadm (getopt with `+`), global options and the options of `sync`/`backup`/
`dsync-server` stop at the first non-option, so a destination command's own options
stay its own (dsync-protocol.md §2.1); inspection commands permute like GNU getopt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ..errors import UsageError


class Option(NamedTuple):
    """One option. `metavar` set = takes an argument; `dest` names it in `Parsed`.
    `optional`: a long option whose argument is optional, given only as `--name=ARG`
    (as GNU getopt's `::`); without one its value is None.

    Table rows are NamedTuples, not dataclasses: a tenth of the class-creation cost,
    which every run pays at start-up."""

    short: str | None
    long: str | None
    metavar: str | None
    dest: str
    help: str
    repeat: bool = False
    optional: bool = False

    @property
    def spellings(self) -> list[str]:
        return [s for s in (self.short and f"-{self.short}", self.long and f"--{self.long}") if s]


class CommandUsageError(UsageError):
    """A command line the command cannot parse; `usage` is its synopsis."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class Parsed:
    """Options found on a command line, in order."""

    def __init__(self, pairs: list[tuple[str, str | None]]) -> None:
        self.pairs = pairs

    def flag(self, dest: str) -> bool:
        return any(d == dest for d, _ in self.pairs)

    def value(self, dest: str) -> str | None:
        """The last value given for `dest` (None if absent)."""
        found = [v for d, v in self.pairs if d == dest]
        return found[-1] if found else None

    def values(self, dest: str) -> list[str]:
        return [v for d, v in self.pairs if d == dest and v is not None]


def getopt(
    prog: str,
    args: Sequence[str],
    options: Sequence[Option],
    *,
    permute: bool,
    usage: str = "",
) -> tuple[Parsed, list[str]]:
    """Parse `args` with glibc getopt rules; returns the options and the operands.

    `--` ends options. With `permute=False` the first operand ends them too. Errors
    carry glibc's wording ("invalid option -- 'Z'") prefixed by `prog`.
    """
    shorts = {o.short: o for o in options if o.short}
    longs = {o.long: o for o in options if o.long}
    pairs: list[tuple[str, str | None]] = []
    operands: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            operands += args[i:]
            break
        if arg.startswith("--"):
            i = _long(prog, arg, args, i, longs, pairs, usage)
        elif arg.startswith("-") and arg != "-":
            i = _shorts(prog, arg, args, i, shorts, pairs, usage)
        elif permute:
            operands.append(arg)
        else:
            operands += args[i - 1 :]
            break
    return Parsed(pairs), operands


def _long(
    prog: str,
    arg: str,
    args: Sequence[str],
    i: int,
    longs: dict[str, Option],
    pairs: list[tuple[str, str | None]],
    usage: str,
) -> int:
    name, eq, value = arg[2:].partition("=")
    opt = longs.get(name)
    if opt is None:
        raise CommandUsageError(f"{prog}: unrecognized option '--{name}'", usage)
    if opt.metavar is None:
        if eq:
            raise CommandUsageError(f"{prog}: option '--{name}' doesn't allow an argument", usage)
        pairs.append((opt.dest, None))
        return i
    if opt.optional:
        pairs.append((opt.dest, value if eq else None))
        return i
    if not eq:
        if i >= len(args):
            raise CommandUsageError(f"{prog}: option '--{name}' requires an argument", usage)
        value = args[i]
        i += 1
    pairs.append((opt.dest, value))
    return i


def _shorts(
    prog: str,
    arg: str,
    args: Sequence[str],
    i: int,
    shorts: dict[str, Option],
    pairs: list[tuple[str, str | None]],
    usage: str,
) -> int:
    pos = 1
    while pos < len(arg):
        char = arg[pos]
        opt = shorts.get(char)
        if opt is None:
            raise CommandUsageError(f"{prog}: invalid option -- '{char}'", usage)
        if opt.metavar is None:
            pairs.append((opt.dest, None))
            pos += 1
            continue
        if pos + 1 < len(arg):
            pairs.append((opt.dest, arg[pos + 1 :]))
        elif i < len(args):
            pairs.append((opt.dest, args[i]))
            i += 1
        else:
            raise CommandUsageError(f"{prog}: option requires an argument -- '{char}'", usage)
        break
    return i


def synopsis(options: Sequence[Option]) -> str:
    """`[-fR] [-s <state>] ...` in doveadm's usage style."""
    flags = "".join(o.short for o in options if o.short and o.metavar is None)
    parts = [f"[-{flags}]"] if flags else []
    for o in options:
        if o.optional:
            parts.append(f"[--{o.long}[=<{o.metavar}>]]")
        elif o.metavar is not None:
            spelling = f"-{o.short}" if o.short else f"--{o.long}"
            parts.append(f"[{spelling} <{o.metavar}>]" + ("..." if o.repeat else ""))
        elif o.short is None:
            parts.append(f"[--{o.long}]")
    return " ".join(parts)


# -- the tables -------------------------------------------------------------------------

GLOBAL_OPTIONS = (
    Option("c", None, "config", "config", "read settings from this dovecot.conf-style file"),
    Option("i", None, "instance", "instance", "read the config of this named Dovecot instance"),
    Option("k", None, None, "keep_env", "pass the whole environment to command destinations"),
    Option("o", None, "key=value", "override", "override one setting", repeat=True),
    Option("O", None, None, "no_config", "do not read any config file"),
    Option("D", None, None, "debug", "debug logging (implies -v)"),
    Option("v", None, None, "verbose", "verbose logging"),
    Option("f", None, "formatter", "formatter", "output format: flow, tab, pager or json"),
    Option(None, "version", None, "version", "print the version and exit"),
    Option("h", "help", None, "help", "print usage and exit"),
)

# Options of every mail command (doveadm's "mail-common" set that makes sense here).
USER_OPTIONS = (
    Option("u", None, "user", "user", "the user (default: the USER environment variable)"),
    Option(
        None,
        "no-userdb-lookup",
        None,
        "no_userdb_lookup",
        "do not ask the userdb plugins: the user and home come from USER and HOME",
    ),
)

# Options of sync/backup that run many users (doveadm's -A, -F and -u masks).
MULTI_USER_OPTIONS = (
    Option("A", None, None, "all_users", "run for every user the userdb plugins list"),
    Option("F", None, "file", "user_file", "run for the users in FILE, one per line"),
    Option(None, "workers", "n", "workers", "users synced at once (default: dsync_workers, 4)"),
    Option(
        "S",
        None,
        "socket_path",
        "socket_path",
        "run the command on the doveadm server at this UNIX socket path or host:port",
    ),
)

_SYNC_COMMON = (
    Option("R", None, None, "reverse", "reverse direction: the destination is the source"),
    Option("f", None, None, "full", "full sync, ignoring the state"),
    Option("P", None, None, "purge_remote", "purge the remote storage after a successful sync"),
    Option("U", None, None, "replicator_notify", "notify the replicator after a successful sync"),
    Option("N", None, None, "visible_namespaces", "sync all visible namespaces"),
    Option("d", None, None, "mail_replica", "destination from the userdb field mail_replica"),
    Option("E", None, None, "legacy", "legacy dsync wrapper mode"),
    Option("l", None, "secs", "lock_timeout", "take the per-user dsync lock with this timeout"),
    Option("r", None, "rawlog path", "rawlog", "append the dsync stream to PATH (rawlog format)"),
    Option("m", None, "mailbox", "mailbox", "sync only this mailbox (list pattern)"),
    Option("g", None, "mailbox guid", "mailbox_guid", "sync only the mailbox with this GUID"),
    Option("n", None, "namespace", "namespace", "sync only this namespace prefix", repeat=True),
    Option("x", None, "exclude", "exclude", "exclude mailboxes matching this mask", repeat=True),
    Option("a", None, "all mailbox", "virtual_all_box", "virtual all-mail mailbox"),
    Option("s", None, "state", "state", "stateful sync from this state; print the new one"),
    Option("T", None, "secs", "timeout", "I/O stall timeout in seconds (default 600)"),
    Option("t", None, "start date", "since", "only mail received since this date"),
    Option("e", None, "end date", "until", "only mail received before this date"),
    Option("O", None, "sync flag", "only_flag", "only mail with this flag (-flag: without)"),
    Option("I", None, "max size", "max_size", "skip mail larger than this (e.g. 10M)"),
    Option("v", None, None, "progress", "progress on stderr: per mailbox messages, bytes, ETA"),
    Option(
        None,
        "json",
        "file",
        "json",
        "write a JSON run report to FILE (default, or -: standard output)",
        optional=True,
    ),
    Option(None, "dry-run", None, "dry_run", "print the plan; change neither side"),
    Option(
        "p",
        None,
        "setting=value",
        "storage_setting",
        "override a setting of the source (local) storage",
        repeat=True,
    ),
)

BACKUP_OPTIONS = _SYNC_COMMON + USER_OPTIONS + MULTI_USER_OPTIONS
SYNC_OPTIONS = (
    Option("1", None, None, "oneway", "one-way merge: like backup, but never overwrite"),
) + BACKUP_OPTIONS

DSYNC_SERVER_OPTIONS = (
    Option("E", None, None, "legacy", "legacy dsync wrapper mode"),
    Option("r", None, "rawlog path", "rawlog", "append the dsync stream to PATH (rawlog format)"),
    Option("T", None, "secs", "timeout", "I/O stall timeout in seconds (default 600)"),
    Option("U", None, None, "replicator_notify", "notify the replicator after a successful sync"),
    Option(
        None,
        "user-from-stdin",
        None,
        "user_from_stdin",
        "read the user from a first stdin line (remoteprefix:), before the protocol",
    ),
) + USER_OPTIONS

DOVEADM_SERVER_OPTIONS = (
    Option("l", None, "host:port", "listen", "listen here (default 127.0.0.1:doveadm_port)"),
    Option(None, "ssl-cert", "file", "ssl_cert", "TLS certificate (PEM): serve tcps: clients"),
    Option(None, "ssl-key", "file", "ssl_key", "private key of --ssl-cert (PEM)"),
    Option("T", None, "secs", "timeout", "I/O stall timeout in seconds (default 600)"),
    Option("1", None, None, "once", "serve one connection, then exit"),
)

CONFIG_OPTIONS = (
    Option("a", None, None, "all", "show every setting, defaults included (the default)"),
    Option("n", None, None, "non_default", "show only settings that differ from the default"),
    Option("P", None, None, "show_secrets", "show passwords and keys"),
)

_FORMATTER = Option("f", None, "formatter", "formatter", "output format (as the global -f)")
MAILBOX_LIST_OPTIONS = (
    Option("s", None, None, "subscribed", "list subscribed mailboxes"),
    Option("7", None, None, "mutf7", "print names in modified UTF-7"),
    Option("8", None, None, "utf8", "print names in UTF-8 (the default)"),
    _FORMATTER,
) + USER_OPTIONS
MAILBOX_STATUS_OPTIONS = (
    Option("t", None, None, "total", "print the sum over all the mailboxes"),
    _FORMATTER,
) + USER_OPTIONS
FETCH_OPTIONS = (_FORMATTER,) + USER_OPTIONS
FORCE_RESYNC_OPTIONS = USER_OPTIONS + (
    Option("f", None, None, "fsck", "also check the index (always done: the index is rebuilt)"),
)
PURGE_OPTIONS = USER_OPTIONS
