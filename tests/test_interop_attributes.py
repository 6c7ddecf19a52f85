"""Mailbox attributes (METADATA) synced between Dovecot and pydsync (vectors g*, §5).

Dovecot keeps them in `mail_attribute_dict = file:%h/Maildir/dovecot-attributes`, where
the pydsync maildir driver keeps them too, so both read the same values.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dovecot import SAFE_PATH, DovecotEnv, DovecotUser, require_dovecot

pytestmark = pytest.mark.dovecot

REPO = Path(__file__).resolve().parent.parent
LOCATION = "mail_location=maildir:~/Maildir"
KEYS = ("/private/comment", "/shared/comment")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DovecotEnv]:
    require_dovecot()
    with DovecotEnv(tmp_path, attributes=True) as env:
        text = env.config.read_text()
        env.config.write_text(text.replace("/dovecot-attributes", "/Maildir/dovecot-attributes"))
        yield env


def pydsync(user: DovecotUser, *args: str) -> subprocess.CompletedProcess[bytes]:
    environ = {
        "PATH": SAFE_PATH,
        "USER": user.name,
        "HOME": str(user.home),
        "PYTHONPATH": str(REPO),
        "PYDSYNC_CONFIG": "",
    }
    argv = [sys.executable, "-m", "pydsync_server", "-o", LOCATION, *args]
    return subprocess.run(argv, env=environ, capture_output=True, timeout=120, check=False)


def server(env: DovecotEnv, user: DovecotUser) -> list[str]:
    return env.command_destination(
        [sys.executable, "-m", "pydsync_server", "-o", LOCATION, "dsync-server"],
        {"USER": user.name, "HOME": str(user.home), "PYTHONPATH": str(REPO), "PYDSYNC_CONFIG": ""},
    )


def values(user: DovecotUser) -> dict[str, str]:
    return {key: user.metadata_get("INBOX", key) for key in KEYS}


def fill(user: DovecotUser) -> None:
    user.save("INBOX", b"Subject: x\n\nhello\n")
    user.metadata_set("INBOX", "/private/comment", "hello world")
    user.metadata_set("INBOX", "/shared/comment", "multi\tline\nvalue")


def test_doveadm_syncs_attributes_into_pydsync(env: DovecotEnv) -> None:
    a, b = env.user("a"), env.user("b")
    fill(a)
    assert a.sync(server(env, b), check=False).returncode == 0
    assert (
        values(b)
        == values(a)
        == {
            "/private/comment": "hello world",
            "/shared/comment": "multi\tline\nvalue",
        }
    )
    # A change on the pydsync side goes back, a deletion on Dovecot's side comes over.
    b.metadata_set("INBOX", "/shared/comment", "changed on b")
    a.doveadm("mailbox", "metadata", "unset", "INBOX", "/private/comment")
    assert a.sync(server(env, b), check=False).returncode == 0
    assert values(a) == values(b) == {"/private/comment": "", "/shared/comment": "changed on b"}


def test_pydsync_syncs_attributes_into_dovecot(env: DovecotEnv) -> None:
    a, b = env.user("a"), env.user("b")
    fill(a)
    proc = pydsync(a, "sync", *b.dsync_server_destination())
    assert proc.returncode == 0, proc.stderr
    assert values(b) == values(a)
    b.metadata_set("INBOX", "/private/comment", "from b")
    proc = pydsync(a, "sync", *b.dsync_server_destination())
    assert proc.returncode == 0, proc.stderr
    assert values(a)["/private/comment"] == "from b"
