"""Bad input to `pydsync dsync-server`: one-line error, Dovecot's exit code, store intact."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pydsync_server.protocol.codec import Encoder
from pydsync_server.protocol.items import (
    END_OF_LIST,
    Handshake,
    Item,
    MailboxDelete,
    MailboxTreeNode,
)
from pydsync_server.storage.base import NewMessage
from pydsync_server.storage.maildir import MaildirStorage
from pydsync_server.storage.maildir_summary import SUMMARY_NAME

VECTORS = Path(__file__).resolve().parent / "data" / "vectors"
REPO = Path(__file__).resolve().parent.parent


def run_server(home: Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "USER": "u"}
    env["PYTHONPATH"] = str(REPO)
    env["PYDSYNC_CONFIG"] = ""  # not the host's dovecot.conf
    argv = [sys.executable, "-m", "pydsync_server", "-o", "mail_location=maildir:~/Maildir"]
    return subprocess.run(
        [*argv, "dsync-server", "-T", "20"],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def tree_digest(root: Path) -> dict[str, str]:
    """Every file of the store with its content hash (pydsync's own tracker included;
    not the pydsync-summary status cache, which any read may refresh, as Dovecot's
    reads refresh its index)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != SUMMARY_NAME
    }


@pytest.fixture
def home(tmp_path: Path) -> Path:
    store = MaildirStorage(tmp_path / "Maildir")
    store.create_mailbox("Work")
    for box, body in (("INBOX", b"Subject: a\n\nkept\n"), ("Work", b"Subject: b\n\nkept too\n")):
        mailbox = store.open_mailbox(box)
        with mailbox.transaction() as tx:
            tx.save(NewMessage(uid=1, guid="", body=_bytes_io(body), received_date=1_700_000_000))
    store.close()
    # A first session that only reads, so the tracker is settled before the digest.
    run_server(tmp_path, b"")
    return tmp_path


def _bytes_io(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def master_stream(*items: Item) -> bytes:
    encoder = Encoder()
    return encoder.preamble() + b"".join(encoder.encode(item) for item in items)


def handshake() -> Handshake:
    return Handshake(
        hostname="master",
        sync_type="c",
        send_mail_requests=True,
        backup_recv=True,
        hashed_headers=("Date", "Message-ID"),
        alt_char="_",
    )


def assert_failed_cleanly(
    proc: subprocess.CompletedProcess[bytes], home: Path, before: dict[str, str]
) -> None:
    assert proc.returncode == 75, proc.stderr
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    assert lines and all("Error:" in line for line in lines), lines
    assert tree_digest(home / "Maildir") == before


@pytest.mark.parametrize(
    "stdin",
    [
        pytest.param(b"garbage instead of a version line\n", id="garbage"),
        pytest.param(b"VERSION\tdsync\t2\t0\n", id="wrong-major"),
        pytest.param(b"VERSION\tdsync\t3\t5\n", id="eof-after-version"),
        pytest.param(master_stream(handshake()) + b"Qunknown\titem\n", id="unknown-item"),
        pytest.param(master_stream(handshake()) + b"NINBOX\ty\tnot-a-gu", id="truncated-item"),
        pytest.param(
            master_stream(handshake()) + b"N" + b"x" * (11 << 20) + b"\n", id="oversized-line"
        ),
        pytest.param(master_stream(handshake()) + b"Bnothex\t1\t1\t0\t1\t1\t0\n", id="bad-guid"),
    ],
)
def test_protocol_garbage(home: Path, stdin: bytes) -> None:
    before = tree_digest(home / "Maildir")
    assert_failed_cleanly(run_server(home, stdin), home, before)


def test_stream_cut_mid_message_saves_nothing(tmp_path: Path) -> None:
    """The real master stream of vector a, cut inside the first mail body."""
    data = (VECTORS / "a_initial_sync" / "to-server").read_bytes()
    cut = data[: data.index(b"this is message one") + 5]
    proc = run_server(tmp_path, cut)
    assert proc.returncode == 75, proc.stderr
    store = MaildirStorage(tmp_path / "Maildir")
    assert store.open_mailbox("INBOX").messages() == []
    assert not list((tmp_path / "Maildir" / "tmp").iterdir())


def test_whole_recorded_master_stream_is_accepted(tmp_path: Path) -> None:
    data = (VECTORS / "a_initial_sync" / "to-server").read_bytes()
    proc = run_server(tmp_path, data)
    assert proc.returncode == 0, proc.stderr
    store = MaildirStorage(tmp_path / "Maildir")
    assert [m.uid for m in store.open_mailbox("INBOX").messages()] == [1, 2, 3]


HOSTILE = [
    ("..",),
    ("a", ".."),
    (".",),
    ("cur",),
    ("x\x00y",),
    ("tab\there",),
    ("sl/ash",),
    ("bad\udcffutf8",),
    ("dot.inside",),
    ("~tilde",),
]


def test_hostile_mailbox_names_stay_inside_the_store(home: Path) -> None:
    nodes: list[Item] = [
        MailboxTreeNode(name=name, existence="y", mailbox_guid=f"{i + 1:032x}", uid_validity=5)
        for i, name in enumerate(HOSTILE)
    ]
    stdin = master_stream(
        handshake(), *nodes, END_OF_LIST, MailboxDelete(hierarchy_sep="/"), END_OF_LIST
    )
    outside = set(home.parent.iterdir())
    proc = run_server(home, stdin)
    assert proc.returncode == 0, proc.stderr
    assert set(home.parent.iterdir()) == outside
    store = MaildirStorage(home / "Maildir")
    names = {e.vname for e in store.list_mailboxes() if e.guid is not None}
    assert len(names) >= len(HOSTILE)
    for name in names:
        store.check_name(name)  # every created name is a valid one
        assert "\0" not in name and ".." not in name.split("/")
    for path in (home / "Maildir").rglob("*"):
        assert path.resolve().is_relative_to((home / "Maildir").resolve())
