"""`--json`: the run report's numbers against what really moved, for local and command
destinations and multi-user runs; the schema's fixed fields; stdout stays one kind."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pydsync_server.cli.main import main
from pydsync_server.cli.report import SCHEMA, exit_class
from pydsync_server.sample import materialise
from pydsync_server.storage.base import NewMessage
from pydsync_server.storage.location import MailLocation, open_storage
from pydsync_server.storage.memory import MemoryStorage
from pydsync_server.storage.observed import ObservedStorage, WriteEvent

REPO = Path(__file__).resolve().parent.parent
MAIL = b"From: a@example.org\r\nSubject: %s\r\nMessage-ID: <%s@example.org>\r\n\r\nbody %s\r\n"


def run(tmp_path: Path, args: list[str]) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    env = {"USER": "jane", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    code = main(["-O", *args], stdout=out, stderr=err, environ=env)
    return code, out.getvalue(), err.getvalue()


def source(root: Path) -> list[str]:
    return ["-o", f"mail_location=maildir:{root}"]


def message_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.parent.name in ("cur", "new") and p.is_file()]


def deliver(folder: Path, name: str) -> bytes:
    body = MAIL % ((name.encode(),) * 3)
    (folder / "new" / f"1700000000.M1P1.{name}").write_bytes(body)
    return body


def uids(root: Path, vname: str) -> dict[str, int]:
    """GUID -> UID of one mailbox, as pydsync's own store reads it."""
    store = open_storage(MailLocation("maildir", str(root)), clock=time.time, hostname="h")
    try:
        box = store.open_mailbox(vname)
        try:
            return {info.guid: info.uid for info in box.messages()}
        finally:
            box.close()
    finally:
        store.close()


def report_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    return data


