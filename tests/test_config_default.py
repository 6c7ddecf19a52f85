"""Which config file pydsync reads when given none: $PYDSYNC_CONFIG, else pydsync's own
path, else Dovecot's /etc/dovecot/dovecot.conf (as doveadm does)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pydsync_server.cli.config import CONFIG_ENV, DOVECOT_CONFIG, config_path
from pydsync_server.cli.main import main

REPO = Path(__file__).resolve().parent.parent
OWN_CONFIG = "/etc/pydsync/pydsync.conf"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_environment_variable_names_the_file_or_none(tmp_path: Path) -> None:
    conf = write(tmp_path / "x.conf", "")
    candidates = [conf]
    assert config_path(None, no_config=False, instance=None, environ={}, candidates=candidates)
    env_none = {CONFIG_ENV: ""}
    assert (
        config_path(None, no_config=False, instance=None, environ=env_none, candidates=candidates)
        is None
    )
    other = write(tmp_path / "other.conf", "")
    env_other = {CONFIG_ENV: other}
    assert (
        config_path(None, no_config=False, instance=None, environ=env_other, candidates=candidates)
        == other
    )
    # -c and -O still win over the variable.
    assert config_path(conf, no_config=False, instance=None, environ=env_other) == conf
    assert config_path(conf, no_config=True, instance=None, environ=env_other) is None


def test_first_readable_candidate_wins(tmp_path: Path) -> None:
    own, dovecot = tmp_path / "pydsync.conf", write(tmp_path / "dovecot.conf", "")
    candidates = [str(own), dovecot]
    found = config_path(None, no_config=False, instance=None, environ={}, candidates=candidates)
    assert found == dovecot
    write(own, "")
    found = config_path(None, no_config=False, instance=None, environ={}, candidates=candidates)
    assert found == str(own)


def test_variable_reaches_main(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.conf", "mail_location = maildir:/somewhere\n")
    out, err = io.BytesIO(), io.StringIO()
    code = main(["config", "mail_location"], stdout=out, stderr=err, environ={CONFIG_ENV: conf})
    assert (code, out.getvalue()) == (0, b"mail_location = maildir:/somewhere\n"), err.getvalue()


def _show_config(*options: str) -> subprocess.CompletedProcess[str]:
    """`pydsync [options] config -n` in a child without PYDSYNC_CONFIG."""
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "pydsync_server", *options, "config", "-n"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(
    os.path.exists(OWN_CONFIG) or not os.access(DOVECOT_CONFIG, os.R_OK),
    reason=f"needs a readable {DOVECOT_CONFIG} and no {OWN_CONFIG}",
)
def test_dovecot_conf_is_the_default_without_an_own_file() -> None:
    default, named, none = _show_config(), _show_config("-c", DOVECOT_CONFIG), _show_config("-O")
    assert default.returncode == named.returncode == none.returncode == 0, default.stderr
    assert default.stdout == named.stdout
    assert default.stdout != none.stdout
