"""Files written as root go back to the mail user (cli/ownership.py)."""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

import pytest

from pydsync_server.cli.ownership import Owner, give_back, mail_owner, store_paths
from pydsync_server.errors import ConfigError
from pydsync_server.storage.location import MailLocation

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="ownership changes need root")


def test_store_paths_include_separate_control_and_index(tmp_path: Path) -> None:
    location = MailLocation("maildir", str(tmp_path / "m"), {"CONTROL": "/c", "INDEX": "MEMORY"})
    assert store_paths(location) == [tmp_path / "m", Path("/c")]


@needs_root
def test_owner_from_settings_then_store_then_home(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    location = MailLocation("maildir", str(tmp_path / "Maildir"))
    assert mail_owner({"mail_uid": "nobody"}, location, None) == Owner(
        nobody.pw_uid, nobody.pw_gid
    )
    with pytest.raises(ConfigError):
        mail_owner({"mail_uid": "no-such-user-here"}, location, None)
    home = tmp_path / "home"
    home.mkdir()
    assert mail_owner({}, location, str(home)) is None  # everything root's: nothing to do
    os.chown(home, 4321, 4322)
    assert mail_owner({}, location, str(home)) == Owner(4321, 4322)
    (tmp_path / "Maildir").mkdir()
    os.chown(tmp_path / "Maildir", 1234, 1235)
    assert mail_owner({}, location, str(home)) == Owner(1234, 1235)


@needs_root
def test_give_back_changes_only_roots_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    (tmp_path / "a" / "other").write_text("y")
    os.chown(tmp_path / "a" / "other", 777, 778)
    give_back([tmp_path / "a"], Owner(1000, 1001))
    assert (tmp_path / "a" / "b" / "f").stat().st_uid == 1000
    assert (tmp_path / "a").stat().st_gid == 1001
    assert (tmp_path / "a" / "other").stat().st_uid == 777


@needs_root
def test_give_back_skips_directories_untouched_since_the_session(tmp_path: Path) -> None:
    """Entries appear in a directory only by touching it, so an old directory's files
    are not looked at; a new one anywhere below is given back."""
    old, fresh = tmp_path / "a" / "old", tmp_path / "a" / "fresh"
    deep = old / "sub"
    deep.mkdir(parents=True)
    (old / "before").write_text("x")  # root's, from before the session
    past = time.time() - 10
    os.utime(old, (past, past))
    since = time.time_ns()
    fresh.mkdir()
    (fresh / "new").write_text("y")
    (deep / "new").write_text("z")  # touches sub/, not old/: found below an old directory
    give_back([tmp_path / "a"], Owner(1000, 1001), since)
    assert (deep / "new").stat().st_uid == 1000
    assert (fresh / "new").stat().st_uid == 1000
    assert fresh.stat().st_uid == 1000
    assert old.stat().st_uid == 1000  # directories themselves are always checked
    assert (old / "before").stat().st_uid == 0
