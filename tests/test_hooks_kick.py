"""hooks.kick: the kick command after a successful sync; failures only logged."""

from __future__ import annotations

import io
from pathlib import Path

from hooks import kick
from pydsync_server.cli.main import main
from pydsync_server.storage.location import UserEnv


def test_command_template_expands_per_word(tmp_path: Path) -> None:
    lines: list[str] = []
    settings = {"kick_command": f"touch '{tmp_path}/kicked %u'"}
    kick.pydsync_kick(user=UserEnv("ann b", None), settings=settings, log=lines.append)
    assert (tmp_path / "kicked ann b").exists() and lines == ["Info: kicked ann b"]


def test_failure_is_logged() -> None:
    lines: list[str] = []
    kick.pydsync_kick(user=UserEnv("a", None), settings={"kick_command": "false"}, log=lines.append)
    assert lines == ["Error: kick: false exited 1"]
    lines.clear()
    kick.pydsync_kick(
        user=UserEnv("a", None), settings={"kick_command": "/no/such/cmd"}, log=lines.append
    )
    assert lines[0].startswith("Error: kick: /no/such/cmd failed:")


def test_default_is_doveadm_kick() -> None:
    assert kick.DEFAULT_COMMAND == "doveadm kick %u"


def test_backup_kicks_after_success_and_survives_a_failed_kick(tmp_path: Path) -> None:
    err = io.StringIO()
    args = ["-O", "-o", "plugins=hooks.kick", "-o", f"kick_command=touch {tmp_path}/k-%u"]
    args += ["-o", f"mail_location=maildir:{tmp_path}/src", "backup", f"maildir:{tmp_path}/d"]
    env = {"USER": "ann", "HOME": str(tmp_path)}
    assert main(args, stdout=io.BytesIO(), stderr=err, environ=env) == 0
    assert (tmp_path / "k-ann").exists()
    args[4] = "kick_command=false"
    assert main(args, stdout=io.BytesIO(), stderr=err, environ=env) == 0
    assert "backup(ann): Error: kick: false exited 1" in err.getvalue()
