"""The doveadm TCP protocol (`tcp:`/`tcps:`, dsync-protocol.md §12): codec against the
h1/h2 captures, pydsync client <-> `pydsync doveadm-server`, and both against real Dovecot.
"""

from __future__ import annotations

import io
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dovecot import SAFE_PATH, DovecotEnv, diff, is_24, snapshot

from pydsync_server.cli.main import main
from pydsync_server.errors import UnknownUserError
from pydsync_server.sample import materialise
from pydsync_server.transport.doveadm_tcp import (
    CLIENT_VERSION,
    SERVER_VERSION,
    ClientSettings,
    DoveadmCommand,
    LogAssembler,
    PacketDecoder,
    RemoteCommandError,
    connect_dsync,
    dsync_command,
    encode_packet,
    parse_plain_auth,
    plain_auth_line,
)

REPO = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).resolve().parent / "data" / "vectors"
PASSWORD = "secret"


def capture(name: str) -> tuple[bytes, bytes]:
    d = VECTORS / name
    return (d / "to-server").read_bytes(), (d / "from-server").read_bytes()


def split_preamble(data: bytes, lines: int) -> tuple[list[bytes], bytes]:
    out = []
    for _ in range(lines):
        line, _, data = data.partition(b"\n")
        out.append(line + b"\n")
    return out, data


# -- codec against the captures -----------------------------------------------------------


@pytest.mark.parametrize(("name", "debug"), [("h1_tcp_sync", False), ("h2_tcp_sync_debug", True)])
def test_client_preamble_is_byte_exact(name: str, debug: bool) -> None:
    to_server, _ = capture(name)
    (version, auth, command), dsync = split_preamble(to_server, 3)
    assert version == CLIENT_VERSION
    assert auth == plain_auth_line("doveadm", PASSWORD)
    assert parse_plain_auth(auth[:-1]) == ("doveadm", PASSWORD)
    assert command == dsync_command("a", debug=debug, replicator_notify=False).encode()
    assert DoveadmCommand.parse(command[:-1]) == DoveadmCommand(
        "D" if debug else "", "a", "dsync-server", ("-ua",)
    )
    assert dsync.startswith(b"VERSION\tdsync\t3\t5\n")


def demultiplex(data: bytes, seed: int) -> tuple[list[tuple[int, bytes]], int]:
    """Packets of `data` fed in random pieces; also the bytes left undecoded."""
    rng = random.Random(seed)
    decoder = PacketDecoder()
    packets: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 40)
        packets += decoder.feed(data[pos : pos + step])
        pos += step
    return packets, decoder.pending


@pytest.mark.parametrize("name", ["h1_tcp_sync", "h2_tcp_sync_debug"])
@pytest.mark.parametrize("seed", [1, 2])
def test_server_output_demultiplexes_byte_exact(name: str, seed: int) -> None:
    _, from_server = capture(name)
    lines, muxed = split_preamble(from_server, 3)
    assert lines == [SERVER_VERSION, b"-\n", b"+\n"]
    packets, pending = demultiplex(muxed, seed)
    assert pending == 0
    assert b"".join(encode_packet(c, p) for c, p in packets) == muxed
    data = b"".join(p for c, p in packets if c == 0)
    assert data.startswith(b"\n+\nVERSION\tdsync\t3\t5\n") and data.endswith(b"F\nX\n")
    logs = LogAssembler()
    lines_l = [line for c, p in packets if c == ord("L") for line in logs.feed(p)]
    assert {c for c, _ in packets} == ({0, ord("L")} if "debug" in name else {0})
    if lines_l:
        assert {level for level, _ in lines_l} == {1}  # debug lines (flag D)
        assert all(text.startswith("doveadm(a)<") for _, text in lines_l)


