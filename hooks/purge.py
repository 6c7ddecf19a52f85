"""Purge the destination store with an external command (`purge_command`, e.g.
`doveadm purge -u %u`) instead of pydsync's own `Storage.purge()`. Without the
setting this plugin steps aside and the built-in purge runs."""

from __future__ import annotations

from collections.abc import Mapping

from pydsync_server.plugins import hookimpl
from pydsync_server.plugins.hookspecs import Log
from pydsync_server.storage.base import Storage
from pydsync_server.storage.location import UserEnv

from ._command import run_command


@hookimpl
def pydsync_purge(
    storage: Storage, user: UserEnv, settings: Mapping[str, str], log: Log
) -> bool | None:
    template = settings.get("purge_command", "")
    if not template:
        return None
    run_command("purge", template, user, log)  # failure is logged; the sync stands
    return True
