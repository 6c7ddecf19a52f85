"""Shared pytest setup: the `dovecot` marker and a fixture for a real-Dovecot environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dovecot import DovecotEnv, require_dovecot


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "dovecot: needs the real Dovecot (doveadm) installed")


@pytest.fixture
def dovecot_env(tmp_path: Path) -> Iterator[DovecotEnv]:
    """A DovecotEnv for the installed Dovecot; the test fails (not skips) without doveadm."""
    require_dovecot()
    with DovecotEnv(tmp_path) as env:
        yield env
