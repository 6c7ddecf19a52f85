"""What every command gets from `main()`: settings, environment, output streams, and
the user's mail store.

Built once per run and passed down (no global state). The user comes from `-u` or
the `USER` environment variable. When a userdb plugin is loaded it gives the home
and the user's own settings (mail location, uid/gid); without one, or with
`--no-userdb-lookup`, the home is `HOME` or `mail_home`, as doveadm does without a
userdb (dsync-protocol.md §2.2).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from ..errors import UnknownUserError, UsageError
from ..plugins.facade import Hooks
from ..plugins.manager import build_plugin_manager
from ..plugins.userdb import UserRecord
from ..storage.base import Storage
from ..storage.location import (
    DriverFactory,
    MailLocation,
    UserEnv,
    location_from_settings,
    open_storage,
)
from .config import Config, child_environment
from .ownership import give_back, mail_owner, store_paths

Clock = Callable[[], float]


def local_hostname() -> str:
    """What gethostname(2) returns: glibc reads the kernel's nodename with uname(2)
    (read through os here: importing socket for it costs ~2 ms of start-up)."""
    return os.uname().nodename


def builtin_hooks() -> Hooks:
    """Hooks with only pydsync's built-in plugins (for a Context built without main())."""
    return Hooks(build_plugin_manager({}, entry_points=False))


@dataclass(eq=False)  # one per run, never compared (a generated __eq__ costs start-up time)
class Context:
    """What main() builds once per run and passes to the command (no global state)."""

    config: Config
    environ: Mapping[str, str]
    stdout: BinaryIO
    stderr: TextIO
    formatter: str | None = None  # global -f
    debug: bool = False
    verbose: bool = False
    clock: Clock = time.time
    hostname: str = field(default_factory=local_hostname)
    drivers: Mapping[str, DriverFactory] | None = None  # None: the default registry
    keep_environment: bool = False  # -k
    hooks: Hooks = field(default_factory=builtin_hooks)
    # userdb answers of this run, by user name (filled by user_env()).
    records: dict[str, UserRecord] = field(default_factory=dict)

    def error(self, message: str) -> None:
        """One doveadm-style error line on stderr."""
        self.stderr.write(f"Error: {message}\n")
        self.stderr.flush()

    def log_for(self, name: str) -> Callable[[str], None]:
        """A log callback writing `name: line` to stderr, as Dovecot logs; `Debug:`
        lines only with -D, `Info:` lines only with -v or -D."""

        def log(line: str) -> None:
            if line.startswith("Debug:") and not self.debug:
                return
            if line.startswith("Info:") and not (self.verbose or self.debug):
                return
            self.stderr.write(f"{name}: {line}\n")
            self.stderr.flush()

        return log

    def user_env(self, user_option: str | None, *, lookup: bool = True) -> UserEnv:
        """The mail user: `-u`, else USER; neither is a usage error (exit 64).

        With a userdb plugin (and `lookup`), the userdb gives the home; a user it does
        not know exits 67. Without, the home is HOME."""
        user = user_option if user_option is not None else self.environ.get("USER")
        if not user:
            raise UsageError("USER environment is missing and -u option not used")
        if lookup and self.hooks.has_userdb:
            record = self.hooks.userdb_lookup(user, self.config.as_mapping())
            if record is None:
                raise UnknownUserError(f"User doesn't exist: {user}")
            self.records[user] = record
            return UserEnv(user, record.home, self.environ)
        return UserEnv(user, self.environ.get("HOME") or None, self.environ)

    def settings_for(self, user: UserEnv) -> Mapping[str, str]:
        """The settings with the user's userdb fields on top."""
        record = self.records.get(user.user)
        base = self.config.as_mapping()
        return base if record is None else record.settings(base)

    def location(self, user: UserEnv) -> MailLocation:
        return location_from_settings(self.settings_for(user), user)

    def location_with(self, user: UserEnv, overrides: Sequence[str]) -> MailLocation:
        """The user's store with `-p setting=value` overrides (Dovecot 2.4's -p)."""
        settings = dict(self.settings_for(user))
        for item in overrides:
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise UsageError(f"-p parameter not in setting=value format: {item}")
            settings[key.strip()] = value
        return location_from_settings(settings, user)

    def child_environ(self) -> dict[str, str]:
        """The environment of a command destination (whole with -k, else cleaned)."""
        return child_environment(self.environ, self.config.as_mapping(), keep=self.keep_environment)

    def open(self, location: MailLocation) -> Storage:
        storage = open_storage(
            location, clock=self.clock, hostname=self.hostname, drivers=self.drivers
        )
        inbox = self.config.inbox_namespace()
        if inbox is not None:  # -n checks this prefix (pydsync serves one namespace)
            storage.namespace_prefix = inbox.get("prefix", "")
        return storage

    @contextmanager
    def storage_at(
        self, location: MailLocation, home: str | None, settings: Mapping[str, str] | None = None
    ) -> Iterator[Storage]:
        """Open a store; close it afterwards and, when root, give its files back to the
        mail user (see ownership.py; `settings`: the user's, default the config's)."""
        owner = mail_owner(settings or self.config.as_mapping(), location, home)
        opened_ns = time.time_ns()
        storage = self.open(location)
        try:
            yield storage
        finally:
            storage.close()
            if owner is not None:
                give_back(store_paths(location), owner, opened_ns)

    def user_storage(self, user: UserEnv) -> AbstractContextManager[Storage]:
        return self.storage_at(self.location(user), user.home, self.settings_for(user))
