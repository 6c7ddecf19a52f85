"""After a successful sync, kick the user's running sessions: `doveadm kick %u`, or
the command in the `kick_command` setting. A failing kick is only logged."""

from __future__ import annotations

from collections.abc import Mapping

from pydsync_server.plugins import hookimpl
from pydsync_server.plugins.hookspecs import Log
from pydsync_server.storage.location import UserEnv

from ._command import run_command

DEFAULT_COMMAND = "doveadm kick %u"


@hookimpl
def pydsync_kick(user: UserEnv, settings: Mapping[str, str], log: Log) -> None:
    template = settings.get("kick_command") or DEFAULT_COMMAND
    if run_command("kick", template, user, log):
        log(f"Info: kicked {user.user}")
