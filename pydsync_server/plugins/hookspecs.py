"""The hooks pydsync calls, in one place; plugins implement them with `@hookimpl`.

Every hook names the stage of a `sync`/`backup`/`dsync-server` run it belongs to.
`settings` is always the settings of the user the call is about (config file, `-o`,
then the userdb's fields). Hooks that log get a `log` callback taking one
Dovecot-style line (`"Error: ..."`, `"Info: ..."`); plugins never print.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from ..brain.settings import SyncResult
from ..storage.base import Storage
from ..storage.location import DriverFactory, UserEnv
from . import hookspec
from .userdb import UserRecord

Log = Callable[[str], None]


@hookspec(firstresult=True)
def pydsync_userdb_lookup(user: str, settings: Mapping[str, str]) -> UserRecord | None:
    """Look a user up in a userdb.

    firstresult: the first plugin that returns a record wins; return None for a user
    you do not know, so the next userdb is asked. When userdb plugins are loaded and
    none knows the user, the command fails with exit code 67 (EX_NOUSER).

    :param user: the user name as given (`-u`, `-A`, `-F`, USER).
    :param settings: the settings of the run (config file and `-o`).
    :return: the user's record, or None.
    """


@hookspec
def pydsync_userdb_iterate(settings: Mapping[str, str]) -> Iterable[str]:
    """List the users a userdb knows, for `-A` and `-u` masks.

    Not firstresult: the lists of every userdb are joined (first occurrence kept).

    :param settings: the settings of the run (config file and `-o`).
    :return: user names.
    """
    return []


@hookspec
def pydsync_storage_drivers() -> Mapping[str, DriverFactory]:
    """Register mail storage drivers by name (the `maildir` of `maildir:~/Maildir`).

    Not firstresult: all mappings are merged; a plugin registered later overrides a
    driver of the same name registered earlier (the built-ins come first).

    :return: driver name -> factory `(location, clock, hostname) -> Storage`.
    """
    return {}


@hookspec(firstresult=True)
def pydsync_purge(
    storage: Storage, user: UserEnv, settings: Mapping[str, str], log: Log
) -> bool | None:
    """Purge a destination store after a successful sync with `-P`.

    Called on the side that owns the destination store: the local destination, or
    `dsync-server` when its master asked for a purge. firstresult: return True when
    you purged; the built-in (`storage.purge()`) runs last. Failures should be logged,
    not raised: as in Dovecot, a failed purge does not fail the sync.

    :param storage: the open destination store.
    :param user: the mail user (name, home).
    :param settings: the user's settings.
    :param log: where to write log lines.
    :return: True when handled, else None.
    """


@hookspec
def pydsync_kick(user: UserEnv, settings: Mapping[str, str], log: Log) -> None:
    """After a successful sync, tell running sessions of the user (e.g. IMAP) to
    reconnect so that they see the synced store.

    Not firstresult: every implementation runs. Failures should be logged only.

    :param user: the mail user (name, home).
    :param settings: the user's settings.
    :param log: where to write log lines.
    """


@hookspec
def pydsync_before_sync(command: str, user: UserEnv, settings: Mapping[str, str]) -> None:
    """Before one user's `sync`, `backup` or `dsync-server` session starts.

    Not firstresult: every implementation runs. Raising a `DsyncError` fails this
    user's sync with its exit code (other users of a multi-user run go on).

    :param command: `sync`, `backup` or `dsync-server`.
    :param user: the mail user (name, home).
    :param settings: the user's settings.
    """


@hookspec
def pydsync_after_sync(
    command: str,
    user: UserEnv,
    settings: Mapping[str, str],
    result: SyncResult,
    seconds: float,
) -> None:
    """After one user's session ended, successfully or not.

    Not firstresult: every implementation runs. Also called when the session failed
    before it began (then `result.errors` holds that error).

    :param command: `sync`, `backup` or `dsync-server`.
    :param user: the mail user (name, home).
    :param settings: the user's settings.
    :param result: the session's outcome (exit code, errors, state).
    :param seconds: how long the session took.
    """