def test_local_backup_counts_what_landed(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    b = tmp_path / "b"
    path = tmp_path / "r.json"
    code, out, err = run(
        tmp_path, [*source(a), "backup", "-s", "", f"--json={path}", f"maildir:{b}"]
    )
    assert code == 0, err
    data = report_of(path)
    assert (data["command"], data["exit_code"], data["exit_class"]) == ("backup", 0, "ok")
    [user] = data["users"]
    assert user["state"] == out.decode().strip() != ""  # the -s state, also on stdout
    landed = message_files(b)
    total = user["totals"]
    assert total["to_remote"] == {"messages": 5, "bytes": sum(p.stat().st_size for p in landed)}
    assert total["to_local"] == {"messages": 0, "bytes": 0}
    assert len(landed) == total["remote"]["saved"] == 5
    assert total["remote"]["saved_bytes"] == total["to_remote"]["bytes"]
    assert set(total["local"].values()) == {0}
    by_name = {box["name"]: box for box in user["mailboxes"]}
    assert {n: b_["to_remote"]["messages"] for n, b_ in by_name.items()} == {
        "INBOX": 3,
        "Work": 1,
        "Archive/2023": 1,
    }
    assert all(len(box["guid"]) == 32 and box["duration"] >= 0 for box in by_name.values())
    created = {c["mailbox"] for c in user["mailbox_changes"] if c["action"] == "create"}
    assert created == {"INBOX", "Work", "Archive/2023"}
    assert user["remote_observed"] is True and user["errors"] == []


def test_two_way_counts_each_direction_flags_and_expunges(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    b = tmp_path / "b"
    assert run(tmp_path, [*source(a), "sync", f"maildir:{b}"])[0] == 0
    to_b = deliver(a, "to-b")
    to_a = deliver(b / ".Work", "to-a")
    answered = next(p for p in (b / "cur").iterdir() if p.name.endswith(":2,"))
    answered.rename(answered.with_name(answered.name + "R"))  # \Answered set on b
    seen = next(p for p in (a / "cur").iterdir() if p.name.endswith(":2,S"))
    seen.unlink()  # expunged on a
    path = tmp_path / "r.json"
    assert run(tmp_path, [*source(a), "sync", f"--json={path}", f"maildir:{b}"])[0] == 0
    user = report_of(path)["users"][0]
    boxes = {box["name"]: box for box in user["mailboxes"]}
    inbox, work = boxes["INBOX"], boxes["Work"]
    assert inbox["to_remote"] == {"messages": 1, "bytes": len(to_b)}
    assert work["to_local"] == {"messages": 1, "bytes": len(to_a)}
    assert inbox["local"]["flags_changed"] == 1 and inbox["remote"]["flags_changed"] == 0
    assert inbox["remote"]["expunged"] == 1 and inbox["local"]["expunged"] == 0
    assert inbox["remote"]["saved"] == 1 and work["local"]["saved"] == 1
    assert len(message_files(a)) == len(message_files(b)) == 6  # 5 + 2 new - 1 expunged


def test_uid_conflicts_are_counted_as_renumbers(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    b = tmp_path / "b"
    assert run(tmp_path, [*source(a), "sync", f"maildir:{b}"])[0] == 0
    deliver(a, "only-a")  # both get UID 4: one of them must move
    deliver(b, "only-b")
    before = {"local": uids(a, "INBOX"), "remote": uids(b, "INBOX")}
    path = tmp_path / "r.json"
    assert run(tmp_path, [*source(a), "sync", f"--json={path}", f"maildir:{b}"])[0] == 0
    after = {"local": uids(a, "INBOX"), "remote": uids(b, "INBOX")}
    assert after["local"] == after["remote"] and len(after["local"]) == 5
    inbox = next(b_ for b_ in report_of(path)["users"][0]["mailboxes"] if b_["name"] == "INBOX")
    for side in ("local", "remote"):
        moved = [g for g, uid in before[side].items() if after[side][g] != uid]
        assert inbox[side]["uid_renumbers"] == len(moved), side
    assert inbox["local"]["uid_renumbers"] + inbox["remote"]["uid_renumbers"] >= 1


def test_command_destination_report_on_stdout(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    b = tmp_path / "b"
    server = [sys.executable, "-m", "pydsync_server", "-O", "-o"]
    server += [f"mail_location=maildir:{b}", "dsync-server"]
    code, out, err = run(tmp_path, [*source(a), "backup", "-s", "", "--json", *server])
    assert code == 0, err
    data = json.loads(out)  # stdout holds the report only, the state is inside
    [user] = data["users"]
    assert user["state"] and user["remote_observed"] is False
    landed = message_files(b)
    total = user["totals"]
    assert total["to_remote"] == {"messages": 5, "bytes": sum(p.stat().st_size for p in landed)}
    assert total["remote"] is None and all(box["remote"] is None for box in user["mailboxes"])
    assert user["destination"] == " ".join(server)


def test_many_users_one_report_with_failures(tmp_path: Path) -> None:
    lines = []
    uid, gid = os.getuid(), os.getgid()
    for name in ("ann", "bob"):
        materialise(tmp_path / "home" / name)
        home = tmp_path / "home" / name
        lines.append(f"{name}:{{PLAIN}}x:{uid}:{gid}::{home}::userdb_mail=maildir:~/Maildir")
    cyd = tmp_path / "home" / "cyd"
    lines.append(f"cyd:{{PLAIN}}x:{uid}:{gid}::{cyd}::userdb_mail=bogus:~/Maildir")
    (tmp_path / "passwd").write_text("\n".join(lines) + "\n")
    users = ["-o", "plugins=hooks.passwd_file", "-o", f"userdb_passwd_file={tmp_path}/passwd"]
    path = tmp_path / "r.json"
    args = [*users, "backup", "-A", "--workers", "3", f"--json={path}", "maildir:~/Backup"]
    code, out, _ = run(tmp_path, args)
    assert code == 64 and out == b""
    data = report_of(path)
    assert (data["exit_code"], data["exit_class"]) == (64, "usage")
    by_user = {u["user"]: u for u in data["users"]}
    assert sorted(by_user) == ["ann", "bob", "cyd"]
    assert by_user["cyd"]["exit_class"] == "usage" and by_user["cyd"]["errors"]
    for name in ("ann", "bob"):
        landed = message_files(tmp_path / "home" / name / "Backup")
        assert by_user[name]["totals"]["to_remote"]["messages"] == len(landed) == 5
        assert by_user[name]["exit_code"] == 0


def test_unknown_user_is_in_the_report(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("")
    users = ["-o", "plugins=hooks.passwd_file", "-o", f"userdb_passwd_file={tmp_path}/passwd"]
    path = tmp_path / "r.json"
    code, _, _ = run(tmp_path, [*users, "backup", "-u", "zed", f"--json={path}", "maildir:/x"])
    assert code == 67
    [user] = report_of(path)["users"]
    assert (user["user"], user["exit_code"], user["exit_class"]) == ("zed", 67, "nouser")


def test_failed_run_still_reports(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    path = tmp_path / "r.json"
    code, _, err = run(tmp_path, [*source(a), "backup", f"--json={path}", f"maildir:{a}"])
    assert code != 0 and "same directory" in err
    data = report_of(path)
    assert data["exit_code"] == code and data["users"][0]["exit_code"] == code


def test_report_file_replaced_atomically(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    path = tmp_path / "r.json"
    path.write_text("old")
    assert run(tmp_path, [*source(a), "backup", f"--json={path}", f"maildir:{tmp_path}/b"])[0] == 0
    assert report_of(path)["exit_code"] == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.json")] == []


@pytest.mark.parametrize(
    ("code", "name"), [(0, "ok"), (2, "changes_during_sync"), (75, "tempfail")]
)
def test_exit_classes(code: int, name: str) -> None:
    assert exit_class(code) == name


def test_observed_store_reports_committed_writes_only() -> None:
    events: list[WriteEvent] = []
    store = ObservedStorage(MemoryStorage(), events.append)
    store.create_mailbox("Box")
    box = store.open_mailbox("Box")
    tx = box.transaction()
    tx.save(NewMessage(uid=1, guid="g1", body=io.BytesIO(b"abc")))
    tx.rollback()
    assert [e.kind for e in events] == ["create"]
    with box.transaction() as tx:
        tx.save(NewMessage(uid=1, guid="g1", body=io.BytesIO(b"abc")))
        tx.update_flags(1, min_modseq=5)  # a modseq raise alone is no flag change
    box.refresh()
    with box.transaction() as tx:
        tx.save(NewMessage(uid=2, guid="g1", body=box.open_message(1)))
        tx.update_flags(1, add_flags=0x08, add_keywords=frozenset({"$Label1"}))
    box.refresh()
    with box.transaction() as tx:
        tx.expunge(1)
    found = [(e.kind, e.uid, e.detail, e.size) for e in events[1:]]
    assert found == [
        ("save", 1, "g1", 3),
        ("copy", 2, "from Box UID 1", 3),
        ("flags", 1, "+\\Seen +$Label1", 0),
        ("expunge", 1, "", 0),
    ]
