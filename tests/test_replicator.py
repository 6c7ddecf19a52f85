"""Dovecot's replicator keeps a pydsync store in step (issue 5, "done when").

A real Dovecot 2.3 runs as a daemon in a temporary base_dir with the notify and
replication plugins, the aggregator, the replicator and the doveadm service; its user's
`mail_replica` points at pydsync, reached either through `dsync_remote_cmd` over ssh
(`remote:root@127.0.0.1`, `pydsync dsync-server` behind a private sshd) or over the
doveadm TCP protocol (`tcp:127.0.0.1:PORT`, `pydsync doveadm-server`). Syncs are
triggered both by `doveadm replicator replicate -f` and by saving mail (the notify
plugin tells the aggregator); each round waits until `doveadm replicator status` shows
a successful sync newer than the trigger, then compares both stores read by Dovecot.

Dovecot 2.4 removed replication (no replication plugin, replicator or aggregator; see
/work/shared/spec/dovecot-2.4-notes.md): there these tests skip, saying so.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dovecot import SAFE_PATH, DovecotEnv, DovecotUser, diff, dovecot_version, snapshot
from dovecot_config import is_24
from test_remote_ssh import _key_for_doveadm, sshd  # noqa: F401 (sshd: the fixture)

pytestmark = pytest.mark.dovecot

REPO = Path(__file__).resolve().parent.parent
SSHD = "/usr/sbin/sshd"
PASSWORD = "replica-secret"
START_TIMEOUT = 30.0
SYNC_TIMEOUT = 90.0
USER = "alice"


def _need_replication() -> None:
    if is_24(dovecot_version()):
        pytest.skip(
            "Dovecot 2.4 removed replication: no replication plugin, replicator or "
            "aggregator service exists to configure (2.4.1 ships none of them)"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_config(root: Path, replica: str, remote_cmd: str = "") -> str:
    """Dovecot 2.3 config of the replicating server (replication plugin docs, 2.3)."""
    lines = [
        f"base_dir = {root}/run",
        f"state_dir = {root}/state",
        f"log_path = {root}/dovecot.log",
        "protocols =",
        "listen = 127.0.0.1",
        "ssl = no",
        "mail_uid = vmail",
        "mail_gid = vmail",
        "first_valid_uid = 0",
        "first_valid_gid = 0",
        "mail_location = maildir:~/Maildir",
        "mail_plugins = $mail_plugins notify replication",
        "namespace inbox {\n  inbox = yes\n  separator = /\n}",
        "passdb {\n  driver = static\n  args = nopassword=y\n}",
        f"userdb {{\n  driver = static\n  args = uid=vmail gid=vmail home={root}/home/%u\n}}",
        f"doveadm_password = {PASSWORD}",
        # The replicator runs `doveadm sync -d` through the doveadm service's socket.
        "service replicator {\n  process_min_avail = 1\n"
        "  unix_listener replicator-doveadm {\n    mode = 0600\n  }\n}",
        "service aggregator {\n  fifo_listener replication-notify-fifo {\n    mode = 0666\n"
        "  }\n  unix_listener replication-notify {\n    mode = 0666\n  }\n}",
        "replication_full_sync_interval = 1h",
        f"plugin {{\n  mail_replica = {replica}\n}}",
    ]
    if remote_cmd:
        lines.append(f"dsync_remote_cmd = {remote_cmd}")
    return "\n".join(lines) + "\n"


@dataclass
class Replicating:
    """A running Dovecot whose user `alice` replicates to the pydsync store `replica_home`."""

    env: DovecotEnv
    user: DovecotUser
    replica_home: Path

    def doveadm(self, *args: str) -> str:
        return self.user.doveadm(*args).stdout.decode()

    def status(self) -> dict[str, str]:
        """The user's row of `doveadm -f tab replicator status` ({} before it is known)."""
        lines = self.doveadm("-f", "tab", "replicator", "status", USER).splitlines()
        if len(lines) < 2:
            return {}
        return dict(zip(lines[0].split("\t"), lines[1].split("\t"), strict=False))

    def wait_synced(self, since: float) -> None:
        """Until the replicator reports a successful sync that ended at or after `since`
        (its "success sync" column is HH:MM:SS ago, whole seconds)."""
        deadline = time.monotonic() + SYNC_TIMEOUT
        row: dict[str, str] = {}
        while time.monotonic() < deadline:
            row = self.status()
            if row.get("failed") == "y":
                pytest.fail(f"replication failed: {row}\n{self.log()}", pytrace=False)
            ago = _seconds(row.get("success sync", "-"))
            if row.get("priority") == "none" and ago is not None and time.time() - ago >= since:
                return
            time.sleep(0.2)
        pytest.fail(f"no successful sync since the trigger: {row}\n{self.log()}", pytrace=False)

    def log(self) -> str:
        path = self.env.root / "dovecot.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"

    def assert_replica_equal(self) -> None:
        """Both stores equal. A change's notification reaches the replicator through the
        aggregator asynchronously, so the sync that `wait_synced` saw may have started
        before the last change: then the next one must bring the replica along."""
        deadline = time.monotonic() + SYNC_TIMEOUT
        while True:
            mine, theirs = snapshot(self.user), snapshot(self.replica_home)
            if mine == theirs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert mine == theirs, "stores differ:\n" + diff(mine, theirs) + "\n" + self.log()


def _seconds(text: str) -> int | None:
    """`HH:MM:SS` (how long ago) -> seconds; `-` (never) -> None."""
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    hours, minutes, seconds = (int(p) for p in parts)
    return hours * 3600 + minutes * 60 + seconds


