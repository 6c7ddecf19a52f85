"""`--dry-run`: the plan of a real sync, with both local stores byte for byte unchanged,
and a usage error (64) for remote destinations."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from pydsync_server.cli.dry_run import plan_lines, snapshot
from pydsync_server.cli.main import main
from pydsync_server.errors import UsageError
from pydsync_server.sample import materialise
from pydsync_server.storage.location import MailLocation
from pydsync_server.storage.observed import WriteEvent

FIXTURE = Path(__file__).parent / "data" / "dovecot-2.3.19-maildir.tar.gz"
MAIL = b"From: a@example.org\r\nSubject: %s\r\nMessage-ID: <%s@example.org>\r\n\r\nbody %s\r\n"


def run(tmp_path: Path, args: list[str]) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    env = {"USER": "jane", "HOME": str(tmp_path)}
    code = main(["-O", *args], stdout=out, stderr=err, environ=env)
    return code, out.getvalue(), err.getvalue()


def source(root: Path) -> list[str]:
    return ["-o", f"mail_location=maildir:{root}"]


def tree(*roots: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry under the roots: kind and content (file bytes, link target)."""
    found: dict[str, tuple[str, bytes]] = {}
    for root in roots:
        if not root.exists():
            continue
        for path in [root, *sorted(root.rglob("*"))]:
            key = str(path)
            if path.is_symlink():
                found[key] = ("link", os.readlink(path).encode())
            elif path.is_dir():
                found[key] = ("dir", oct(path.stat().st_mode).encode())
            else:
                found[key] = ("file", path.read_bytes())
    return found


def deliver(folder: Path, name: str) -> None:
    """A new message as an MDA writes it: into new/, outside pydsync."""
    (folder / "new" / f"1700000000.M1P1.{name}").write_bytes(MAIL % ((name.encode(),) * 3))


