"""Command templates of each dsync implementation, for its two roles: master and server.

A template is a list of words. Whole-word placeholders expand to several words:
``{doveadm}`` (doveadm with the harness config and mail location; as the first word it also
gets 2.4's ``--no-userdb-lookup`` where needed), ``{command}`` (sync or backup),
``{options}`` and ``{destination}``. Inside any word, ``{python}``, ``{repo}``, ``{home}``,
``{user}`` and ``{location}`` are replaced. Every command runs as root with a clean
environment: PATH, USER and HOME of the mail user, PYTHONPATH = the repository.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .harness import REPO, SAFE_PATH, DovecotUser, location_options, with_userdb_option


@dataclass(frozen=True)
class Implementation:
    name: str
    master: tuple[str, ...]  # runs `sync`/`backup` against a command destination
    server: tuple[str, ...]  # the command destination: speaks dsync on stdin/stdout


_PYDSYNC = ("{python}", "-m", "pydsync_server", "-o", "mail_location={location}")
IMPLEMENTATIONS = {
    "doveadm": Implementation(
        "doveadm",
        master=("{doveadm}", "{command}", "{options}", "{destination}"),
        server=("{doveadm}", "dsync-server"),
    ),
    "pydsync": Implementation(
        "pydsync",
        master=(*_PYDSYNC, "{command}", "{options}", "{destination}"),
        server=(*_PYDSYNC, "dsync-server"),
    ),
}


def custom(name: str, master: Sequence[str], server: Sequence[str]) -> Implementation:
    """An implementation from template words (the runner's --master/--server-template)."""
    return Implementation(name, tuple(master), tuple(server))


def environment(user: DovecotUser) -> dict[str, str]:
    env = {"PATH": SAFE_PATH, "USER": user.name, "HOME": str(user.home), "PYTHONPATH": str(REPO)}
    return env | {"PYDSYNC_CONFIG": ""}  # pydsync must not read the host's dovecot.conf


def expand(
    template: Sequence[str],
    user: DovecotUser,
    *,
    command: str = "",
    options: Sequence[str] = (),
    destination: Sequence[str] = (),
) -> list[str]:
    """The argv a template gives for this user and run."""
    values = {
        "{python}": sys.executable,
        "{repo}": str(REPO),
        "{home}": str(user.home),
        "{user}": user.name,
        "{location}": user.location,
    }
    lists = {"{command}": [command], "{options}": list(options), "{destination}": list(destination)}
    words: list[str] = []
    for word in template[1:] if template[:1] == ("{doveadm}",) else template:
        if word in lists:
            words += lists[word]
            continue
        for key, value in values.items():
            word = word.replace(key, value)
        words.append(word)
    if template[:1] != ("{doveadm}",):
        return words
    env = user.env
    base = ["-c", str(env.config), *location_options(env.version, user.location)]
    return [env.doveadm, *with_userdb_option(env.version, base + words)]
