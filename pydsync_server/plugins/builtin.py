"""pydsync's own behaviour as an ordinary plugin: the storage drivers of
storage/location.py and purging through `Storage.purge()`."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import DsyncError
from ..storage.base import Storage
from ..storage.location import DriverFactory, UserEnv, default_drivers
from . import hookimpl
from .hookspecs import Log


@hookimpl
def pydsync_storage_drivers() -> Mapping[str, DriverFactory]:
    return default_drivers()


@hookimpl(trylast=True)
def pydsync_purge(
    storage: Storage, user: UserEnv, settings: Mapping[str, str], log: Log
) -> bool | None:
    # Dovecot logs a failed purge and still reports the sync's own result (§8.4).
    try:
        storage.purge()
    except DsyncError as exc:
        log(f"Error: Purging namespace failed: {exc}")
    return True