def _start_dovecot(env: DovecotEnv) -> subprocess.Popen[bytes]:
    """`dovecot -F -c <env.config>`, waiting until the sockets the test uses exist."""
    binary = shutil.which("dovecot", path=SAFE_PATH)
    assert binary is not None, "dovecot binary missing"
    proc = subprocess.Popen(
        [binary, "-F", "-c", str(env.config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    run = env.root / "run"
    sockets = [run / name for name in ("replicator-doveadm", "doveadm-server", "auth-userdb")]
    deadline = time.monotonic() + START_TIMEOUT
    while not all(path.exists() for path in sockets):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            out = proc.stdout.read() if proc.stdout else b""
            pytest.fail(f"dovecot did not start: {out!r}", pytrace=False)
        time.sleep(0.1)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def replica_root(dovecot_env: DovecotEnv) -> Path:
    _need_replication()
    root = dovecot_env.root / "pydsync"
    root.mkdir(mode=0o755)
    return root


def _replicating(
    env: DovecotEnv, replica_root: Path, replica: str, remote_cmd: str = ""
) -> Iterator[Replicating]:
    """Start the daemon (its config replaces the env's daemonless one, so every
    `user.doveadm` talks to it) and stop it afterwards."""
    user = env.user(USER)
    env.config.write_text(daemon_config(env.root, replica, remote_cmd))
    proc = _start_dovecot(env)
    try:
        yield Replicating(env, user, replica_root / USER)
    finally:
        _stop(proc)


# ---------------------------------------------------------------- the two transports


@pytest.fixture
def via_tcp(dovecot_env: DovecotEnv, replica_root: Path) -> Iterator[Replicating]:
    """`mail_replica = tcp:127.0.0.1:PORT` with `pydsync doveadm-server` listening."""
    port = _free_port()
    argv = [
        sys.executable, "-m", "pydsync_server", "-O", "-o", f"doveadm_password={PASSWORD}",
        "-o", f"mail_home={replica_root}/%u", "-o", "mail_location=maildir:~/Maildir",
        "doveadm-server", "-T", "60", "-l", f"127.0.0.1:{port}",
    ]  # fmt: skip
    env = {"PATH": SAFE_PATH, "PYTHONPATH": str(REPO), "PYDSYNC_CONFIG": ""}
    server = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        _wait_for_port(port, server)
        yield from _replicating(dovecot_env, replica_root, f"tcp:127.0.0.1:{port}")
    finally:
        _stop(server)
        if server.stderr is not None:
            server.stderr.close()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"pydsync doveadm-server exited {proc.returncode}: {err}", pytrace=False)
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail("pydsync doveadm-server did not listen", pytrace=False)


@pytest.fixture
def via_ssh(
    request: pytest.FixtureRequest, dovecot_env: DovecotEnv, replica_root: Path
) -> Iterator[Replicating]:
    """`mail_replica = remote:root@127.0.0.1`; `dsync_remote_cmd` = ssh to a private sshd
    running `pydsync dsync-server -u%u` (the sshd fixture of test_remote_ssh.py)."""
    if not os.access(SSHD, os.X_OK):
        pytest.skip(f"{SSHD} missing (package openssh-server): the ssh transport needs it")
    ssh = request.getfixturevalue("sshd")
    key = _key_for_doveadm(ssh, dovecot_env)
    server = [
        "/usr/bin/env", f"HOME={replica_root}/%u", f"PYTHONPATH={REPO}", "PYDSYNC_CONFIG=",
        # An absolute location: the remote shell would expand `~` after `=` itself.
        sys.executable, "-m", "pydsync_server",
        "-o", f"mail_location=maildir:{replica_root}/%u/Maildir", "dsync-server", "-u%u",
    ]  # fmt: skip
    remote_cmd = " ".join([*ssh.ssh_words(key), "-l%{login}", "%{host}", *server])
    yield from _replicating(dovecot_env, replica_root, "remote:root@127.0.0.1", remote_cmd)


# ---------------------------------------------------------------- the scenario


def _replicate_rounds(rep: Replicating) -> None:
    """Round 1: a full sync asked of the replicator. Round 2: changes, then a save that
    the notify plugin reports. Round 3: an expunge, a rename and a forced sync."""
    user = rep.user
    user.mailbox_create("Work", "Archive/2024", subscribe=True)
    user.save("INBOX", b"Subject: one\n\nbody 1\n")
    user.save("Work", b"Subject: two\n\n.\n..dots\nbody 2\n")
    user.flags_add("INBOX", 1, ["\\Seen", "$Label1"])
    time.sleep(1.1)  # any earlier success is now at least a second old
    since = time.time()
    rep.doveadm("replicator", "replicate", "-f", USER)
    rep.wait_synced(since)
    rep.assert_replica_equal()

    time.sleep(1.1)
    since = time.time()
    user.flags_add("INBOX", 1, "\\Flagged")
    user.save("Archive/2024", b"Subject: old\n\nbody 3\n")  # notify -> aggregator -> replicator
    rep.wait_synced(since)
    rep.assert_replica_equal()

    time.sleep(1.1)
    since = time.time()
    user.expunge("Work", 1)
    user.mailbox_rename("Archive/2024", "Archive/2023")
    rep.doveadm("replicator", "replicate", USER)
    rep.wait_synced(since)
    rep.assert_replica_equal()


def test_dovecot_replicates_to_pydsync_over_tcp(via_tcp: Replicating) -> None:
    _replicate_rounds(via_tcp)
    assert not list(via_tcp.replica_home.rglob("dovecot.index*"))  # pydsync wrote it


def test_dovecot_replicates_to_pydsync_over_ssh(via_ssh: Replicating) -> None:
    _replicate_rounds(via_ssh)
    assert not list(via_ssh.replica_home.rglob("dovecot.index*"))
