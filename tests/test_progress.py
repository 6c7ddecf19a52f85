"""`-v` progress: throttled lines and one final line per mailbox on stderr, numbers
equal to what moved; stdout keeps only the `-s` state. Local, `pydsync dsync-server`
and real `doveadm dsync-server` destinations."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
from dovecot import DovecotEnv, snapshot

from pydsync_server.cli.main import main
from pydsync_server.cli.progress import Progress, Transfer, human_bytes, human_seconds
from pydsync_server.sample import materialise

REPO = Path(__file__).resolve().parent.parent
FINAL = re.compile(
    r"^dsync\((?P<user>[^)]*)\): progress: (?P<box>.+): done: (?P<n>\d+) messages "
    r"\((?P<sent>\d+) sent, (?P<received>\d+) received\), .+ in [\d.]+s, .+/s$"
)
LINE = re.compile(
    r"^dsync\([^)]*\): progress: (?P<box>.+): (?P<done>\d+)/(?P<total>\d+) messages "
    r"\(\d+ sent, \d+ received\), .+, .+/s, ETA (\?|\d+s|\d+m\d\ds|\d+h\d\dm)$"
)


def run(tmp_path: Path, args: list[str], user: str = "jane") -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    env = {"USER": user, "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    code = main(["-O", *args], stdout=out, stderr=err, environ=env)
    return code, out.getvalue(), err.getvalue()


def finals(err: str) -> dict[str, tuple[int, int, int]]:
    found = {}
    for line in err.splitlines():
        if match := FINAL.match(line):
            found[match["box"]] = (int(match["n"]), int(match["sent"]), int(match["received"]))
    return found


def message_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.parent.name in ("cur", "new") and p.is_file()]


def many(root: Path, count: int) -> None:
    """Add `count` messages to the INBOX of the Maildir at `root`, as an MDA would."""
    for i in range(count):
        body = b"Subject: %d\r\nMessage-ID: <%d@x>\r\n\r\n" % (i, i) + b"x" * 5000
        (root / "new" / f"1700000000.M{i}P1.host").write_bytes(body)


# -- the printer ---------------------------------------------------------------------------


def test_lines_are_throttled_but_final_lines_always_come() -> None:
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, "ann", clock=lambda: now[0], interval=0.5)
    transfer = Transfer(started=0.0, planned_sent=10)
    for i in range(10):
        now[0] = 0.1 * (i + 1)
        transfer.sent += 1
        transfer.bytes += 1000
        progress.update("INBOX", transfer)
    progress.finished("INBOX", transfer)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # at 0.1 s and 0.6 s, then the final line
    assert lines[0] == (
        "dsync(ann): progress: INBOX: 1/10 messages (1 sent, 0 received), 1000 B, 9.8 KiB/s, ETA 1s"
    )
    assert lines[1].startswith("dsync(ann): progress: INBOX: 6/10 messages")
    assert lines[2] == (
        "dsync(ann): progress: INBOX: done: 10 messages (10 sent, 0 received), "
        "9.8 KiB in 1.0s, 9.8 KiB/s"
    )


def test_eta_unknown_before_the_first_body() -> None:
    stream = io.StringIO()
    Progress(stream, "u", clock=lambda: 1.0).update("A", Transfer(0.0, planned_received=3))
    assert stream.getvalue().endswith("0/3 messages (0 sent, 0 received), 0 B, 0 B/s, ETA ?\n")


@pytest.mark.parametrize(
    ("count", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 << 30, "5.0 GiB")]
)
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (59, "59s"), (185, "3m05s")])
def test_human_seconds(seconds: float, text: str) -> None:
    assert human_seconds(seconds) == text


# -- real runs -----------------------------------------------------------------------------


def test_local_backup_progress_matches_the_store(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    many(a, 40)
    b = tmp_path / "b"
    code, out, err = run(
        tmp_path, ["-o", f"mail_location=maildir:{a}", "backup", "-v", "-s", ""] + [f"maildir:{b}"]
    )
    assert code == 0, err
    assert out.count(b"\n") == 1 and b"progress" not in out  # stdout: the state only
    done = finals(err)
    assert done == {"INBOX": (43, 43, 0), "Work": (1, 1, 0), "Archive/2023": (1, 1, 0)}
    assert sum(n for n, _, _ in done.values()) == len(message_files(b))
    progress = [line for line in err.splitlines() if not FINAL.match(line)]
    assert all(LINE.match(line) for line in progress), progress


def test_sync_progress_counts_both_directions(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    b = tmp_path / "b"
    assert run(tmp_path, ["-o", f"mail_location=maildir:{a}", "sync", f"maildir:{b}"])[0] == 0
    many(a, 3)
    many(b / ".Work", 2)
    code, _, err = run(tmp_path, ["-o", f"mail_location=maildir:{a}", "sync", "-v", f"maildir:{b}"])
    assert code == 0, err
    done = finals(err)
    assert done["INBOX"] == (3, 3, 0) and done["Work"] == (2, 0, 2)


def test_global_v_is_logging_not_progress(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    args = ["-v", "-o", f"mail_location=maildir:{a}", "backup", f"maildir:{tmp_path}/b"]
    code, _, err = run(tmp_path, args)
    assert code == 0 and "progress:" not in err


def test_command_destination_progress(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    many(a, 20)
    b = tmp_path / "b"
    server = [sys.executable, "-m", "pydsync_server", "-O", "-o"]
    server += [f"mail_location=maildir:{b}", "dsync-server"]
    code, out, err = run(tmp_path, ["-o", f"mail_location=maildir:{a}", "backup", "-v", *server])
    assert code == 0, err
    assert out == b""
    done = finals(err)
    assert done == {"INBOX": (23, 23, 0), "Work": (1, 1, 0), "Archive/2023": (1, 1, 0)}
    assert len(message_files(b)) == 25


@pytest.mark.dovecot
def test_progress_and_report_with_doveadm_as_the_remote(dovecot_env: DovecotEnv) -> None:
    """pydsync's master against `doveadm dsync-server`: the numbers match what Dovecot
    then holds and what it had saved."""
    src, dst = dovecot_env.user("src"), dovecot_env.user("dst")
    bodies = [b"Subject: %d\n\n" % i + b"line\n" * (i * 300) for i in range(6)]
    src.mailbox_create("Work", subscribe=True)
    for i, body in enumerate(bodies):
        src.save("INBOX" if i < 4 else "Work", body)
    report = dovecot_env.root / "report.json"
    args = ["-o", "mail_location=maildir:~/Maildir", "sync", "-v", f"--json={report}"]
    args += dst.dsync_server_destination()
    code, _, err = run(src.home, args, user="src")
    assert code == 0, err
    assert finals(err) == {"INBOX": (4, 4, 0), "Work": (2, 2, 0)}
    held = snapshot(dst)
    assert held == snapshot(src)
    user = json.loads(report.read_text())["users"][0]
    sent = user["totals"]["to_remote"]
    stored = sum(m.size for box in held.mailboxes for m in box.messages)  # Dovecot's bytes
    assert sent == {"messages": 6, "bytes": stored}
    # Dovecot's side gets a message: it comes back, byte for byte as Dovecot stored it
    dst.save("Work", b"Subject: from dovecot\n\nhello\n")
    code, _, err = run(src.home, args, user="src")
    assert code == 0, err
    assert finals(err)["Work"] == (1, 0, 1)
    user = json.loads(report.read_text())["users"][0]
    work = next(box for box in user["mailboxes"] if box["name"] == "Work")
    assert work["to_local"] == {"messages": 1, "bytes": len(dst.message_bytes("Work", 3))}
    assert work["local"]["saved"] == 1 and work["remote"] is None