class ReplayServer:
    """Plays a capture's server side on a socketpair: checks each client line, answers."""

    def __init__(self, name: str) -> None:
        self.to_server, self.from_server = capture(name)
        self.client_sock, self.sock = socket.socketpair()
        self.received = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        lines, muxed = split_preamble(self.from_server, 3)
        self._expect(1)
        self.sock.sendall(lines[0] + lines[1])
        self._expect(2)
        self.sock.sendall(lines[2])
        self._expect(3)
        self.sock.sendall(muxed)
        self.sock.shutdown(socket.SHUT_WR)
        while data := self.sock.recv(65536):
            self.received += data

    def _expect(self, count: int) -> None:
        while self.received.count(b"\n") < count:
            self.received += self.sock.recv(1)


@pytest.mark.parametrize(("name", "debug"), [("h1_tcp_sync", False), ("h2_tcp_sync_debug", True)])
def test_client_against_a_replayed_dovecot_server(name: str, debug: bool) -> None:
    server = ReplayServer(name)
    logs: list[tuple[int, str]] = []
    settings = ClientSettings("doveadm", PASSWORD, "a", debug=debug, timeout=10)
    stream = connect_dsync(server.client_sock, settings, lambda lv, t: logs.append((lv, t)))
    data = b""
    while chunk := stream.read(1000):
        data += chunk
    stream.write(server.to_server.split(b"\n", 3)[3])
    stream.close_write()
    server.thread.join(10)
    stream.close()
    packets, _ = demultiplex(split_preamble(server.from_server, 3)[1], 0)
    assert data == b"".join(p for c, p in packets if c == 0)[3:]  # without "\n+\n"
    assert server.received == server.to_server
    assert bool(logs) == debug


def _replying_server(reply: bytes) -> socket.socket:
    client, sock = socket.socketpair()

    def run() -> None:
        sock.recv(100)
        sock.sendall(SERVER_VERSION + b"+\n")  # a pre-authenticated UNIX socket
        sock.recv(100)
        sock.sendall(encode_packet(0, reply))
        sock.close()

    threading.Thread(target=run, daemon=True).start()
    return client


def test_command_failures_map_to_errors() -> None:
    settings = ClientSettings("doveadm", "", "nobody", timeout=10)
    with pytest.raises(UnknownUserError) as nouser:
        connect_dsync(_replying_server(b"\n-NOUSER\n"), settings, lambda *_: None)
    assert nouser.value.exit_code == 67
    with pytest.raises(RemoteCommandError, match="exit_code=TEMPFAIL"):
        connect_dsync(_replying_server(b"\n-TEMPFAIL\n"), settings, lambda *_: None)


# -- pydsync client <-> pydsync doveadm-server --------------------------------------------


def pydsync_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pydsync_server", *args]


