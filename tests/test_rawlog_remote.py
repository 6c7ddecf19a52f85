"""`sync`/`backup -r PATH` on every remote kind: a command, `remote:` (dsync_remote_cmd),
`tcp:` and `tcps:`; the rawlog holds the dsync stream both ways in Dovecot's format."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rawlog_parse import RECORD, parse_rawlog
from test_doveadm_tcp import PASSWORD, PydsyncServer, fetch_all, self_signed

from pydsync_server.cli.main import main
from pydsync_server.sample import materialise

REPO = Path(__file__).resolve().parent.parent
LOCATION = "mail_location=maildir:~/Maildir"


@pytest.fixture
def source(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "src"
    materialise(home)
    return {"USER": "jane", "HOME": str(home), "PATH": "/usr/bin:/bin"}


def server_words(home: Path, *options: str) -> list[str]:
    """`pydsync dsync-server` for `home`, as words without spaces (dsync_remote_cmd)."""
    return [
        "/usr/bin/env", f"HOME={home}", f"PYTHONPATH={REPO}", "PYDSYNC_CONFIG=",
        sys.executable, "-m", "pydsync_server", "-o", LOCATION, "dsync-server", *options,
    ]  # fmt: skip


def backup(env: dict[str, str], *args: str) -> tuple[int, str]:
    err = io.StringIO()
    base = ["-O", "-o", LOCATION, "-o", f"doveadm_password={PASSWORD}"]
    code = main([*base, *args], stdout=io.BytesIO(), stderr=err, environ=env)
    return code, err.getvalue()


def assert_dsync_rawlog(path: Path) -> dict[str, bytes]:
    """Both directions are a whole dsync session: VERSION first, the slave's X last."""
    data = path.read_bytes()
    assert RECORD.match(data), data[:80]
    assert path.stat().st_mode & 0o777 == 0o600
    streams = parse_rawlog(data)
    assert streams["O"].startswith(b"VERSION\tdsync\t3\t5\n")
    assert streams["I"].startswith(b"VERSION\tdsync\t3\t5\n")
    assert streams["I"].endswith(b"X\n")
    return streams


def test_command_destination_rawlog_mirrors_the_servers(
    tmp_path: Path, source: dict[str, str]
) -> None:
    ours, theirs = tmp_path / "master.log", tmp_path / "server.log"
    words = server_words(tmp_path / "dst", "-r", str(theirs))
    code, err = backup(source, "backup", "-r", str(ours), *words)
    assert (code, err) == (0, "")
    mine, server = assert_dsync_rawlog(ours), parse_rawlog(theirs.read_bytes())
    assert mine["O"] == server["I"] and mine["I"] == server["O"]


def test_remote_destination_through_dsync_remote_cmd(
    tmp_path: Path, source: dict[str, str]
) -> None:
    ours, theirs = tmp_path / "master.log", tmp_path / "server.log"
    template = " ".join(server_words(tmp_path / "dst", "-u%u", "-r", str(theirs)))
    args = ["-o", f"dsync_remote_cmd={template}", "backup", "-r", str(ours), "remote:h"]
    code, err = backup(source, *args)
    assert (code, err) == (0, "")
    mine, server = assert_dsync_rawlog(ours), parse_rawlog(theirs.read_bytes())
    assert mine["O"] == server["I"] and mine["I"] == server["O"]
    copy = f"maildir:{tmp_path}/dst/Maildir"
    assert fetch_all(source, copy) == fetch_all(source, "maildir:~/Maildir")


def test_tcp_rawlog_holds_the_dsync_stream_only(tmp_path: Path, source: dict[str, str]) -> None:
    ours = tmp_path / "master.log"
    server = PydsyncServer(tmp_path / "srv")
    code, err = backup(source, "backup", "-r", str(ours), f"tcp:127.0.0.1:{server.port}")
    assert (code, err) == (0, "")
    assert server.finish()[0] == 0
    streams = assert_dsync_rawlog(ours)
    # No doveadm preamble, command line, reply or multiplex framing.
    for word in (b"doveadm", b"PLAIN", b"dsync-server", b"\n+\n", b"\x00\x00\x00"):
        assert word not in streams["I"] + streams["O"]
    copy = f"maildir:{tmp_path}/srv/jane/Maildir"
    assert fetch_all(source, copy) == fetch_all(source, "maildir:~/Maildir")


def test_tcps_rawlog(tmp_path: Path, source: dict[str, str]) -> None:
    cert, key = self_signed(tmp_path)
    server = PydsyncServer(tmp_path / "srv", "--ssl-cert", str(cert), "--ssl-key", str(key))
    ours = tmp_path / "master.log"
    args = ["-o", f"ssl_client_ca_file={cert}", "backup", "-r", str(ours)]
    code, err = backup(source, *args, f"tcps:127.0.0.1:{server.port}")
    assert (code, err) == (0, "")
    assert server.finish()[0] == 0
    assert_dsync_rawlog(ours)


def test_unwritable_rawlog_fails_before_connecting(tmp_path: Path, source: dict[str, str]) -> None:
    missing = tmp_path / "no-such-dir" / "log"
    code, err = backup(source, "backup", "-r", str(missing), "tcp:127.0.0.1:9")
    assert code == 75 and "rawlog" in err and "No such file" in err, err
