"""`Hooks`: typed calls over `pm.hook`, so the rest of pydsync stays mypy-strict and
never touches pluggy. One method per hook in hookspecs.py, same names without the
`pydsync_` prefix."""

from __future__ import annotations

from collections.abc import Mapping

import pluggy

from ..brain.settings import SyncResult
from ..storage.base import Storage
from ..storage.location import DriverFactory, UserEnv
from .hookspecs import Log
from .userdb import UserRecord


class Hooks:
    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    @property
    def has_userdb(self) -> bool:
        """Whether any plugin answers user lookups (then unknown users are errors)."""
        return bool(self.pm.hook.pydsync_userdb_lookup.get_hookimpls())

    @property
    def can_iterate_users(self) -> bool:
        return bool(self.pm.hook.pydsync_userdb_iterate.get_hookimpls())

    def userdb_lookup(self, user: str, settings: Mapping[str, str]) -> UserRecord | None:
        record = self.pm.hook.pydsync_userdb_lookup(user=user, settings=settings)
        if record is not None and not isinstance(record, UserRecord):
            raise TypeError(f"pydsync_userdb_lookup returned {record!r}")
        return record

    def userdb_iterate(self, settings: Mapping[str, str]) -> list[str]:
        """Every userdb's users, in plugin order, each name once."""
        results = self.pm.hook.pydsync_userdb_iterate(settings=settings)
        seen: dict[str, None] = {}
        for users in reversed(results):  # pluggy calls the last registered first
            seen.update((str(user), None) for user in users)
        return list(seen)

    def storage_drivers(self) -> dict[str, DriverFactory]:
        drivers: dict[str, DriverFactory] = {}
        for mapping in reversed(self.pm.hook.pydsync_storage_drivers()):
            drivers.update(mapping)
        return drivers

    def purge(self, storage: Storage, user: UserEnv, settings: Mapping[str, str], log: Log) -> None:
        self.pm.hook.pydsync_purge(storage=storage, user=user, settings=settings, log=log)

    def kick(self, user: UserEnv, settings: Mapping[str, str], log: Log) -> None:
        self.pm.hook.pydsync_kick(user=user, settings=settings, log=log)

    def before_sync(self, command: str, user: UserEnv, settings: Mapping[str, str]) -> None:
        self.pm.hook.pydsync_before_sync(command=command, user=user, settings=settings)

    def after_sync(
        self,
        command: str,
        user: UserEnv,
        settings: Mapping[str, str],
        result: SyncResult,
        seconds: float,
    ) -> None:
        self.pm.hook.pydsync_after_sync(
            command=command, user=user, settings=settings, result=result, seconds=seconds
        )
