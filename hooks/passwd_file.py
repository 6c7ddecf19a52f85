"""A userdb over a Dovecot passwd-file: `user:password:uid:gid:gecos:home:shell:extra`.

The file is the `userdb_passwd_file` setting; it may hold `%u %n %d` (one file per
domain, say), then users cannot be listed. Home and extra fields may hold them too.
Extra fields are space separated `key=value`; those named `userdb_X` are userdb
field X (`userdb_mail=maildir:~/Maildir` is the mail location), others belong to the
passdb and are ignored, as Dovecot's userdb does.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from pydsync_server.errors import ConfigError, DsyncError
from pydsync_server.plugins import hookimpl
from pydsync_server.plugins.userdb import UserRecord, expand_user

SETTING = "userdb_passwd_file"
USERDB_PREFIX = "userdb_"


@dataclass(frozen=True)
class Entry:
    """One line of the file, templates not yet expanded."""

    user: str
    uid: str
    gid: str
    home: str
    extra: tuple[str, ...]


def parse_lines(lines: Iterable[str]) -> Iterator[Entry]:
    """Entries of a passwd-file; blank lines and `#` comments are skipped, missing
    trailing fields are empty."""
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rstrip("\n").split(":", 7)
        fields += [""] * (8 - len(fields))
        yield Entry(fields[0], fields[2], fields[3], fields[5], tuple(fields[7].split()))


def read_entries(path: str) -> list[Entry]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return list(parse_lines(f))
    except OSError as exc:
        # Dovecot fails the lookup as a temporary error (exit 75) when the file is unreadable.
        raise DsyncError(f"passwd-file {path}: {exc.strerror or exc}") from exc


def record_for(entry: Entry, user: str) -> UserRecord:
    """The entry as a UserRecord for `user`, templates expanded."""
    home = expand_user(entry.home, user) if entry.home else None
    fields: dict[str, str] = {}
    for item in entry.extra:
        key, _, value = item.partition("=")
        if key.startswith(USERDB_PREFIX) and len(key) > len(USERDB_PREFIX):
            fields[key[len(USERDB_PREFIX) :]] = expand_user(value, user, home)
    home = fields.pop("home", home)
    uid = _id(fields.pop("uid", entry.uid), "uid", user)
    gid = _id(fields.pop("gid", entry.gid), "gid", user)
    mail = fields.pop("mail", None)
    return UserRecord(user, home=home, mail=mail, uid=uid, gid=gid, extra=fields)


def _id(value: str, kind: str, user: str) -> int | None:
    """A numeric uid/gid, or a user/group name resolved as the system knows it."""
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid if kind == "uid" else grp.getgrnam(value).gr_gid
    except KeyError:
        raise ConfigError(f"passwd-file: user {user}: unknown {kind} {value}") from None


def _path(settings: Mapping[str, str]) -> str:
    path = settings.get(SETTING, "")
    if not path:
        raise ConfigError(f"hooks.passwd_file is loaded but {SETTING} is not set")
    return path


@hookimpl
def pydsync_userdb_lookup(user: str, settings: Mapping[str, str]) -> UserRecord | None:
    path = expand_user(_path(settings), user)
    for entry in read_entries(path):
        if entry.user == user:
            return record_for(entry, user)
    return None


@hookimpl
def pydsync_userdb_iterate(settings: Mapping[str, str]) -> Iterable[str]:
    path = _path(settings)
    if "%" in path:
        raise ConfigError(f"{SETTING}={path}: users of a templated path can't be listed")
    return [entry.user for entry in read_entries(path)]
