"""Who owns the mail files pydsync writes when it runs as root.

Dovecot never writes mail as root: it switches to `mail_uid`/`mail_gid` (or the
userdb's uid/gid). pydsync keeps running as root, so that it can still read its own
code wherever Python lives, and hands every file it created back to the mail user
when the session ends: `mail_uid`/`mail_gid` when set, else the owner of the existing
store, else the owner of the home directory.
"""

from __future__ import annotations

import errno
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


def give_back(paths: Iterable[Path], owner: Owner, since_ns: int = 0) -> None:
    """chown what root created under the store to the mail user (links not followed).

    Creating or renaming an entry into a directory updates the directory's mtime, so
    the entries of a directory untouched since `since_ns` (the session's start, less a
    second for coarse timestamps) are not looked at, and one that also has no
    subdirectories (a link count of 2) is not even listed: a no-change run over a big
    store then stats directories, not every message file.
    """
    for top in paths:
        if not top.exists():
            continue
        _give_back_entry(str(top), owner)
        _give_back_tree(str(top), owner, since_ns)


def _give_back_tree(directory: str, owner: Owner, since_ns: int) -> None:
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return
    untouched = bool(since_ns) and st.st_mtime_ns < since_ns - 1_000_000_000
    if untouched and st.st_nlink == 2:
        return  # nothing new in it, and no subdirectory that could hold something new
    try:
        with os.scandir(directory) as listing:
            entries = list(listing)
    except (FileNotFoundError, NotADirectoryError):
        return
    subdirs = [entry for entry in entries if entry.is_dir(follow_symlinks=False)]
    names = [entry.name for entry in (subdirs if untouched else entries)]
    _give_back_in(directory, names, owner)
    for entry in subdirs:
        _give_back_tree(entry.path, owner, since_ns)


def _give_back_in(directory: str, names: list[str], owner: Owner) -> None:
    """_give_back_entry for names in one directory, looked up relative to it (a
    big maildir's cur/ costs a lookup per name, not a path walk per file); a directory
    swapped for a symlink meanwhile is not followed."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return  # gone, or no longer the directory walked
        raise
    try:
        for name in names:
            try:
                if os.stat(name, dir_fd=fd, follow_symlinks=False).st_uid == 0:
                    os.chown(name, owner.uid, owner.gid, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)


def _give_back_entry(path: str, owner: Owner) -> None:
    try:
        if os.lstat(path).st_uid == 0:
            os.lchown(path, owner.uid, owner.gid)
    except FileNotFoundError:
        pass
