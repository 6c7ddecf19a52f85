"""Remote destinations end to end through a real sshd (dsync-protocol.md §2.1, §2.2).

A private sshd (package openssh-server) listens on 127.0.0.1 with generated keys; the
master reaches it through `dsync_remote_cmd`, as `remote:`, `remoteprefix:` and bare
`[user@]host` destinations do. The remote end is pydsync dsync-server (with -U, with
--user-from-stdin, or behind a shell wrapper that reads the remoteprefix line), and one
test has the real `doveadm backup remote:` as the master. Without sshd, ssh or
doveadm the tests fail; they never skip.
"""

from __future__ import annotations

import io
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dovecot import DovecotEnv, DovecotUser, diff, snapshot

from pydsync_server.errors import IOStalledError, PeerClosedError, UsageError
from pydsync_server.sample import materialise
from pydsync_server.storage.base import NewMessage
from pydsync_server.storage.maildir import MaildirStorage
from pydsync_server.transport.process import read_user_line
from pydsync_server.transport.replicator import HANDSHAKE, notify_message, notify_replicator

REPO = Path(__file__).resolve().parent.parent
SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
RUN_TIMEOUT = 60
EXTRA_BODIES = [
    b"Subject: crlf\r\n\r\nline 1\r\n.\r\nline 3\r\n",
    b"Subject: no newline\n\nlast line",
    "Subject: 8bit\n\nÉté \xff\n".encode("latin-1"),
    b"Subject: big\n\n" + b"".join(b"%06d .\n" % i for i in range(40_000)),
]


# ---------------------------------------------------------------- the sshd


def _need(path: str, package: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} missing: apt-get install {package} (see .ci/run)", pytrace=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"sshd exited {proc.returncode}: {err}", pytrace=False)
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail("sshd did not start listening", pytrace=False)


@dataclass(frozen=True)
class Sshd:
    port: int
    key: Path  # the client's private key

    def ssh_words(self, key: Path | None = None) -> list[str]:
        """`ssh` with this server's port and key, no config, no host-key prompts."""
        return [
            SSH, "-F", "/dev/null", "-p", str(self.port), "-i", str(key or self.key),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        ]  # fmt: skip


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """sshd -D on 127.0.0.1:<free port>: root may log in with a generated key."""
    for path, package in ((SSHD, "openssh-server"), (SSH, "openssh-client")):
        _need(path, package)
    if os.geteuid() != 0:
        pytest.fail("the sshd tests log in as root and must run as root", pytrace=False)
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
        )
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
        "PermitRootLogin yes\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPrintMotd no\nLogLevel ERROR\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        _wait_for_port(port, proc, time.monotonic() + 10)
        yield Sshd(port, root / "client_key")
    finally:
        proc.terminate()
        proc.wait(10)


# ---------------------------------------------------------------- stores and runs


def fill_source(home: Path) -> Path:
    """The bundled sample plus awkward bodies (CRLF, dot lines, 8-bit, 300 KB)."""
    root = materialise(home)
    storage = MaildirStorage(root)
    try:
        box = storage.open_mailbox("Work")
        try:
            with box.transaction() as tx:
                uid = box.status().uid_next
                for i, body in enumerate(EXTRA_BODIES):
                    tx.save(
                        NewMessage(
                            uid=uid + i,
                            guid=f"{i + 1:032x}",
                            body=io.BytesIO(body),
                            flags=0x08 if i % 2 else 0,
                            keywords=frozenset({f"kw{i}"}),
                            received_date=1_700_000_000 + i,
                        )
                    )
        finally:
            box.close()
    finally:
        storage.close()
    return root


