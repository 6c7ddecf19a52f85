"""hooks.passwd_file: Dovecot's passwd-file format, templates, userdb_ extra fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from hooks import passwd_file
from pydsync_server.errors import ConfigError, DsyncError
from pydsync_server.plugins.userdb import UserRecord

FILE = """\
# comment
ann:{PLAIN}pw:1000:100:Ann:/home/ann:/bin/sh:userdb_mail=maildir:~/Maildir nopassword
bob@example.org:x:1001:101::/home/%d/%n::userdb_mail_replica=remote:%n.example.org
short:x
cyd::1002:102::/home/cyd::userdb_home=/srv/%u userdb_uid=7 userdb_quota_rule=*:storage=1G
"""


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "passwd").write_text(FILE)
    return {"userdb_passwd_file": str(tmp_path / "passwd")}


def test_lookup_fields(settings: dict[str, str]) -> None:
    ann = passwd_file.pydsync_userdb_lookup(user="ann", settings=settings)
    assert ann == UserRecord("ann", "/home/ann", "maildir:~/Maildir", 1000, 100, {})


def test_templates_in_home_and_extra_fields(settings: dict[str, str]) -> None:
    bob = passwd_file.pydsync_userdb_lookup(user="bob@example.org", settings=settings)
    assert bob is not None and bob.home == "/home/example.org/bob"
    assert bob.extra == {"mail_replica": "remote:bob.example.org"}
    assert bob.settings({"mail_replica": "old"})["mail_replica"] == "remote:bob.example.org"


def test_userdb_fields_override_the_columns(settings: dict[str, str]) -> None:
    cyd = passwd_file.pydsync_userdb_lookup(user="cyd", settings=settings)
    assert cyd is not None and (cyd.home, cyd.uid, cyd.gid) == ("/srv/cyd", 7, 102)
    assert cyd.extra == {"quota_rule": "*:storage=1G"}
    merged = cyd.settings({"mail_driver": "sdbox"})
    assert merged["mail_uid"] == "7" and "mail_location" not in merged


def test_short_lines_have_empty_fields(settings: dict[str, str]) -> None:
    assert passwd_file.pydsync_userdb_lookup(user="short", settings=settings) == UserRecord("short")


def test_unknown_user_is_none(settings: dict[str, str]) -> None:
    assert passwd_file.pydsync_userdb_lookup(user="zed", settings=settings) is None


def test_iterate_lists_users_in_file_order(settings: dict[str, str]) -> None:
    users = passwd_file.pydsync_userdb_iterate(settings=settings)
    assert list(users) == ["ann", "bob@example.org", "short", "cyd"]


def test_templated_path_per_domain(tmp_path: Path) -> None:
    (tmp_path / "example.org").write_text("bob:x:1:1::/h/bob\n")
    settings = {"userdb_passwd_file": str(tmp_path / "%d")}
    bob = passwd_file.pydsync_userdb_lookup(user="bob@example.org", settings=settings)
    assert bob is None  # the file holds "bob", the user is "bob@example.org"
    (tmp_path / "example.org").write_text("bob@example.org:x:1:1::/h/%n\n")
    bob = passwd_file.pydsync_userdb_lookup(user="bob@example.org", settings=settings)
    assert bob is not None and bob.home == "/h/bob"
    with pytest.raises(ConfigError, match="can't be listed"):
        passwd_file.pydsync_userdb_iterate(settings=settings)


def test_missing_setting_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="userdb_passwd_file is not set"):
        passwd_file.pydsync_userdb_lookup(user="a", settings={})
    with pytest.raises(DsyncError, match="passwd-file"):
        passwd_file.pydsync_userdb_lookup(
            user="a", settings={"userdb_passwd_file": str(tmp_path / "none")}
        )


def test_uid_by_name(tmp_path: Path) -> None:
    (tmp_path / "p").write_text("a:x:root:root::/h\nb:x:no-such-user-xyz:0::/h\n")
    settings = {"userdb_passwd_file": str(tmp_path / "p")}
    a = passwd_file.pydsync_userdb_lookup(user="a", settings=settings)
    assert a is not None and (a.uid, a.gid) == (0, 0)
    with pytest.raises(ConfigError, match="unknown uid no-such-user-xyz"):
        passwd_file.pydsync_userdb_lookup(user="b", settings=settings)
