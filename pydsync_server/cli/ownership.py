"""Who owns the mail files pydsync writes when it runs as root.

Dovecot never writes mail as root: it switches to `mail_uid`/`mail_gid` (or the
userdb's uid/gid). pydsync keeps running as root, so that it can still read its own
code wherever Python lives, and hands every file it created back to the mail user
when the session ends: `mail_uid`/`mail_gid` when set, else the owner of the existing
store, else the owner of the home directory.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..storage.location import MailLocation


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


def store_paths(location: MailLocation) -> list[Path]:
    """The directories a store writes under: its root, and CONTROL/INDEX/ALT when apart."""
    paths = [Path(location.path)]
    for key in ("CONTROL", "INDEX", "ALT"):
        value = location.params.get(key)
        if value and value.upper() != "MEMORY":
            paths.append(Path(value))
    return paths


def mail_owner(
    settings: Mapping[str, str], location: MailLocation, home: str | None
) -> Owner | None:
    """The owner to give files back to, or None when there is nothing to do."""
    if os.geteuid() != 0:
        return None
    configured = _configured_owner(settings)
    if configured is not None:
        return configured
    for candidate in [*store_paths(location), *([Path(home)] if home else [])]:
        try:
            info = candidate.stat()
        except OSError:
            continue
        if info.st_uid != 0:
            return Owner(info.st_uid, info.st_gid)
    return None


def _configured_owner(settings: Mapping[str, str]) -> Owner | None:
    user, group = settings.get("mail_uid", ""), settings.get("mail_gid", "")
    if not user:
        return None
    try:
        entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        uid, gid = entry.pw_uid, entry.pw_gid
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise ConfigError(f"mail_uid/mail_gid: unknown user or group: {exc}") from exc
    return Owner(uid, gid)


def give_back(paths: Iterable[Path], owner: Owner) -> None:
    """chown what root created under the store to the mail user (links not followed)."""
    for top in paths:
        if not top.exists():
            continue
        for path in [top, *top.rglob("*")]:
            try:
                if path.lstat().st_uid == 0:
                    os.lchown(path, owner.uid, owner.gid)
            except FileNotFoundError:
                continue