def store_view(root: Path) -> dict[str, object]:
    """Everything a backup must copy: mailboxes (GUID, UIDVALIDITY), subscriptions and,
    per message, UID, GUID, flags, keywords, received date and the exact body."""
    assert root.is_dir(), f"no store at {root}"
    storage = MaildirStorage(root)
    try:
        view: dict[str, object] = {"subscriptions": sorted(storage.subscriptions())}
        for entry in storage.list_mailboxes():
            if entry.guid is None:
                continue
            box = storage.open_mailbox(entry.vname)
            try:
                status = box.status()
                messages = []
                for msg in box.messages():
                    with box.open_message(msg.uid) as body:
                        data = body.read()
                    keywords = sorted(msg.keywords)
                    messages.append(
                        (msg.uid, msg.guid, msg.flags, keywords, msg.received_date, data)
                    )
                view[entry.vname] = (status.guid, status.uid_validity, messages)
            finally:
                box.close()
        return view
    finally:
        storage.close()


def remote_pydsync(*args: str, home: Path) -> str:
    """The remote side's command line: sshd gives it a bare environment, so HOME and
    PYTHONPATH are passed explicitly and Python is named by its absolute path."""
    words = ["env", f"HOME={home}", f"PYTHONPATH={REPO}", "PYDSYNC_CONFIG="]
    words += [sys.executable, "-m", "pydsync_server"]
    return " ".join([*words, *args])


