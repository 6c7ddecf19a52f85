"""A static userdb: every user gets the same templated home and mail location
(`userdb_static_home`, `userdb_static_mail`, optional `userdb_static_uid`/`_gid`).

Users are listed from `userdb_static_users` (spaces or commas); when that is set,
only those users exist, else any name is accepted (as Dovecot's static userdb).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydsync_server.errors import ConfigError
from pydsync_server.plugins import hookimpl
from pydsync_server.plugins.userdb import UserRecord, expand_user, split_list


def _number(settings: Mapping[str, str], key: str) -> int | None:
    value = settings.get(key, "")
    if not value:
        return None
    if not value.isdigit():
        raise ConfigError(f"{key}: not a number: {value}")
    return int(value)


@hookimpl
def pydsync_userdb_lookup(user: str, settings: Mapping[str, str]) -> UserRecord | None:
    listed = split_list(settings.get("userdb_static_users", ""))
    if listed and user not in listed:
        return None
    home_template = settings.get("userdb_static_home", "")
    home = expand_user(home_template, user) if home_template else None
    mail_template = settings.get("userdb_static_mail", "")
    # `~` stays for the location parser, which expands it with this home.
    mail = expand_user(mail_template, user, home) if mail_template else None
    uid = _number(settings, "userdb_static_uid")
    gid = _number(settings, "userdb_static_gid")
    return UserRecord(user, home=home, mail=mail, uid=uid, gid=gid)


@hookimpl
def pydsync_userdb_iterate(settings: Mapping[str, str]) -> Iterable[str]:
    return split_list(settings.get("userdb_static_users", ""))
