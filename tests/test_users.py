"""Many users in one `backup`: -A, -u masks, -F, the worker pool, exit codes and the
failure summary; the userdb in front of the user's home (exit 67 for unknown users)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from pydsync_server.cli.main import main
from pydsync_server.cli.users import read_user_file, worst_exit_code
from pydsync_server.plugins.userdb import mask_match

MESSAGE = b"From: a@example.org\r\nSubject: hello %s\r\n\r\nbody\r\n"


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    environ = {"USER": "nobody-here", "HOME": "/nonexistent"} if env is None else env
    code = main(["-O", *args], stdout=out, stderr=err, environ=environ)
    return code, out.getvalue(), err.getvalue()


def make_maildir(path: Path, subject: str) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    (path / "cur" / "1.M1P1.host:2,S").write_bytes(MESSAGE % subject.encode())


def backup_messages(home: Path) -> list[bytes]:
    cur = home / "Backup" / "cur"
    return sorted(p.read_bytes() for p in cur.iterdir()) if cur.is_dir() else []


@pytest.fixture
def passwd(tmp_path: Path) -> Path:
    """Three users with maildir homes (ann, bob, cyd); mail location from the file."""
    lines = []
    uid, gid = os.getuid(), os.getgid()  # files are given back to them when root
    for name in ("ann", "bob", "cyd"):
        home = tmp_path / "home" / name
        make_maildir(home / "Maildir", name)
        lines.append(f"{name}:{{PLAIN}}x:{uid}:{gid}::{home}::userdb_mail=maildir:~/Maildir")
    path = tmp_path / "passwd"
    path.write_text("# users\n" + "\n".join(lines) + "\n")
    return path


def userdb(passwd: Path) -> list[str]:
    return ["-o", "plugins=hooks.passwd_file", "-o", f"userdb_passwd_file={passwd}"]


def home(passwd: Path, name: str) -> Path:
    return passwd.parent / "home" / name


def test_backup_all_users_copies_each_store(passwd: Path) -> None:
    code, _, err = run([*userdb(passwd), "backup", "-A", "maildir:%h/Backup"])
    assert (code, err) == (0, "")
    for name in ("ann", "bob", "cyd"):
        (body,) = backup_messages(home(passwd, name))
        assert f"Subject: hello {name}".encode() in body


def test_one_broken_user_does_not_stop_the_others(passwd: Path) -> None:
    broken = home(passwd, "bob") / "Maildir"
    for sub in ("cur", "new", "tmp"):
        for f in (broken / sub).iterdir():
            f.unlink()
        (broken / sub).rmdir()
    broken.rmdir()
    broken.write_text("not a maildir")  # bob's store is a file: his backup fails
    code, _, err = run([*userdb(passwd), "backup", "--workers", "2", "-A", "maildir:%h/Backup"])
    assert code != 0
    assert len(backup_messages(home(passwd, "ann"))) == 1
    assert len(backup_messages(home(passwd, "cyd"))) == 1
    summary = err.splitlines()[-1]
    assert summary.startswith("Error: 1 of 3 users failed: bob (exit ")
    assert "ann" not in summary and "cyd" not in summary


def test_mask_selects_matching_users(passwd: Path) -> None:
    code, _, err = run([*userdb(passwd), "backup", "-u", "?n*", "maildir:%h/Backup"])
    assert (code, err) == (0, "")
    assert len(backup_messages(home(passwd, "ann"))) == 1
    assert backup_messages(home(passwd, "bob")) == []


def test_user_file_with_an_unknown_user_exits_67(passwd: Path) -> None:
    users = passwd.parent / "users.txt"
    users.write_text("cyd\n\nzed\n")
    code, _, err = run([*userdb(passwd), "backup", "-F", str(users), "maildir:%h/Backup"])
    assert code == 67
    assert len(backup_messages(home(passwd, "cyd"))) == 1
    assert "dsync(zed): Error: User doesn't exist: zed" in err
    assert err.splitlines()[-1] == (
        "Error: 1 of 2 users failed: zed (exit 67: User doesn't exist: zed)"
    )


def test_single_user_gets_home_from_the_userdb(passwd: Path) -> None:
    code, _, err = run([*userdb(passwd), "backup", "-u", "bob", "maildir:%h/Backup"])
    assert (code, err) == (0, "")
    assert len(backup_messages(home(passwd, "bob"))) == 1
    assert backup_messages(home(passwd, "ann")) == []


def test_unknown_single_user_exits_67(passwd: Path) -> None:
    code, _, err = run([*userdb(passwd), "backup", "-u", "zed", "maildir:%h/Backup"])
    assert (code, err) == (67, "Error: User doesn't exist: zed\n")


def test_dsync_server_unknown_user_exits_67(passwd: Path) -> None:
    code, out, err = run([*userdb(passwd), "dsync-server", "-u", "zed"])
    assert (code, out, err) == (67, b"", "Error: User doesn't exist: zed\n")


def test_no_userdb_lookup_takes_user_and_home_from_the_environment(
    passwd: Path, tmp_path: Path
) -> None:
    own = tmp_path / "own"
    make_maildir(own / "Maildir", "own")
    env = {"USER": "zed", "HOME": str(own)}
    args = [*userdb(passwd), "-o", "mail_location=maildir:~/Maildir", "backup"]
    code, _, err = run([*args, "--no-userdb-lookup", "maildir:%h/Backup"], env)
    assert (code, err) == (0, "")
    assert len(backup_messages(own)) == 1


def test_all_users_needs_a_userdb_that_lists() -> None:
    code, _, err = run(["backup", "-A", "maildir:/tmp/x"])
    assert code == 78 and "userdb plugin" in err


@pytest.mark.parametrize("value", ["0", "many", "-1"])
def test_invalid_worker_count_exits_64(passwd: Path, value: str) -> None:
    code, _, err = run([*userdb(passwd), "backup", "-A", "--workers", value, "maildir:%h/B"])
    assert code == 64 and err.startswith("Error: Invalid worker count")


def test_workers_setting_is_read(passwd: Path) -> None:
    code, _, err = run([*userdb(passwd), "-o", "dsync_workers=x", "backup", "-A", "maildir:%h/B"])
    assert (code, err) == (64, "Error: Invalid worker count: x\n")


def test_a_and_f_together_exit_64(passwd: Path) -> None:
    code, _, _ = run([*userdb(passwd), "backup", "-A", "-F", str(passwd), "maildir:%h/B"])
    assert code == 64


def test_worst_exit_code_tempfail_wins_else_first() -> None:
    assert worst_exit_code([0, 0]) == 0
    assert worst_exit_code([0, 67, 65]) == 67
    assert worst_exit_code([67, 75, 65]) == 75
    assert worst_exit_code([2, 68]) == 2


def test_mask_match() -> None:
    assert mask_match("a*", "ann") and mask_match("?ob", "bob") and mask_match("*", "")
    assert not mask_match("a?", "ann") and not mask_match("b.b", "bob")
    assert mask_match("*@example.org", "x@example.org")


def test_read_user_file(tmp_path: Path) -> None:
    path = tmp_path / "u"
    path.write_text("ann\n\n  bob  \ncyd\textra\n")
    assert read_user_file(str(path)) == ["ann", "bob", "cyd"]


def test_unreadable_user_file_exits_64(tmp_path: Path) -> None:
    code, _, err = run(["backup", "-F", str(tmp_path / "missing"), "maildir:/tmp/x"])
    assert code == 64 and err.startswith("Error: -F ")


def test_many_users_run_in_parallel_workers(passwd: Path) -> None:
    """Each user's sync is independent: the pool never shares a store between users."""
    code, _, err = run([*userdb(passwd), "backup", "--workers", "3", "-A", "maildir:%h/Backup"])
    assert (code, err) == (0, "")
    assert all(os.path.isdir(home(passwd, n) / "Backup") for n in ("ann", "bob", "cyd"))