def pydsync(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    base["PYDSYNC_CONFIG"] = ""  # not the host's dovecot.conf
    return subprocess.run(
        [sys.executable, "-m", "pydsync_server", *args],
        env={**base, **(env or {})},
        capture_output=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_ok(proc: subprocess.CompletedProcess[bytes]) -> None:
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


class Replicator:
    """A stand-in for Dovecot's replicator-doveadm socket: records what each client sent."""

    def __init__(self, base_dir: Path) -> None:
        self.path = base_dir / "replicator-doveadm"
        self.received: list[bytes] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        self._sock.listen(4)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                self.received.append(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: UNIX socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pyds-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- pydsync <-> pydsync


def test_backup_remote_login_host_with_replicator_notify(
    sshd: Sshd, tmp_path: Path, short_dir: Path
) -> None:
    """remote:root@host: `-l%{login}` and `-u%u` expand; the remote -U notifies the
    replicator after the session and never waits for a user line; so does the master's."""
    source = fill_source(tmp_path / "src")
    dest = tmp_path / "dst"
    replicator = Replicator(short_dir)
    server = remote_pydsync(
        f"-o mail_location=maildir:{dest}/%%u/Maildir -o base_dir={short_dir}",
        "dsync-server -u%u -U",
        home=tmp_path,
    )
    cmd = " ".join([*sshd.ssh_words(), "-l%{login} %{host}", server])
    try:
        proc = pydsync(
            "-o", f"mail_location=maildir:{source}", "-o", f"dsync_remote_cmd={cmd}",
            "-o", f"base_dir={short_dir}",
            "backup", "-f", "-U", "-u", "alice", "remote:root@127.0.0.1",
        )  # fmt: skip
        assert_ok(proc)
        assert store_view(dest / "alice" / "Maildir") == store_view(source)
        deadline = time.monotonic() + 5
        while len(replicator.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        replicator.close()
    # Both ends of a full sync: the slave learnt "full" from the master's handshake.
    assert replicator.received == [HANDSHAKE + b"NOTIFY\talice\tf\t\n"] * 2


def test_plain_user_at_host_and_missing_replicator(sshd: Sshd, tmp_path: Path) -> None:
    """`alice@host`: no login (ssh's own user), `%u` = alice; -U without a replicator
    socket is no error. Then an incremental run with a state copies a new message."""
    source = fill_source(tmp_path / "src")
    dest = tmp_path / "dst"
    server = remote_pydsync(
        f"-o mail_location=maildir:{dest}/%%u/Maildir -o base_dir={tmp_path}/none",
        "dsync-server -u%u -U",
        home=tmp_path,
    )
    cmd = " ".join([*sshd.ssh_words(), "-l%{login} %{host}", server])
    options = ["-o", f"mail_location=maildir:{source}", "-o", f"dsync_remote_cmd={cmd}"]
    first = pydsync(*options, "backup", "-s", "", "alice@127.0.0.1", env={"USER": "root"})
    assert_ok(first)
    assert first.stderr == b""
    assert store_view(dest / "alice" / "Maildir") == store_view(source)
    storage = MaildirStorage(source)
    try:
        box = storage.open_mailbox("INBOX")
        with box.transaction() as tx:
            tx.save(NewMessage(uid=box.status().uid_next, guid="f" * 32, body=io.BytesIO(b"\n")))
        box.close()
    finally:
        storage.close()
    state = first.stdout.decode().strip()
    second = pydsync(*options, "backup", "-s", state, "alice@127.0.0.1", env={"USER": "root"})
    assert_ok(second)
    assert store_view(dest / "alice" / "Maildir") == store_view(source)


def _wrapper(path: Path, dest: Path, home: Path) -> Path:
    """A remoteprefix: wrapper as §2.1 describes: read the user line, exec the server."""
    server = remote_pydsync(f"-o mail_location=maildir:{dest}/%u/Maildir", "", home=home)
    path.write_text(
        "#!/bin/sh\n"
        'IFS= read -r user || { echo "no user line" >&2; exit 64; }\n'
        f'exec {server} dsync-server -u "$user"\n'
    )
    path.chmod(0o755)
    return path


def test_remoteprefix_through_a_wrapper_script(sshd: Sshd, tmp_path: Path) -> None:
    """The user line carries USER (no -u): the wrapper serves that user's store."""
    source = fill_source(tmp_path / "src")
    dest = tmp_path / "dst"
    wrapper = _wrapper(tmp_path / "wrapper.sh", dest, tmp_path)
    cmd = " ".join([*sshd.ssh_words(), "-l%{login} %{host}", str(wrapper)])
    proc = pydsync(
        "-o", f"mail_location=maildir:{source}", "-o", f"dsync_remote_cmd={cmd}",
        "backup", "remoteprefix:root@127.0.0.1",
        env={"USER": "bob"},
    )  # fmt: skip
    assert_ok(proc)
    assert store_view(dest / "bob" / "Maildir") == store_view(source)


def test_remoteprefix_into_dsync_server_user_from_stdin(sshd: Sshd, tmp_path: Path) -> None:
    """--user-from-stdin takes the line byte-exactly (the protocol behind it intact), it
    wins over the remote USER (root, set by sshd), and mail_home is expanded for it."""
    source = fill_source(tmp_path / "src")
    dest = tmp_path / "dst"
    server = remote_pydsync(
        # %h, not ~: the remote shell would expand ~ to root's home itself.
        f"-o mail_home={dest}/%%u -o mail_location=maildir:%%h/Maildir",
        "dsync-server --user-from-stdin -U",
        home=tmp_path,
    )
    cmd = " ".join([*sshd.ssh_words(), "-l%{login} %{host}", server])
    proc = pydsync(
        "-o", f"mail_location=maildir:{source}", "-o", f"dsync_remote_cmd={cmd}",
        "backup", "-u", "carol", "remoteprefix:root@127.0.0.1",
    )  # fmt: skip
    assert_ok(proc)
    assert store_view(dest / "carol" / "Maildir") == store_view(source)
    assert sorted(p.name for p in dest.iterdir()) == ["carol"]


# ---------------------------------------------------------------- doveadm as the master


@pytest.mark.dovecot
@pytest.mark.parametrize(
    ("scheme", "server_options"),
    [("remote", "-u%{user} -U"), ("remoteprefix", "--user-from-stdin -U")],
)
def test_doveadm_backup_into_pydsync_over_ssh(
    sshd: Sshd, dovecot_env: DovecotEnv, scheme: str, server_options: str
) -> None:
    """`doveadm backup remote:root@127.0.0.1` (and remoteprefix:, whose user line pydsync
    takes with --user-from-stdin) with doveadm's own dsync_remote_cmd (run without PATH:
    absolute paths) into pydsync dsync-server over ssh; Dovecot reads both stores."""
    src, dst = dovecot_env.user("src"), dovecot_env.user("dst")
    _fill_with_doveadm(src)
    key = _key_for_doveadm(sshd, dovecot_env)
    server = " ".join(
        [
            "/usr/bin/env", f"HOME={dst.home}", f"PYTHONPATH={REPO}", "PYDSYNC_CONFIG=",
            sys.executable, "-m", "pydsync_server", f"-o mail_location=maildir:{dst.home}/Maildir",
            f"dsync-server {server_options}",
        ]
    )  # fmt: skip
    cmd = " ".join([*sshd.ssh_words(key), "-l%{login} %{host}", server])
    proc = src.doveadm(
        "-o", f"dsync_remote_cmd={cmd}", "backup", f"{scheme}:root@127.0.0.1", check=False
    )
    assert_ok(proc)
    left, right = snapshot(src), snapshot(dst)
    assert left == right, "stores differ:\n" + diff(left, right)
    assert not list(dst.mail_path.rglob("dovecot.index*"))  # pydsync wrote it


def _fill_with_doveadm(user: DovecotUser) -> None:
    user.mailbox_create("Work", "Archive/2024", subscribe=True)
    for body in EXTRA_BODIES:
        user.save("INBOX", body)
    user.save("Work", b"Subject: work\n\nbody\n")
    user.save("Archive/2024", b"Subject: old\n\n.\n..\n")
    user.flags_add("INBOX", 1, ["\\Seen", "\\Flagged", "$Label1"])
    user.flags_add("INBOX", 2, "\\Answered todo")


def _key_for_doveadm(sshd: Sshd, env: DovecotEnv) -> Path:
    """A copy of the client key that ssh accepts whether doveadm runs it as root or as
    vmail: owned by vmail, mode 0600, in a directory vmail can enter."""
    key = env.root / "ssh_key"
    shutil.copy(sshd.key, key)
    vmail = pwd.getpwnam("vmail")
    os.chown(key, vmail.pw_uid, vmail.pw_gid)
    key.chmod(0o600)
    return key


# ---------------------------------------------------------------- pieces, without ssh


def test_read_user_line_leaves_the_stream_behind_it() -> None:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"alice@example.org\nVERSION\tdsync\t3\t5\n")
        assert read_user_line(read_fd, timeout=5) == "alice@example.org"
        assert os.read(read_fd, 100) == b"VERSION\tdsync\t3\t5\n"
    finally:
        os.close(read_fd)
        os.close(write_fd)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"VERSION\tdsync\t3\t5\n", UsageError),  # the master sent no user line
        (b"\n", UsageError),
        (b"x" * 2000 + b"\n", UsageError),
        (b"alice", PeerClosedError),  # EOF before LF
    ],
)
def test_read_user_line_rejects(data: bytes, error: type[Exception]) -> None:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)
        os.close(write_fd)
        write_fd = -1
        with pytest.raises(error):
            read_user_line(read_fd, timeout=5)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_read_user_line_times_out() -> None:
    read_fd, write_fd = os.pipe()
    try:
        with pytest.raises(IOStalledError):
            read_user_line(read_fd, timeout=0.2)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_notify_message_escapes_and_marks_full_syncs() -> None:
    assert notify_message("a\tb", full=False, state="st") == (
        b"VERSION\treplicator-doveadm-client\t1\t0\nNOTIFY\ta\x01tb\t\tst\n"
    )
    assert notify_message("a", full=True, state="").endswith(b"NOTIFY\ta\tf\t\n")


def test_notify_replicator_failures_are_only_logged(tmp_path: Path) -> None:
    logged: list[str] = []
    notify_replicator(str(tmp_path / "absent"), "a", log=logged.append)
    assert logged == []  # no replicator running: silently ignored, as Dovecot does
    (tmp_path / "file").write_text("")
    notify_replicator(str(tmp_path / "file"), "a", log=logged.append)
    assert len(logged) == 1 and logged[0].startswith("Error: net_connect_unix(")
