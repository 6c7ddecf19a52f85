"""hooks.static: templated home and mail for any (or a listed) user."""

from __future__ import annotations

import pytest

from hooks import static
from pydsync_server.errors import ConfigError
from pydsync_server.plugins.userdb import UserRecord

SETTINGS = {
    "userdb_static_home": "/home/%d/%n",
    "userdb_static_mail": "maildir:%h/Maildir:LAYOUT=fs",
    "userdb_static_uid": "500",
}


def test_any_user_when_no_list() -> None:
    record = static.pydsync_userdb_lookup(user="ann@example.org", settings=SETTINGS)
    assert record == UserRecord(
        "ann@example.org",
        "/home/example.org/ann",
        "maildir:/home/example.org/ann/Maildir:LAYOUT=fs",
        500,
    )
    assert list(static.pydsync_userdb_iterate(settings=SETTINGS)) == []


def test_listed_users_only() -> None:
    settings = {**SETTINGS, "userdb_static_users": "ann, bob cyd"}
    assert static.pydsync_userdb_lookup(user="zed", settings=settings) is None
    assert static.pydsync_userdb_lookup(user="bob", settings=settings) is not None
    assert list(static.pydsync_userdb_iterate(settings=settings)) == ["ann", "bob", "cyd"]


def test_no_templates_gives_an_empty_record() -> None:
    assert static.pydsync_userdb_lookup(user="a", settings={}) == UserRecord("a")


def test_bad_uid() -> None:
    with pytest.raises(ConfigError, match="userdb_static_gid"):
        static.pydsync_userdb_lookup(user="a", settings={"userdb_static_gid": "root"})
