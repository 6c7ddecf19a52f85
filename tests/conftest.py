"""Shared pytest setup: the `dovecot` marker and a fixture for a real-Dovecot environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dovecot import DovecotEnv, require_dovecot

from pydsync_server.cli import config as config_module
from pydsync_server.cli.config import CONFIG_ENV


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "dovecot: needs the real Dovecot (doveadm) installed")


@pytest.fixture
def dovecot_env(tmp_path: Path) -> Iterator[DovecotEnv]:
    """A DovecotEnv for the installed Dovecot; the test fails (not skips) without doveadm."""
    require_dovecot()
    with DovecotEnv(tmp_path) as env:
        yield env


@pytest.fixture(autouse=True, scope="session")
def no_host_config() -> Iterator[None]:
    """pydsync reads /etc/dovecot/dovecot.conf when given no config; the tests must not
    depend on the host's. Subprocesses inherit PYDSYNC_CONFIG="" (read no file); in-process
    `main()` calls with their own environ find no default path. Tests that want a file
    pass -c; tests of the default search set PYDSYNC_CONFIG or the candidates themselves."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CONFIG_ENV, "")
        patch.setattr(config_module, "DEFAULT_PATHS", ())
        yield