def plan(out: bytes) -> list[tuple[str, ...]]:
    return [tuple(line.split("\t")) for line in out.decode().splitlines()]


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two synced Maildirs, then changed on both sides by other programs."""
    a = materialise(tmp_path / "a")
    b = tmp_path / "b"
    assert run(tmp_path, [*source(a), "sync", f"maildir:{b}"])[0] == 0
    deliver(a, "new-on-a")
    flagged = next(p for p in (a / "cur").iterdir() if p.name.endswith(":2,"))
    flagged.rename(flagged.with_name(flagged.name + "F"))  # \Flagged added on a
    deliver(b / ".Work", "new-on-b")
    next(p for p in (b / "cur").iterdir() if p.name.endswith(":2,S")).unlink()  # expunged on b
    for sub in ("cur", "new", "tmp"):
        (b / ".Fresh" / sub).mkdir(parents=True)
    return a, b


def test_dry_run_leaves_both_stores_byte_identical(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    before = tree(a, b)
    code, out, err = run(tmp_path, [*source(a), "sync", "--dry-run", f"maildir:{b}"])
    assert code == 0, err
    assert tree(a, b) == before
    rows = plan(out)
    assert ("remote", "save", "INBOX") in [r[:3] for r in rows]
    assert ("local", "save", "Work") in [r[:3] for r in rows]
    assert ("local", "expunge", "INBOX") in [r[:3] for r in rows]
    assert ("local", "create", "Fresh") in [r[:3] for r in rows]
    assert any(r[:3] == ("remote", "flags", "INBOX") and r[4] == "+\\Flagged" for r in rows)
    assert all(len(r) == 5 for r in rows)


def test_plan_is_what_the_real_run_then_does(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    code, out, _ = run(tmp_path, [*source(a), "sync", "--dry-run", "--json", f"maildir:{b}"])
    assert code == 0
    dry = json.loads(out)  # with --json on stdout, the plan is inside the report
    assert dry["dry_run"] is True and dry["users"][0]["state"] is None
    report = tmp_path / "real.json"
    code, out, _ = run(tmp_path, [*source(a), "sync", f"--json={report}", f"maildir:{b}"])
    assert code == 0 and out == b""
    real = json.loads(report.read_text())
    assert real["dry_run"] is False
    planned, done = dry["users"][0], real["users"][0]
    assert planned["totals"] == done["totals"]
    # (a GUID a store allocates on its first open differs between runs)
    strip = [{k: v for k, v in c.items() if k != "detail"} for c in planned["mailbox_changes"]]
    assert strip == [{k: v for k, v in c.items() if k != "detail"} for c in done["mailbox_changes"]]
    kinds = [(w["side"], w["action"]) for w in planned["plan"]]
    assert kinds.count(("remote", "save")) == done["totals"]["remote"]["saved"] == 1
    assert kinds.count(("local", "save")) == done["totals"]["local"]["saved"] == 1
    assert kinds.count(("local", "expunge")) == done["totals"]["local"]["expunged"] == 1
    # and the real run did it: both sides hold the same three INBOX messages now
    assert count(a) == count(b) == 3


def count(folder: Path) -> int:
    return sum(1 for sub in ("cur", "new") for _ in (folder / sub).iterdir())


def test_dry_run_does_not_create_a_missing_destination(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    before = tree(a)
    code, out, _ = run(tmp_path, [*source(a), "backup", "--dry-run", f"maildir:{tmp_path}/new"])
    assert code == 0
    assert not (tmp_path / "new").exists()
    assert tree(a) == before
    rows = plan(out)
    saves = [r for r in rows if r[:2] == ("remote", "save")]
    assert len(saves) == 5  # the sample's five messages
    sizes = sorted(int(r[4].split()[0]) for r in saves)
    files = [p for p in a.rglob("*") if p.parent.name == "cur"]
    assert sizes == sorted(p.stat().st_size for p in files)
    assert {r[2] for r in rows if r[:2] == ("remote", "create")} == {
        "INBOX",
        "Work",
        "Archive/2023",
    }


def test_dovecot_written_store_is_not_touched(tmp_path: Path) -> None:
    """Dovecot's store has mail in new/ and no pydsync sidecar: a normal open writes both
    (uidlist, sidecar); a dry run must not."""
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path / "dovecot", filter="data")
    store = tmp_path / "dovecot" / "Maildir"
    before = tree(store)
    args = [*source(store), "backup", "--dry-run", f"maildir:{tmp_path}/copy"]
    code, out, err = run(tmp_path, args)
    assert code == 0, err
    assert tree(store) == before
    assert any(r[:2] == ("remote", "save") for r in plan(out))


@pytest.mark.parametrize(
    "destination",
    [["tcp:127.0.0.1:1"], ["ssh", "nowhere.invalid", "doveadm"], ["remote:nowhere.invalid"]],
)
def test_remote_destinations_are_refused(tmp_path: Path, destination: list[str]) -> None:
    a = materialise(tmp_path / "a")
    code, out, err = run(tmp_path, [*source(a), "backup", "--dry-run", *destination])
    assert code == 64
    assert "--dry-run works only with a local destination" in err
    assert out == b""


def test_many_users_plan_lines_name_the_user(tmp_path: Path) -> None:
    lines = []
    uid, gid = os.getuid(), os.getgid()
    for name in ("ann", "bob"):
        home = tmp_path / "home" / name
        materialise(home)
        lines.append(f"{name}:{{PLAIN}}x:{uid}:{gid}::{home}::userdb_mail=maildir:~/Maildir")
    (tmp_path / "passwd").write_text("\n".join(lines) + "\n")
    users = ["-o", "plugins=hooks.passwd_file", "-o", f"userdb_passwd_file={tmp_path}/passwd"]
    code, out, err = run(tmp_path, [*users, "backup", "-A", "--dry-run", "maildir:~/Backup"])
    assert code == 0, err
    rows = plan(out)
    assert {r[0] for r in rows} == {"ann", "bob"}
    assert all(len(r) == 6 for r in rows)
    assert not any((tmp_path / "home" / n / "Backup").exists() for n in ("ann", "bob"))


def test_snapshot_links_messages_and_copies_the_rest(tmp_path: Path) -> None:
    a = materialise(tmp_path / "a")
    location = MailLocation("maildir", str(a))
    with snapshot(location) as copy:
        root = Path(copy.path)
        message = next((root / "cur").iterdir())
        assert message.is_symlink() and message.resolve().parent == (a / "cur").resolve()
        assert not (root / "dovecot-uidlist").is_symlink()
        assert (root / "dovecot-uidlist").read_bytes() == (a / "dovecot-uidlist").read_bytes()
        for sub in ("", "cur", ".Work/cur"):  # directory times as in the original
            assert (root / sub).stat().st_mtime_ns == (a / sub).stat().st_mtime_ns
    assert not root.exists()


def test_snapshot_refuses_unknown_drivers() -> None:
    with pytest.raises(UsageError, match="supports maildir, sdbox and mdbox stores, not mbox"):
        with snapshot(MailLocation("mbox", "/nonexistent")):
            pass


@pytest.mark.parametrize("driver", ["sdbox", "mdbox"])
def test_dbox_stores_are_copied_whole_and_left_alone(tmp_path: Path, driver: str) -> None:
    a = materialise(tmp_path / "a")
    b = tmp_path / "b"
    assert run(tmp_path, [*source(a), "sync", f"{driver}:{b}"])[0] == 0
    deliver(a, "new-on-a")
    before = tree(a, b)
    code, out, err = run(tmp_path, [*source(a), "sync", "--dry-run", f"{driver}:{b}"])
    assert code == 0, err
    assert tree(a, b) == before
    assert [r[:3] for r in plan(out) if r[1] == "save"] == [("remote", "save", "INBOX")]
    with snapshot(MailLocation(driver, str(b))) as copy:
        assert not any(p.is_symlink() for p in Path(copy.path).rglob("*"))


def test_plan_line_format() -> None:
    events = [
        ("remote", WriteEvent("save", "INBOX", 4, "guid", 120)),
        ("local", WriteEvent("rename", "Old", detail="New")),
    ]
    assert plan_lines(events) == ["remote\tsave\tINBOX\t4\t120 bytes", "local\trename\tOld\t-\tNew"]


@pytest.mark.parametrize("option", ["-v", "--json", "--dry-run"])
def test_not_with_a_doveadm_server_running_the_command(tmp_path: Path, option: str) -> None:
    a = materialise(tmp_path / "a")
    args = [*source(a), "backup", "-S", f"{tmp_path}/no-socket", option, "maildir:/x"]
    code, out, err = run(tmp_path, args)
    assert (code, out) == (64, b"")
    assert "-v, --json and --dry-run can't be used with -S" in err
