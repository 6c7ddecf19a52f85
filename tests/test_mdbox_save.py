"""mdbox saves stream to disk before commit: memory stays flat whatever the transaction
holds, nothing is visible before commit, and a rollback, a failing body or a crash
leave no trace Dovecot would see (storage-formats.md §3.2, §3.7)."""

from __future__ import annotations

import hashlib
import io
import shutil
import tracemalloc
from pathlib import Path

import pytest

from pydsync_server.storage import dbox_file as dbox
from pydsync_server.storage.base import NewMessage
from pydsync_server.storage.mdbox import MdboxStorage

# A pattern with bare LFs, CRLFs and a CR at its end (the next LF pairs with it).
_PATTERN = b"".join(b"line %d of the body\n" % i for i in range(200)) + b"crlf\r\n\r"


class _Body(io.RawIOBase):
    """`size` bytes of a repeated pattern, made as read: no whole body in memory."""

    def __init__(self, size: int, fail_at: int = -1) -> None:
        super().__init__()
        self._size, self._pos, self._fail_at = size, 0, fail_at

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if 0 <= self._fail_at <= self._pos:
            raise OSError("the peer went away")
        n = min(len(buffer), self._size - self._pos)
        start = self._pos % len(_PATTERN)
        piece = (_PATTERN[start:] + _PATTERN * (n // len(_PATTERN) + 1))[:n]
        buffer[:n] = piece
        self._pos += n
        return n


def _whole(size: int) -> bytes:
    return (_PATTERN * (size // len(_PATTERN) + 1))[:size]


def _msg(uid: int, body: io.RawIOBase | bytes, guid: str = "") -> NewMessage:
    stream = io.BytesIO(body) if isinstance(body, bytes) else body
    return NewMessage(uid, guid or f"{uid:032x}", stream, received_date=1000)  # type: ignore[arg-type]


def _files(root: Path) -> dict[str, str]:
    """Every file under `root` and a digest of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_memory_stays_flat_while_one_transaction_saves_many_bodies(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m", rotate_size=4 << 20)
    count, size = 160, 200_000  # 32 MB in one transaction
    box = s.open_mailbox("INBOX")
    tracemalloc.start()
    try:
        with box.transaction() as t:
            for uid in range(1, count + 1):
                t.save(_msg(uid, _Body(size)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes while saving {count * size}"
    box = s.open_mailbox("INBOX")
    assert [m.uid for m in box.messages()] == list(range(1, count + 1))
    assert box.open_message(count).read() == _whole(size)
    whole = _whole(size)
    vsize = len(whole) + whole.count(b"\n") - whole.count(b"\r\n")
    for path in (tmp_path / "m/storage").glob("m.*"):
        walk = dbox.read_file(path)
        assert walk.ok and walk.end == path.stat().st_size
        assert {r.metadata.virtual_size for r in walk.records} == {vsize}


def test_nothing_is_visible_before_commit_and_rollback_leaves_no_trace(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m", rotate_size=300_000)
    box = s.open_mailbox("INBOX")
    with box.transaction() as t:
        t.save(_msg(1, b"Subject: old\n\nold\n"))
    before = _files(tmp_path / "m")
    m1 = tmp_path / "m/storage/m.1"
    m1_bytes = m1.read_bytes()
    t = s.open_mailbox("INBOX").transaction()
    for uid in range(2, 12):  # 2 MB: appended to m.1, then into new temp files
        t.save(_msg(uid, _Body(200_000)))
    during = _files(tmp_path / "m")
    changed = {name for name in during if during[name] != before.get(name)}
    assert {name for name in changed if ".temp." not in name} == {"storage/m.1"}
    assert any(".temp." in name for name in changed)
    assert m1.read_bytes()[: len(m1_bytes)] == m1_bytes  # only past the end the map knows
    other = MdboxStorage(tmp_path / "m")  # another reader sees the store as it was
    assert [m.uid for m in other.open_mailbox("INBOX").messages()] == [1]
    t.rollback()
    assert _files(tmp_path / "m") == before


def test_a_body_failing_midway_is_cut_off(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    box = s.open_mailbox("INBOX")
    with box.transaction() as t:
        t.save(_msg(1, _Body(50_000)))
        with pytest.raises(OSError):
            t.save(_msg(2, _Body(3_000_000, fail_at=2_500_000)))  # partly on disk already
        t.save(_msg(3, b"Subject: after\n\n"))
    box = s.open_mailbox("INBOX")
    assert {m.uid: box.open_message(m.uid).read() for m in box.messages()} == {
        1: _whole(50_000),
        3: b"Subject: after\n\n",
    }
    (path,) = (tmp_path / "m/storage").glob("m.*")
    walk = dbox.read_file(path)
    assert walk.ok and len(walk.records) == 2 and walk.end == path.stat().st_size


def test_a_stored_copy_is_shared_and_its_streamed_bytes_taken_back(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    s.create_mailbox("Work")
    shared = _whole(1_500_000)  # more than the write buffer: partly written, then cut
    with s.open_mailbox("INBOX").transaction() as t:
        t.save(_msg(1, shared, guid="a" * 32))
    with s.open_mailbox("Work").transaction() as t:
        t.save(_msg(1, b"Subject: new\n\n"))
        t.save(_msg(2, shared, guid="a" * 32))
        t.save(_msg(3, b"Subject: last\n\n"))
    refs = {r.map_uid: r.refcount for r in s.ctx.map.read().records.values()}
    assert refs == {1: 2, 2: 1, 3: 1}
    box = s.open_mailbox("Work")
    assert (
        box.open_message(2).read() == shared and box.open_message(3).read() == b"Subject: last\n\n"
    )
    for path in (tmp_path / "m/storage").glob("m.*"):
        walk = dbox.read_file(path)
        assert walk.ok and walk.end == path.stat().st_size
    assert sum(p.stat().st_size for p in (tmp_path / "m/storage").glob("m.*")) < 1_600_000


def test_a_crash_before_commit_loses_nothing_committed(tmp_path: Path) -> None:
    s = MdboxStorage(tmp_path / "m")
    with s.open_mailbox("INBOX").transaction() as t:
        t.save(_msg(1, b"Subject: kept\n\n"))
    t = s.open_mailbox("INBOX").transaction()
    for uid in range(2, 6):
        t.save(_msg(uid, _Body(600_000)))  # past the write buffer: on disk, uncommitted
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "m", crashed)  # what a crash at this point leaves
    t.rollback()
    c = MdboxStorage(crashed)
    box = c.open_mailbox("INBOX")
    assert [m.uid for m in box.messages()] == [1]
    assert box.open_message(1).read() == b"Subject: kept\n\n"
    with box.transaction() as t:  # m.1 ends past the map now: a new file is started
        t.save(_msg(2, b"Subject: next\n\n"))
    box = c.open_mailbox("INBOX")
    assert {m.uid: box.open_message(m.uid).read() for m in box.messages()} == {
        1: b"Subject: kept\n\n",
        2: b"Subject: next\n\n",
    }