class PydsyncServer:
    """`pydsync -v doveadm-server -1 -l 127.0.0.1:0` in a child; `port` from its log."""

    def __init__(self, store: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        argv = pydsync_argv(
            "-O",
            "-v",
            "-o",
            f"doveadm_password={PASSWORD}",
            "-o",
            f"mail_home={store}/%u",
            "-o",
            "mail_location=maildir:~/Maildir",
            "doveadm-server",
            "-1",
            "-T",
            "60",
            "-l",
            "127.0.0.1:0",
            *extra,
        )
        environ = {"PATH": SAFE_PATH, "PYTHONPATH": str(REPO), "PYDSYNC_CONFIG": "", **(env or {})}
        self.proc = subprocess.Popen(
            argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=environ, text=True
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        assert "listening on 127.0.0.1:" in line, line
        self.port = int(line.rsplit(":", 1)[1])

    def finish(self) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=60)
        finally:
            self.proc.kill()
        return self.proc.returncode, err


def run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    out, err = io.BytesIO(), io.StringIO()
    return main(args, stdout=out, stderr=err, environ=env), err.getvalue()


def fetch_all(env: dict[str, str], location: str) -> bytes:
    out, err = io.BytesIO(), io.StringIO()
    fields = "mailbox uid guid flags text"
    code = main(
        ["-o", f"mail_location={location}", "-f", "tab", "fetch", fields, "all"],
        stdout=out,
        stderr=err,
        environ=env,
    )
    assert code == 0, err.getvalue()
    return out.getvalue()


@pytest.fixture
def source(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "src"
    materialise(home)
    return {"USER": "jane", "HOME": str(home)}


def _backup(source: dict[str, str], dest: str, *options: str) -> tuple[int, str]:
    args = ["-O", "-o", "mail_location=maildir:~/Maildir", "-o", f"doveadm_password={PASSWORD}"]
    return run([*args, *options, "backup", dest], source)


def test_backup_over_tcp_to_pydsync_server(tmp_path: Path, source: dict[str, str]) -> None:
    server = PydsyncServer(tmp_path / "srv")
    code, err = _backup(source, f"tcp:127.0.0.1:{server.port}")
    assert (code, err) == (0, "")
    assert server.finish()[0] == 0
    copy = f"maildir:{tmp_path}/srv/jane/Maildir"
    assert fetch_all(source, copy) == fetch_all(source, "maildir:~/Maildir")


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl CLI missing", pytrace=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_backup_over_tls_verifies_the_server(tmp_path: Path, source: dict[str, str]) -> None:
    cert, key = self_signed(tmp_path)
    tls = ("--ssl-cert", str(cert), "--ssl-key", str(key))
    server = PydsyncServer(tmp_path / "srv", *tls)
    code, err = _backup(source, f"tcps:127.0.0.1:{server.port}")  # not trusted
    assert code == 75 and "certificate verify failed" in err, err
    server.finish()
    server = PydsyncServer(tmp_path / "srv", *tls)
    ca = ("-o", f"ssl_client_ca_file={cert}", "-D")
    code, err = _backup(source, f"tcps:127.0.0.1:{server.port}", *ca)
    assert code == 0, err
    assert server.finish()[0] == 0
    copy = f"maildir:{tmp_path}/srv/jane/Maildir"
    assert fetch_all(source, copy) == fetch_all(source, "maildir:~/Maildir")


def _raw_session(port: int, *lines: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        for line in lines:
            sock.sendall(line)
            time.sleep(0.05)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def test_server_refuses_a_bad_password_and_other_commands(tmp_path: Path) -> None:
    server = PydsyncServer(tmp_path / "srv")
    reply = _raw_session(server.port, CLIENT_VERSION, plain_auth_line("doveadm", "wrong"))
    assert reply == SERVER_VERSION + b"-\n-\n"
    assert server.finish()[0] == 0
    server = PydsyncServer(tmp_path / "srv")
    command = DoveadmCommand("", "jane", "mailbox", ("list",)).encode()
    reply = _raw_session(server.port, CLIENT_VERSION, plain_auth_line("doveadm", PASSWORD), command)
    assert reply == SERVER_VERSION + b"-\n+\n" + encode_packet(0, b"\n-\n")
    assert server.finish()[0] == 0


def test_client_reports_failed_authentication(tmp_path: Path, source: dict[str, str]) -> None:
    server = PydsyncServer(tmp_path / "srv")
    code, err = run(
        ["-o", "doveadm_password=wrong", "-o", "mail_location=maildir:~/Maildir",
         "backup", f"tcp:127.0.0.1:{server.port}"],
        source,
    )  # fmt: skip
    assert code == 75 and "authentication failed" in err
    server.finish()


def test_tcp_without_password_or_port_is_refused(source: dict[str, str]) -> None:
    code, err = run(["-o", "mail_location=maildir:~/Maildir", "backup", "tcp:mail"], source)
    assert code == 64 and "doveadm_port" in err


# -- real Dovecot -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_config(env: DovecotEnv, port: int) -> str:
    """A doveadm inet listener, static userdb (tests/data/vectors/tools/tcp-server.conf)."""
    root = env.root
    common = (
        f"base_dir = {root}/run\nstate_dir = {root}/state\nprotocols =\n"
        f"listen = 127.0.0.1\nlog_path = {root}/dovecot.log\n"
        "mail_uid = vmail\nmail_gid = vmail\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n"
        f"doveadm_password = {PASSWORD}\ndoveadm_port = {port}\nssl = no\n"
        "namespace inbox {\n  inbox = yes\n  separator = /\n}\n"
    )
    if is_24(env.version):
        return (
            "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n"
            + common
            + "mail_driver = maildir\nmail_path = ~/Maildir\n"
            + "passdb static {\n  fields {\n    nopassword = yes\n  }\n}\n"
            + "userdb static {\n  fields {\n    uid = vmail\n    gid = vmail\n"
            + f"    home = {root}/home/%{{user}}\n  }}\n}}\n"
            + f"service doveadm {{\n  inet_listener doveadm {{\n    port = {port}\n  }}\n}}\n"
        )
    return (
        common
        + "mail_location = maildir:~/Maildir\n"
        + "passdb {\n  driver = static\n  args = nopassword=y\n}\n"
        + f"userdb {{\n  driver = static\n  args = uid=vmail gid=vmail home={root}/home/%u\n}}\n"
        + f"service doveadm {{\n  inet_listener {{\n    port = {port}\n  }}\n}}\n"
    )


@pytest.fixture
def dovecot_server(dovecot_env: DovecotEnv) -> Iterator[int]:
    """A real `dovecot -F` with a doveadm inet listener; yields its port."""
    port = free_port()
    conf = dovecot_env.root / "server.conf"
    conf.write_text(server_config(dovecot_env, port))
    binary = shutil.which("dovecot", path=SAFE_PATH)
    assert binary is not None
    proc = subprocess.Popen(
        [binary, "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = dovecot_env.root / "dovecot.log"
                    text = log.read_text() if log.exists() else ""
                    out = proc.stdout.read() if proc.stdout else b""
                    pytest.fail(f"dovecot did not start: {out!r} {text}")
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.dovecot
def test_pydsync_backup_into_real_dovecot(
    dovecot_env: DovecotEnv, dovecot_server: int, tmp_path: Path
) -> None:
    dest = dovecot_env.user("dst")
    home = tmp_path / "src"
    materialise(home)
    env = {"USER": "dst", "HOME": str(home)}
    code, err = _backup(env, f"tcp:127.0.0.1:{dovecot_server}", "-D")
    assert code == 0, err
    assert "Debug: " in err  # the remote's debug log on channel L
    src, dst = snapshot(home), snapshot(dest)
    assert src == dst, "stores differ:\n" + diff(src, dst)
    code, err = _backup(
        {"USER": "nobody-here", "HOME": str(home)}, f"tcp:127.0.0.1:{dovecot_server}"
    )
    assert code != 0, err


@pytest.mark.dovecot
def test_real_doveadm_sync_to_pydsync_doveadm_server(
    dovecot_env: DovecotEnv, tmp_path: Path
) -> None:
    user = dovecot_env.user("a")
    user.mailbox_create("Work", subscribe=True)
    user.save("INBOX", b"Subject: one\n\nbody 1\n")
    user.save("Work", b"Subject: two\n\n.\n..dots\nbody 2\n")
    user.flags_add("INBOX", 1, "\\Seen")
    store = dovecot_env.root / "pydsync"
    server = PydsyncServer(store)
    proc = user.doveadm(
        "-o", f"doveadm_password={PASSWORD}", "sync", f"tcp:127.0.0.1:{server.port}",
        check=False, timeout=120,
    )  # fmt: skip
    code, err = server.finish()
    assert proc.returncode == 0, proc.stderr
    assert code == 0, err
    src, dst = snapshot(user), snapshot(store / "a")
    assert src == dst, "stores differ:\n" + diff(src, dst)
