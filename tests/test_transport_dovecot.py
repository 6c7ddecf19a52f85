"""Transport against the real `doveadm dsync-server`: session, rawlog format, stall, stderr."""

from __future__ import annotations

import pytest
from dovecot import DovecotEnv
from rawlog_parse import RECORD, parse_rawlog

from pydsync_server.errors import IOStalledError, PeerClosedError
from pydsync_server.protocol.items import (
    END_OF_LIST,
    Done,
    Finish,
    Handshake,
    Item,
    MailboxDelete,
)
from pydsync_server.transport.process import RemoteProcess, spawn_remote
from pydsync_server.transport.stream import StreamChannel

pytestmark = pytest.mark.dovecot

MASTER_HANDSHAKE = Handshake(
    hostname="pymaster",
    sync_type="f",
    send_mail_requests=True,
    hashed_headers=("Date", "Message-ID"),
    alt_char="_",
)


def start(env: DovecotEnv, *options: str, **kwargs: object) -> tuple[RemoteProcess, list[str]]:
    log: list[str] = []
    argv = env.user("b").dsync_server_argv(*options)
    return spawn_remote(argv, log=log.append, **kwargs), log  # type: ignore[arg-type]


def recv_until(channel: StreamChannel, kind: type) -> list[Item]:
    items = [channel.recv()]
    while not isinstance(items[-1], kind):
        items.append(channel.recv())
    return items


def test_minimal_session_and_rawlogs_match_dovecots(dovecot_env: DovecotEnv) -> None:
    """Appendix A.2 with no mailboxes: both bursts cross, F + X end it, exit 0."""
    raw_dir = dovecot_env.root / "raw"
    raw_dir.mkdir(mode=0o777)
    raw_dir.chmod(0o777)  # doveadm writes its rawlog as vmail
    theirs, ours = raw_dir / "dovecot", dovecot_env.root / "ours"
    remote, log = start(dovecot_env, "-r", str(theirs), rawlog=str(ours))
    channel = StreamChannel(remote.stream)
    channel.send(MASTER_HANDSHAKE)
    slave_hello = channel.recv()
    assert isinstance(slave_hello, Handshake) and slave_hello.hostname
    assert channel.peer_minor_version == 5
    channel.send(END_OF_LIST)  # mailbox tree
    channel.send(MailboxDelete("/"))
    slave_delete = recv_until(channel, MailboxDelete)[-1]
    assert isinstance(slave_delete, MailboxDelete) and slave_delete.hierarchy_sep == "/"
    channel.send(END_OF_LIST)  # no mailboxes: the session ends
    assert recv_until(channel, Done)[-2:] == [Finish(), Done()]
    channel.close(send_done=False)
    assert remote.finish() == 0
    assert log == []
    their_log = theirs.read_bytes()
    assert RECORD.match(their_log) and RECORD.match(ours.read_bytes())
    got, want = parse_rawlog(ours.read_bytes()), parse_rawlog(their_log)
    assert got["O"] == want["I"] and got["I"] == want["O"]
    assert got["O"].startswith(b"VERSION\tdsync\t3\t5\n")


def test_dovecot_stalls_on_a_silent_master_and_stderr_reaches_the_log(
    dovecot_env: DovecotEnv,
) -> None:
    remote, log = start(dovecot_env, "-T", "1")
    channel = StreamChannel(remote.stream)  # sends its burst but never a handshake
    assert isinstance(channel.recv(), Handshake)
    with pytest.raises(PeerClosedError, match=r"^read\(remote\) failed: EOF"):
        channel.recv()
    assert remote.finish() == 75
    assert any("I/O has stalled, no activity for 1 seconds" in line for line in log), log
    assert log[-1] == "Remote command returned error 75"


def test_our_stall_timeout_against_a_waiting_dovecot(dovecot_env: DovecotEnv) -> None:
    remote, _ = start(dovecot_env, timeout=1)
    channel = StreamChannel(remote.stream)
    assert isinstance(channel.recv(), Handshake)
    with pytest.raises(IOStalledError, match="no activity for 1 seconds"):
        channel.recv()  # the slave waits for our handshake, which we never send
    channel.close(send_done=False)
    assert remote.finish() != 0
