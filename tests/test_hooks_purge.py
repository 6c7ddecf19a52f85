"""hooks.purge: purge_command instead of the built-in purge."""

from __future__ import annotations

import io
from pathlib import Path

from hooks import purge
from pydsync_server.cli.main import main
from pydsync_server.storage.location import UserEnv
from pydsync_server.storage.memory import MemoryStorage


def test_without_setting_steps_aside() -> None:
    result = purge.pydsync_purge(
        storage=MemoryStorage(), user=UserEnv("a", None), settings={}, log=print
    )
    assert result is None


def test_command_runs_and_failure_is_logged(tmp_path: Path) -> None:
    lines: list[str] = []
    user = UserEnv("ann", str(tmp_path))
    settings = {"purge_command": "touch %h/purged-%u"}
    assert purge.pydsync_purge(
        storage=MemoryStorage(), user=user, settings=settings, log=lines.append
    )
    assert (tmp_path / "purged-ann").exists() and lines == []
    settings = {"purge_command": "false"}
    assert purge.pydsync_purge(
        storage=MemoryStorage(), user=user, settings=settings, log=lines.append
    )
    assert lines == ["Error: purge: false exited 1"]


def test_backup_p_runs_the_purge_command(tmp_path: Path) -> None:
    args = ["-O", "-o", "plugins=hooks.purge", "-o", f"purge_command=touch {tmp_path}/p-%u"]
    args += ["-o", f"mail_location=maildir:{tmp_path}/src", "backup"]
    env = {"USER": "ann", "HOME": str(tmp_path)}
    err = io.StringIO()
    assert main([*args, f"maildir:{tmp_path}/d"], stdout=io.BytesIO(), stderr=err, environ=env) == 0
    assert not (tmp_path / "p-ann").exists()  # no -P, no purge
    assert (
        main([*args, "-P", f"maildir:{tmp_path}/d"], stdout=io.BytesIO(), stderr=err, environ=env)
        == 0
    )
    assert (tmp_path / "p-ann").exists() and err.getvalue() == ""
