"""`sync`/`backup -S socket_path`: the command runs on a doveadm server (dsync-protocol.md
§12.1); and `pydsync doveadm-server` serving `sync`/`backup` and listening on a UNIX socket.

Against a real Dovecot doveadm service on its 0600 UNIX socket (pre-authenticated) and
on TCP (PLAIN), real `doveadm sync -S` against pydsync's server, and pydsync against
itself.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dovecot import SAFE_PATH, DovecotEnv, DovecotUser, diff, snapshot
from hypothesis import given
from hypothesis import strategies as st
from test_doveadm_tcp import PASSWORD, dovecot_server  # noqa: F401 (the fixture)

from pydsync_server.cli.doveadm_remote import parse_address, remote_args
from pydsync_server.cli.main import main
from pydsync_server.cli.options import SYNC_OPTIONS, getopt
from pydsync_server.errors import UsageError
from pydsync_server.sample import materialise
from pydsync_server.transport.doveadm_command import encode_values, parse_reply, parse_values

REPO = Path(__file__).resolve().parent.parent
LOCATION = "mail_location=maildir:~/Maildir"

# ---------------------------------------------------------------- the pieces


def test_command_line_is_rebuilt_like_doveadms() -> None:
    """`doveadm sync -S … -u alice -s "" -1 -x Trash -m INBOX remote:foo@bar` sent
    `-u alice -m INBOX -x Trash -s "" -1 -- remote:foo@bar` (captured); we keep the
    user's option order, the same words."""
    argv = ["-u", "alice", "-s", "", "-1", "-x", "Trash", "-m", "INBOX", "-S", "/s"]
    parsed, operands = getopt("sync", [*argv, "remote:foo@bar"], SYNC_OPTIONS, permute=False)
    args = remote_args(SYNC_OPTIONS, parsed, "alice", operands)
    assert args == ["-u", "alice", "-s", "", "-1", "-x", "Trash", "-m", "INBOX"] + [
        "--",
        "remote:foo@bar",
    ]
    parsed, operands = getopt("sync", ["-A", "--workers", "2", "x"], SYNC_OPTIONS, permute=False)
    assert remote_args(SYNC_OPTIONS, parsed, "bob", operands) == ["-u", "bob", "--", "x"]


def test_addresses() -> None:
    assert parse_address("/run/dovecot/doveadm-server", "0") == "/run/dovecot/doveadm-server"
    assert parse_address("mail.example.org:2425", "0") == ("mail.example.org", 2425)
    assert parse_address("[::1]:2425", "0") == ("::1", 2425)
    assert parse_address("host", "12345") == ("host", 12345)
    for bad in ("host", "relative/path", "host:0", "host:x", ":5"):
        with pytest.raises(UsageError):
            parse_address(bad, "0")


@given(st.lists(st.text()))
def test_values_roundtrip(values: list[str]) -> None:
    encoded = encode_values(values)
    assert b"\n" not in encoded  # the reply's LF stays unambiguous
    assert parse_values(encoded) == values


def test_replies() -> None:
    assert parse_reply(b"+") is None
    assert parse_reply(b"-NOUSER") == "NOUSER"
    assert parse_reply(b"-") == ""
    with pytest.raises(Exception, match="invalid reply"):
        parse_reply(b"garbage")


# ---------------------------------------------------------------- helpers


def run(args: list[str], env: dict[str, str]) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = main(["-O", *args], stdout=out, stderr=err, environ=env)
    return code, out.getvalue(), err.getvalue()


def filled(env: DovecotEnv, name: str) -> DovecotUser:
    user = env.user(name)
    user.mailbox_create("Work", subscribe=True)
    user.save("INBOX", b"Subject: one\n\nbody 1\n")
    user.save("Work", b"Subject: two\n\n.\n..dots\n")
    user.flags_add("INBOX", 1, "\\Seen")
    return user


def assert_same(user: DovecotUser, home: Path, location: str) -> None:
    mine, theirs = snapshot(user), snapshot(home, location=location)
    assert mine == theirs, "stores differ:\n" + diff(mine, theirs)


class PydsyncSocketServer:
    """`pydsync doveadm-server -l <path>` in a child (a 0600 socket: no password)."""

    def __init__(self, sock: Path, store: Path) -> None:
        argv = [
            sys.executable, "-m", "pydsync_server", "-O", "-v",
            "-o", f"mail_home={store}/%u", "-o", LOCATION,
            "doveadm-server", "-T", "60", "-l", str(sock),
        ]  # fmt: skip
        environ = {"PATH": SAFE_PATH, "PYTHONPATH": str(REPO), "PYDSYNC_CONFIG": ""}
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, env=environ, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        assert f"listening on {sock}" in line, line
        self.sock = sock

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err


