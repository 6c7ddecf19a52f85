"""hooks.jsonlog: one JSON line before and after each user's session."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from hooks import jsonlog
from pydsync_server.brain.settings import SyncResult
from pydsync_server.cli.main import main
from pydsync_server.errors import ConfigError, ExitCode
from pydsync_server.storage.location import UserEnv


def read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_events_are_appended(tmp_path: Path) -> None:
    settings = {"jsonlog_path": str(tmp_path / "log")}
    user = UserEnv("ann", None)
    jsonlog.pydsync_before_sync(command="backup", user=user, settings=settings)
    result = SyncResult(exit_code=ExitCode.TEMPFAIL, errors=["boom"])
    jsonlog.pydsync_after_sync(
        command="backup", user=user, settings=settings, result=result, seconds=1.23456
    )
    first, second = read(tmp_path / "log")
    assert {k: first[k] for k in ("event", "command", "user")} == {
        "event": "before_sync",
        "command": "backup",
        "user": "ann",
    }
    assert second["exit_code"] == 75 and second["errors"] == ["boom"]
    assert second["seconds"] == 1.235 and isinstance(second["time"], float)


def test_missing_setting_or_bad_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jsonlog_path is not set"):
        jsonlog.pydsync_before_sync(command="sync", user=UserEnv("a", None), settings={})
    with pytest.raises(ConfigError, match="jsonlog_path"):
        jsonlog.pydsync_before_sync(
            command="sync", user=UserEnv("a", None), settings={"jsonlog_path": str(tmp_path)}
        )


def test_a_failed_backup_is_logged(tmp_path: Path) -> None:
    log = tmp_path / "log"
    args = ["-O", "-o", "plugins=hooks.jsonlog", "-o", f"jsonlog_path={log}"]
    env = {"USER": "ann", "HOME": str(tmp_path)}
    ok = [*args, "-o", f"mail_location=maildir:{tmp_path}/s", "backup", f"maildir:{tmp_path}/d"]
    assert main(ok, stdout=io.BytesIO(), stderr=io.StringIO(), environ=env) == 0
    bad = [*args, "-o", "mail_location=nodriver:/x", "backup", f"maildir:{tmp_path}/d"]
    assert main(bad, stdout=io.BytesIO(), stderr=io.StringIO(), environ=env) == 64
    events = read(log)
    assert [e["event"] for e in events] == ["before_sync", "after_sync"] * 2
    assert (events[1]["exit_code"], events[1]["errors"]) == (0, [])
    assert events[3]["exit_code"] == 64 and "nodriver" in str(events[3]["errors"])
