"""What every command gets from `main()`: settings, environment, output streams, and
the user's mail store.

Built once per run and passed down (no global state). The user comes from `-u` or
the `USER` environment variable, the home from `HOME` or `mail_home`, as doveadm
does without a userdb (dsync-protocol.md §2.2).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from ..errors import UsageError
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


@dataclass
class Context:
    config: Config
    environ: Mapping[str, str]
    stdout: BinaryIO
    stderr: TextIO
    formatter: str | None = None  # global -f
    debug: bool = False
    verbose: bool = False
    clock: Clock = time.time
    hostname: str = field(default_factory=socket.gethostname)
    drivers: Mapping[str, DriverFactory] | None = None  # None: the default registry
    keep_environment: bool = False  # -k

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

    def user_env(self, user_option: str | None) -> UserEnv:
        """The mail user: `-u`, else USER; neither is a usage error (exit 64)."""
        user = user_option if user_option is not None else self.environ.get("USER")
        if not user:
            raise UsageError("USER environment is missing and -u option not used")
        return UserEnv(user, self.environ.get("HOME") or None, self.environ)

    def location(self, user: UserEnv) -> MailLocation:
        return location_from_settings(self.config.as_mapping(), user)

    def location_with(self, user: UserEnv, overrides: Sequence[str]) -> MailLocation:
        """The user's store with `-p setting=value` overrides (Dovecot 2.4's -p)."""
        settings = dict(self.config.as_mapping())
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
    def storage_at(self, location: MailLocation, home: str | None) -> Iterator[Storage]:
        """Open a store; close it afterwards and, when root, give its files back to the
        mail user (see ownership.py)."""
        owner = mail_owner(self.config.as_mapping(), location, home)
        storage = self.open(location)
        try:
            yield storage
        finally:
            storage.close()
            if owner is not None:
                give_back(store_paths(location), owner)

    def user_storage(self, user: UserEnv) -> AbstractContextManager[Storage]:
        return self.storage_at(self.location(user), user.home)