# ---------------------------------------------------------------- against real Dovecot


@pytest.mark.dovecot
def test_sync_on_dovecot_through_its_unix_socket(
    dovecot_env: DovecotEnv, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("dovecot_server")  # a running Dovecot with its doveadm service
    user = filled(dovecot_env, "a")
    sock = dovecot_env.root / "run" / "doveadm-server"
    env = {"USER": "root", "HOME": "/nonexistent"}
    code, out, err = run(["sync", "-S", str(sock), "-u", "a", "-s", "", "maildir:~/copy"], env)
    assert code == 0, err
    state = out.decode().splitlines()
    assert len(state) == 1 and len(state[0]) > 40  # the -s state the server printed
    assert_same(user, user.home, "maildir:~/copy")
    # A failing command: its log lines come back and the reply sets the exit code.
    code, out, err = run(["backup", "-S", str(sock), "-u", "a", "maildir:/proc/x"], env)
    assert code == 75 and f"remote({sock})" in err and "Error" in err, err


@pytest.mark.dovecot
def test_sync_on_dovecot_over_tcp(dovecot_env: DovecotEnv, request: pytest.FixtureRequest) -> None:
    port = request.getfixturevalue("dovecot_server")
    user = filled(dovecot_env, "a")
    env = {"USER": "a", "HOME": "/nonexistent"}
    address = f"127.0.0.1:{port}"
    args = ["backup", "-S", address, "maildir:~/copy"]
    code, _, err = run(["-o", f"doveadm_password={PASSWORD}", *args], env)
    assert code == 0, err
    assert_same(user, user.home, "maildir:~/copy")
    code, _, err = run(["-o", "doveadm_password=wrong", *args], env)
    assert code == 75 and "authentication failed" in err, err
    code, _, err = run(args, env)
    assert code == 78 and "doveadm_password not set" in err, err


@pytest.mark.dovecot
def test_real_doveadm_sync_dash_s_reaches_pydsync(dovecot_env: DovecotEnv) -> None:
    user = filled(dovecot_env, "carol")
    store = dovecot_env.root / "pydsync"
    server = PydsyncSocketServer(dovecot_env.root / "pydsync.sock", store)
    try:
        proc = user.doveadm("sync", "-S", str(server.sock), "-u", "carol", "-s", "",
                            f"maildir:{user.home}/Maildir", check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout.strip()) > 40  # the state our server printed
        bad = user.doveadm("backup", "-S", str(server.sock), "-u", "carol", "nothing:x",
                           check=False)  # fmt: skip
        assert bad.returncode == 64 and b"Unknown mail storage driver" in bad.stderr
    finally:
        server.stop()
    assert (server.sock.exists(), server.proc.returncode) == (False, 0)  # SIGTERM: cleaned up
    assert_same(user, store / "carol", "maildir:~/Maildir")


# ---------------------------------------------------------------- pydsync against itself


def test_pydsync_sync_dash_s_to_pydsync_server(tmp_path: Path) -> None:
    src = tmp_path / "src"
    materialise(src)
    server = PydsyncSocketServer(tmp_path / "sock", tmp_path / "store")
    try:
        assert (server.sock.stat().st_mode & 0o777) == 0o600
        env = {"USER": "jane", "HOME": "/nonexistent"}
        args = ["sync", "-S", str(server.sock), "-u", "jane", "-s", "", f"maildir:{src}/Maildir"]
        code, out, err = run(args, env)
        assert code == 0, err
        assert out.count(b"\n") == 1 and len(out) > 40
        unknown = ["sync", "-S", str(server.sock), "-u", "jane", "nothing:x"]
        code, _, err = run(unknown, env)
        assert code == 64 and "Unknown mail storage driver" in err, err
        # A second connection after the first ones: the server keeps serving.
        time.sleep(0.1)
        code, _, err = run(["backup", "-S", str(server.sock), f"maildir:{src}/Maildir"], env)
        assert code == 0, err
    finally:
        server.stop()
    fetch = ["-o", LOCATION, "-f", "tab", "fetch", "mailbox uid guid flags text", "all"]
    _, theirs, _ = run(fetch, {"USER": "jane", "HOME": str(tmp_path / "store" / "jane")})
    _, mine, _ = run(fetch, {"USER": "jane", "HOME": str(src)})
    assert mine == theirs and mine.count(b"\n") > 3
