"""The recording half the disk drivers' transactions share (storage/recording.py): each
request is checked the same way in every driver, and a commit with nothing to do
leaves the store's files as they were."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from pydsync_server.errors import MailError, StorageError
from pydsync_server.storage.base import MailboxStatus, NewMessage, Storage, Transaction
from pydsync_server.storage.maildir import MaildirStorage
from pydsync_server.storage.mdbox import MdboxStorage
from pydsync_server.storage.recording import Ops
from pydsync_server.storage.sdbox import SdboxStorage

DRIVERS: dict[str, Callable[[Path], Storage]] = {
    "maildir": lambda root: MaildirStorage(root),
    "sdbox": lambda root: SdboxStorage(root),
    "mdbox": lambda root: MdboxStorage(root),
}


@pytest.fixture(params=sorted(DRIVERS))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    s = DRIVERS[request.param](tmp_path / "store")
    s.create_mailbox("INBOX")
    with s.open_mailbox("INBOX").transaction() as t:
        t.save(NewMessage(1, "", io.BytesIO(b"Subject: one\r\n\r\nbody\r\n")))
    return s


def _tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


BAD_REQUESTS: dict[str, Callable[[Transaction], None]] = {
    "uidvalidity 0": lambda t: t.set_uid_validity(0),
    "uidvalidity 2^32": lambda t: t.set_uid_validity(1 << 32),
    "uidnext 2^32": lambda t: t.raise_uid_next(1 << 32),
    "first recent -1": lambda t: t.raise_first_recent_uid(-1),
    "zero guid": lambda t: t.set_guid(bytes(16)),
    "short guid": lambda t: t.set_guid(b"\x01" * 15),
    "keyword space": lambda t: t.update_flags(1, add_keywords=frozenset({"a b"})),
    "keyword tab": lambda t: t.update_flags(1, add_keywords=frozenset({"a\tb"})),
    "empty keyword": lambda t: t.update_flags(1, add_keywords=frozenset({""})),
    "saved keyword": lambda t: t.save(
        NewMessage(5, "", io.BytesIO(b"\r\n"), keywords=frozenset({"x\ry"}))
    ),
    "attribute type": lambda t: t.set_attribute("x", "key", "v", 0),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_requests_are_refused_as_params(storage: Storage, name: str) -> None:
    t = storage.open_mailbox("INBOX").transaction()
    with pytest.raises(StorageError) as err:
        BAD_REQUESTS[name](t)
    assert err.value.mail_error == MailError.PARAMS
    t.rollback()


def test_taken_uids_are_refused(storage: Storage) -> None:
    t = storage.open_mailbox("INBOX").transaction()
    t.save(NewMessage(4, "", io.BytesIO(b"\r\n")))
    t.move(1, 6)
    bad_requests: list[Callable[[], None]] = [
        lambda: t.save(NewMessage(1, "", io.BytesIO(b"\r\n"))),  # below UIDNEXT
        lambda: t.save(NewMessage(6, "", io.BytesIO(b"\r\n"))),  # a move's target
        lambda: t.move(1, 4),  # a save's UID
        lambda: t.move(1, 0xFFFFFFFF),  # no UID left after it
    ]
    for bad in bad_requests:
        with pytest.raises(StorageError) as err:
            bad()
        assert err.value.mail_error == MailError.NOTPOSSIBLE
    t.rollback()


def test_finished_transaction_refuses_every_request(storage: Storage) -> None:
    t = storage.open_mailbox("INBOX").transaction()
    t.commit()
    requests: list[Callable[[], None]] = [
        lambda: t.expunge(1),
        lambda: t.raise_highest_modseq(5),
        lambda: t.set_attribute("p", "k", None, 0),
        lambda: t.update_flags(1, add_flags=1),
    ]
    for request in requests:
        with pytest.raises(StorageError, match="already finished"):
            request()


def test_empty_commit_leaves_the_files_alone(storage: Storage, tmp_path: Path) -> None:
    box = storage.open_mailbox("INBOX")
    st = box.status()
    t = box.transaction()
    t.raise_uid_next(st.uid_next)
    t.raise_highest_modseq(st.highest_modseq)
    t.raise_first_recent_uid(st.first_recent_uid)
    before = _tree_digest(tmp_path / "store")
    t.commit()
    assert _tree_digest(tmp_path / "store") == before
    box.refresh()
    assert box.status() == st


def test_raises_above_the_start_are_work() -> None:
    start = MailboxStatus(b"\x01" * 16, 7, uid_next=5, messages=4, first_recent_uid=3,
                          highest_modseq=9)  # fmt: skip
    assert Ops(uid_next=5, highest_modseq=9, first_recent_uid=3).is_empty(start)
    busy = [Ops(uid_next=6), Ops(highest_modseq=10), Ops(first_recent_uid=4), Ops(uid_validity=7),
            Ops(expunges=[9]), Ops(attributes={("p", "k"): (None, 0)})]  # fmt: skip
    assert not any(ops.is_empty(start) for ops in busy)
