"""Two brains over real pipes: brain + codec + transport together."""

from __future__ import annotations

import os
import threading

import pytest

from pydsync_server.brain.run import run_master, run_slave
from pydsync_server.brain.settings import SyncMode, SyncResult, SyncSettings
from pydsync_server.protocol.channel import Channel
from pydsync_server.storage.memory import MemoryStorage
from pydsync_server.transport.duplex import DuplexStream
from pydsync_server.transport.stream import StreamChannel


def channel_pair() -> tuple[StreamChannel, StreamChannel]:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    return (
        StreamChannel(DuplexStream(r1, w2, timeout=20), name="slave"),
        StreamChannel(DuplexStream(r2, w1, timeout=20), name="master"),
    )


def run_pair(master: MemoryStorage, slave: MemoryStorage, settings: SyncSettings) -> SyncResult:
    master_channel, slave_channel = channel_pair()
    slave_results: list[SyncResult] = []

    def serve(channel: Channel) -> None:
        slave_results.append(run_slave(slave, channel, hostname="slave"))

    thread = threading.Thread(target=serve, args=(slave_channel,))
    thread.start()
    result = run_master(master, master_channel, settings)
    thread.join(30)
    assert slave_results and slave_results[0].exit_code == 0, slave_results
    return result


def filled() -> MemoryStorage:
    store = MemoryStorage()
    store.create_mailbox("Work/Sub")
    store.set_subscribed("Work/Sub", True)
    store.deliver("INBOX", b"Subject: a\r\n\r\n.\r\n..x\r\n", flags=0x08, keywords=("$Label1",))
    store.deliver("INBOX", b".first line is a dot\n")
    store.deliver("Work/Sub", b"no newline at end")
    store.deliver("Work/Sub", b"")
    store.deliver("Work/Sub", os.urandom(3 << 20))
    return store


@pytest.mark.parametrize("mode", [SyncMode.BACKUP, SyncMode.BACKUP_REVERSE])
def test_backup_over_pipes(mode: SyncMode) -> None:
    source, dest = filled(), MemoryStorage()
    master, slave = (source, dest) if mode is SyncMode.BACKUP else (dest, source)
    settings = SyncSettings(mode=mode, state="", hostname="master")
    first = run_pair(master, slave, settings)
    assert first.exit_code == 0, first.errors
    assert dest.snapshot() == source.snapshot()
    source.client_set_flags("INBOX", 2, 0x02, ("new",))
    source.client_expunge("Work/Sub", 1)
    source.deliver("INBOX", b"Subject: later\n\nx\n")
    settings = SyncSettings(mode=mode, state=first.state, hostname="master")
    second = run_pair(master, slave, settings)
    assert second.exit_code == 0, second.errors
    assert dest.snapshot() == source.snapshot()
