"""A JSON-lines event log: one line before and one after each user's sync (user,
command, exit code, errors, duration) appended to the `jsonlog_path` file.

Each line goes out in one `write()` on an O_APPEND descriptor, so lines of parallel
workers (and processes) never interleave within a line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

from pydsync_server.brain.settings import SyncResult
from pydsync_server.errors import ConfigError
from pydsync_server.plugins import hookimpl
from pydsync_server.storage.location import UserEnv

SETTING = "jsonlog_path"


def append_event(settings: Mapping[str, str], event: dict[str, object]) -> None:
    path = settings.get(SETTING, "")
    if not path:
        raise ConfigError(f"hooks.jsonlog is loaded but {SETTING} is not set")
    line = json.dumps({"time": round(time.time(), 3), **event}, sort_keys=True) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"{SETTING}={path}: {exc.strerror or exc}") from exc
    try:
        os.write(fd, line.encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)


@hookimpl
def pydsync_before_sync(command: str, user: UserEnv, settings: Mapping[str, str]) -> None:
    append_event(settings, {"event": "before_sync", "command": command, "user": user.user})


@hookimpl
def pydsync_after_sync(
    command: str, user: UserEnv, settings: Mapping[str, str], result: SyncResult, seconds: float
) -> None:
    event: dict[str, object] = {
        "event": "after_sync",
        "command": command,
        "user": user.user,
        "exit_code": int(result.exit_code),
        "errors": list(result.errors),
        "seconds": round(seconds, 3),
    }
    append_event(settings, event)
