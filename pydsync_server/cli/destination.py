"""What a `sync`/`backup` destination means (dsync-protocol.md §2.1).

In order: two or more words = a command; one word starting `[A-Za-z0-9]+:` = a
scheme (`remote:`, `remoteprefix:`, `tcp:`, `tcps:`) or a local mail location; one
word with a space or a `/` = a command split on spaces; anything else is
`[user@]host`, run through the `dsync_remote_cmd` template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from ..errors import UsageError
from ..storage.location import MailLocation, UserEnv, parse_location, with_driver_settings

# dsync-algorithm.md §0.2 (Dovecot 2.3 default).
DEFAULT_REMOTE_CMD = "ssh -l%{login} %{host} doveadm dsync-server -u%u -U"
LEGACY_SERVER_WORD = "server"  # appended instead of dsync-server with -E (§2.1)
_SCHEME = re.compile(r"[A-Za-z0-9]+:")
_VAR = re.compile(r"%(?:\{([^}]*)\}|(.))")


# NamedTuples, not dataclasses: a tenth of the class-creation cost, which every run
# pays at start-up. Told apart by isinstance(), never compared with each other.


class LocalDestination(NamedTuple):
    location: MailLocation


class CommandDestination(NamedTuple):
    argv: list[str]
    prefix_user: str | None = None  # remoteprefix: sends "<user>\n" first


class TcpDestination(NamedTuple):
    host: str
    port: int | None
    ssl: bool


Destination = LocalDestination | CommandDestination | TcpDestination


def classify(
    args: Sequence[str],
    *,
    user: UserEnv,
    user_given: bool,
    settings: Mapping[str, str],
    legacy: bool = False,
) -> Destination:
    """The destination for `args` (the operands after the command's options).

    `user_given`: `-u` was used (then `%u` of a bare `host` destination is that user).
    """
    if not args:
        raise UsageError("Destination missing")
    if len(args) >= 2:
        return CommandDestination(_command_argv(args, legacy))
    dest = args[0]
    if _SCHEME.match(dest):
        return _scheme(dest, user, settings)
    if " " in dest or "/" in dest:
        return CommandDestination(_command_argv(args, legacy))
    login_user, at, host = dest.rpartition("@")
    remote_user = login_user if at else (user.user if user_given else "")
    argv = remote_cmd(settings, host=host, login="", user=remote_user)
    return CommandDestination(argv)


def _command_argv(args: Sequence[str], legacy: bool) -> list[str]:
    # transport/ only for a command destination: a local sync never imports it
    from ..transport.process import SERVER_WORD, build_remote_argv

    if not legacy:
        return build_remote_argv(args)
    argv = [w for w in args[0].split(" ") if w] if len(args) == 1 else list(args)
    if not argv:
        raise UsageError("Empty remote command")
    if argv[-1] not in (SERVER_WORD, LEGACY_SERVER_WORD):
        argv.append(LEGACY_SERVER_WORD)
    return argv


def _scheme(dest: str, user: UserEnv, settings: Mapping[str, str]) -> Destination:
    scheme, _, rest = dest.partition(":")
    scheme = scheme.lower()
    if scheme in ("remote", "remoteprefix"):
        login, _, host = rest.rpartition("@")
        if not host:
            raise UsageError(f"Invalid destination: {dest}")
        argv = remote_cmd(settings, host=host, login=login, user=user.user)
        return CommandDestination(argv, user.user if scheme == "remoteprefix" else None)
    if scheme in ("tcp", "tcps"):
        host, colon, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
        if colon and not port.isdigit():
            raise UsageError(f"Invalid port in destination: {dest}")
        return TcpDestination(host or rest, int(port) if colon else None, scheme == "tcps")
    return LocalDestination(with_driver_settings(parse_location(dest, user), settings))


def remote_cmd(settings: Mapping[str, str], *, host: str, login: str, user: str) -> list[str]:
    """`dsync_remote_cmd` split on spaces and expanded; a word whose variables all
    expanded to nothing while it has other text is dropped (`-l%{login}`, §2.1)."""
    template = settings.get("dsync_remote_cmd") or DEFAULT_REMOTE_CMD
    values = {"host": host, "login": login, "u": user, "user": user, "%": "%"}
    argv = []
    for word in template.split(" "):
        if not word:
            continue
        expanded, found = _expand_word(word, values)
        if found and not any(found) and _VAR.sub("", word):
            continue
        argv.append(expanded)
    return argv


def _expand_word(word: str, values: Mapping[str, str]) -> tuple[str, list[str]]:
    """The word expanded, and the value of each variable it had."""
    found: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if name not in values:
            raise UsageError(f"dsync_remote_cmd: unknown variable %{name}")
        found.append(values[name])
        return values[name]

    return _VAR.sub(replace, word), found
