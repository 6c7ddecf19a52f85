"""Proves tests/dovecot.py on doveadm <-> doveadm, documenting Dovecot's own dsync behaviour.

pydsync's interoperability tests compare against what these tests show real Dovecot doing
(dsync-algorithm.md §4 table: backup reverts the destination, INBOX caveat).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import dovecot
import pytest
from dovecot import DovecotEnv, DovecotUser, diff, normalize_for_compare, snapshot

pytestmark = pytest.mark.dovecot

BIG = b"Subject: big\n\n" + b"".join(b"%07d " % i + b"x" * 71 + b"\n" for i in range(65_000))
BODIES = {
    "crlf": b"Subject: crlf\r\nFrom: a@example.org\r\n\r\nline 1\r\nline 2\r\n",
    "bare_lf": b"Subject: lf\nFrom: a@example.org\n\nline 1\nline 2\n",
    "dots": b"Subject: dots\n\nbefore\n.\n..two\n.leading\nafter\n",
    "leading_dot": b".Leading-dot: yes\nSubject: leading dot\n\nbody\n",
    "no_final_newline": b"Subject: no newline\n\nlast line without newline",
    "empty": b"",
    "eight_bit": "Subject: 8bit\n\nÉté ünïcode \xff\n".encode("latin-1"),
    "form_feed": b"Subject: ff\n\nx\f\nuid: 3\nsize.physical: 1\ntext:\n\f\n",
}


def _assert_same(a: dovecot.StoreSnapshot, b: dovecot.StoreSnapshot) -> None:
    assert a == b, "stores differ:\n" + diff(a, b)


# ---------------------------------------------------------------- pure helpers


def test_version_parsing_and_installed_version() -> None:
    assert dovecot.parse_version("2.3.19.1 (9b53102964)") == (2, 3, 19)
    assert dovecot.parse_version("2.4.1-4 (7d8c0e5759)") == (2, 4, 1)
    with pytest.raises(ValueError):
        dovecot.parse_version("garbage")
    dovecot.require_dovecot()
    assert dovecot.dovecot_version()[:2] in ((2, 3), (2, 4))


def test_require_dovecot_fails_without_doveadm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dovecot, "_find_binary", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="doveadm not found"):
        dovecot.require_dovecot()


def test_userdb_option_placement() -> None:
    v23, v24 = (2, 3, 19), (2, 4, 1)
    fetch = ["-f", "tab", "fetch", "uid", "mailbox", "INBOX", "all"]
    assert dovecot.with_userdb_option(v23, fetch) == fetch
    assert dovecot.with_userdb_option(v24, fetch) == [*fetch, "--no-userdb-lookup"]
    sync = ["-o", "x=y", "sync", "-1", "/path/dest.sh"]
    assert dovecot.with_userdb_option(v24, sync) == [
        "-o", "x=y", "sync", "--no-userdb-lookup", "-1", "/path/dest.sh",
    ]  # fmt: skip
    assert dovecot.with_userdb_option(v24, ["dsync-server", "-T", "5"]) == [
        "dsync-server", "--no-userdb-lookup", "-T", "5",
    ]  # fmt: skip
    assert dovecot.with_userdb_option(v24, ["dump", "/x"]) == ["dump", "/x"]


def test_location_options_and_config_per_version() -> None:
    v23, v24 = (2, 3, 19), (2, 4, 1)
    assert dovecot.location_options(v23, "maildir:~/M:LAYOUT=fs") == [
        "-o", "mail_location=maildir:~/M:LAYOUT=fs",
    ]  # fmt: skip
    opts = dovecot.location_options(v24, "maildir:~/M:LAYOUT=fs")
    assert opts[:6] == [
        "-o", "mail_driver=maildir", "-o", "mail_path=~/M", "-o", "mailbox_list_layout=fs",
    ]  # fmt: skip
    opts = dovecot.location_options(v24, "maildir:~/M:UTF-8:CONTROL=~/c:INDEX=~/i")
    assert opts[4:10] == [
        "-o", "mailbox_list_utf8=yes", "-o", "mail_control_path=~/c", "-o", "mail_index_path=~/i",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        dovecot.location_options(v24, "maildir:~/M:BOGUS=1")
    assert dovecot.config_text(v24).startswith("dovecot_config_version = 2.4.0\n")
    assert "mail_home = %{env:HOME}" in dovecot.config_text(v24)
    assert dovecot.config_text(v23).startswith("mail_location = maildir:~/Maildir\n")
    assert "dict file" in dovecot.config_text(v24, attributes=True)


# ---------------------------------------------------------------- reading stores exactly


def _maildir_file(user: DovecotUser, guid: str) -> Path:
    (found,) = [p for p in user.mail_path.glob("*/*") if p.name.split(":")[0] == guid]
    return found


def test_fetch_text_is_byte_exact(dovecot_env: DovecotEnv) -> None:
    user = dovecot_env.user("a")
    for body in BODIES.values():
        user.save("INBOX", body)
    snap = snapshot(user)
    messages = snap.mailbox("INBOX").messages
    assert [m.uid for m in messages] == list(range(1, len(BODIES) + 1))
    for msg, (kind, body) in zip(messages, BODIES.items(), strict=True):
        on_disk = _maildir_file(user, msg.guid).read_bytes()
        assert user.message_bytes("INBOX", msg.uid) == on_disk, kind
        assert msg.sha256 == hashlib.sha256(on_disk).hexdigest(), kind
        # Dovecot's maildir save stores LF line ends (mail_save_crlf=no); all else is kept.
        assert on_disk == body.replace(b"\r\n", b"\n"), kind


def test_wrong_maildir_size_makes_dovecot_fail(dovecot_env: DovecotEnv) -> None:
    """Dovecot trusts a maildir S= and refuses to read a file that is longer: a writer of
    maildir names must get S= right (storage-formats.md §1)."""
    user = dovecot_env.user("a")
    for sub in ("cur", "new", "tmp"):
        (user.mail_path / sub).mkdir(parents=True)
    (user.mail_path / "cur" / "1700000000.M1P1.host,S=5:2,S").write_bytes(b"Subject: x\n\nlong\n")
    with pytest.raises(dovecot.DoveadmError, match="size smaller than expected"):
        snapshot(user.home)


def test_body_framing_fallback(dovecot_env: DovecotEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the one-call framing does not check out, every body is fetched on its own."""
    user = dovecot_env.user("a")
    for body in BODIES.values():
        user.save("INBOX", body)
    bulk = snapshot(user)
    assert (
        dovecot._parse_pager_bodies(b"mailbox-guid: ab\nuid: 1\nsize.physical: 1\ntext:\nxy")
        is None
    )
    monkeypatch.setattr(dovecot, "_parse_pager_bodies", lambda data: None)
    assert snapshot(user) == bulk


def test_snapshot_reads_a_copy_and_leaves_the_store_alone(dovecot_env: DovecotEnv) -> None:
    user = dovecot_env.user("plain")
    for folder in ("", ".Work"):
        for sub in ("cur", "new", "tmp"):
            (user.mail_path / folder / sub).mkdir(parents=True)
    (user.mail_path / "cur" / "1700000000.M1P1.host:2,FS").write_bytes(b"Subject: 1\n\nx\n")
    (user.mail_path / ".Work" / "new" / "1700000001.M2P2.host").write_bytes(b"Subject: 2\n\n")
    (user.mail_path / "subscriptions").write_bytes(b"Work\n")
    before = {p: (p.stat().st_mode, p.stat().st_uid) for p in user.home.rglob("*")}

    snap = snapshot(user.home)

    assert {p: (p.stat().st_mode, p.stat().st_uid) for p in user.home.rglob("*")} == before
    assert not [p for p in user.home.rglob("dovecot*")]
    assert snap.mailbox_list == ("INBOX", "Work")
    assert snap.subscriptions == ("Work",)
    (inbox_msg,) = snap.mailbox("INBOX").messages
    assert (inbox_msg.guid, inbox_msg.flags) == ("1700000000.M1P1.host", ("\\Flagged", "\\Seen"))
    assert [m.guid for m in snap.mailbox("Work").messages] == ["1700000001.M2P2.host"]


def test_normalize_and_diff(dovecot_env: DovecotEnv) -> None:
    a, b = dovecot_env.user("a"), dovecot_env.user("b")
    for user in (a, b):
        user.save("INBOX", b"Subject: same\n\nbody\n")
    sa, sb = snapshot(a), snapshot(b)
    assert sa != sb  # different mailbox GUIDs, UIDVALIDITY and message GUIDs
    text = diff(sa, sb)
    assert "mailbox 'INBOX' guid" in text and "'INBOX' uid 1 guid" in text
    ignore = ("mailbox_guid", "uidvalidity", "message_guid")
    assert normalize_for_compare(sa, ignore) == normalize_for_compare(sb, ignore)
    assert diff(sa, sa) == ""
    with pytest.raises(ValueError):
        normalize_for_compare(sa, ("bogus",))


# ---------------------------------------------------------------- command destinations


def test_command_destination_clears_environment(dovecot_env: DovecotEnv) -> None:
    record = dovecot_env.root / "record"
    argv = ["/bin/sh", "-c", f'env > {record}.env; printf "%s\\n" "$@" > {record}.argv', "sh"]
    dest = dovecot_env.command_destination(argv, {"MARK": "1"})
    user = dovecot_env.user("a")
    proc = user.sync(dest, "-T", "10", check=False)
    assert proc.returncode != 0  # the recorder speaks no dsync
    # doveadm appended "dsync-server" (dsync-protocol.md §2.1) and the script passed it on.
    assert record.with_suffix(".argv").read_text() == "dsync-server\n"
    seen = dict(line.split("=", 1) for line in record.with_suffix(".env").read_text().split())
    assert seen["MARK"] == "1" and seen["PATH"] == dovecot.SAFE_PATH
    assert not {"USER", "HOME", "DOVECONF_ENV", "MAIL_LOCATION"} & seen.keys()


def test_command_destination_does_not_double_dsync_server(dovecot_env: DovecotEnv) -> None:
    (script,) = dovecot_env.command_destination([sys.executable, "-m", "x", "dsync-server"])
    text = Path(script).read_text()
    assert text.rstrip().endswith("x dsync-server")
    assert os.access(script, os.X_OK)


# ---------------------------------------------------------------- doveadm backup/sync


def _fill(a: DovecotUser) -> None:
    a.mailbox_create("Work", "Été/Sub", "Archive/2024", subscribe=True)
    a.mailbox_create("Work/Projects", "Trash")
    a.subscribe("Ghost")  # a subscription without a mailbox
    for body in BODIES.values():
        a.save("INBOX", body)
    a.save("INBOX", BIG)
    for i in range(4):
        a.save("Work", b"Subject: work %d\n\nwork body\n" % i)
    a.save("Été/Sub", "Subject: été\n\nunicode folder\n".encode())
    a.save("Archive/2024", BODIES["dots"])
    a.expunge("Work", 2)  # a UID gap
    a.flags_add("INBOX", 1, ["\\Seen", "\\Flagged", "$Label1"])
    a.flags_add("INBOX", 2, "\\Answered todo NonJunk")
    a.flags_add("INBOX", 3, "\\Draft")
    a.flags_replace("Work", 3, "\\Deleted $Label2")


@pytest.fixture
def backed_up(dovecot_env: DovecotEnv) -> tuple[DovecotUser, DovecotUser]:
    """Users a (filled) and b after a first `doveadm backup` a -> b."""
    a, b = dovecot_env.user("a"), dovecot_env.user("b")
    _fill(a)
    proc = a.backup(b.dsync_server_destination())
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    return a, b


def test_backup_copies_everything(backed_up: tuple[DovecotUser, DovecotUser]) -> None:
    a, b = backed_up
    sa = snapshot(a)
    _assert_same(sa, snapshot(b))
    # The comparison covers what it claims to: spot-check the filled content.
    assert sa.subscriptions == ("Archive/2024", "Ghost", "Work", "Été/Sub")
    assert {"Work/Projects", "Trash", "Été/Sub", "Archive/2024"} <= set(sa.mailbox_list)
    inbox = sa.mailbox("INBOX")
    assert len(inbox.messages) == len(BODIES) + 1
    assert inbox.messages[0].keywords == ("$Label1",)
    assert max(m.size for m in inbox.messages) == len(BIG)
    assert [m.uid for m in sa.mailbox("Work").messages] == [1, 3, 4]
    assert sa.mailbox("Work").uidnext == 5


def test_incremental_backup_after_source_changes(
    backed_up: tuple[DovecotUser, DovecotUser],
) -> None:
    a, b = backed_up
    a.save("INBOX", b"Subject: new\n\nnew mail\n")
    a.flags_remove("INBOX", 1, "\\Flagged")
    a.flags_add("INBOX", 4, "\\Seen $Label3")
    a.expunge("INBOX", 2)
    a.mailbox_create("New", subscribe=True)
    a.mailbox_rename("Work/Projects", "Work/Proj2")
    a.mailbox_delete("Trash")
    a.unsubscribe("Ghost")
    proc = a.backup(b.dsync_server_destination())
    assert proc.returncode == 0
    sa = snapshot(a)
    _assert_same(sa, snapshot(b))
    assert "Work/Proj2" in sa.mailbox_list and "Trash" not in sa.mailbox_list


def test_backup_reverts_destination_changes(
    backed_up: tuple[DovecotUser, DovecotUser],
) -> None:
    a, b = backed_up
    before = snapshot(a)
    b.save("Work", b"Subject: only on b\n\nx\n")  # UIDNEXT above the source's: recreated
    b.flags_add("INBOX", 2, "\\Flagged onlyb")
    b.flags_remove("INBOX", 1, "\\Seen")
    b.mailbox_create("OnlyB")
    b.mailbox_rename("Été/Sub", "Renamed")
    b.mailbox_delete("Trash")
    b.unsubscribe("Work")
    b.subscribe("AlsoGhost")
    assert diff(before, snapshot(b))
    proc = a.backup(b.dsync_server_destination())
    assert proc.returncode == 0, proc.stderr
    _assert_same(before, snapshot(b))
    _assert_same(before, snapshot(a))


def test_backup_needs_two_runs_after_destination_expunge(
    backed_up: tuple[DovecotUser, DovecotUser],
) -> None:
    """A message the source has but the destination lost: mailbox deleted, exit 75, next run
    recreates it (dsync-algorithm.md §3.6, "is missing locally")."""
    a, b = backed_up
    b.expunge("Work", 3)
    first = a.backup(b.dsync_server_destination(), check=False)
    assert first.returncode == 75
    # 2.3: "Deleting mailbox 'Work': UID=3 ... is missing locally";
    # 2.4: "Import mailbox Work: Deleting UID=3 ... is missing locally".
    assert b"UID=3 GUID=" in first.stderr and b"is missing locally" in first.stderr
    assert "Work" not in [box.name for box in snapshot(b).mailboxes]
    a.backup(b.dsync_server_destination())
    _assert_same(snapshot(a), snapshot(b))


def test_backup_cannot_revert_new_mail_in_destination_inbox(dovecot_env: DovecotEnv) -> None:
    """Dovecot's caveat (dsync-algorithm.md §4): INBOX is emptied, then can't be deleted."""
    a, b = dovecot_env.user("a"), dovecot_env.user("b")
    a.save("INBOX", BODIES["bare_lf"])
    a.backup(b.dsync_server_destination())
    b.save("INBOX", BODIES["dots"])
    for _ in range(2):
        proc = a.backup(b.dsync_server_destination(), check=False)
        assert proc.returncode == 75
        assert b"INBOX can't be deleted" in proc.stderr
        assert snapshot(b).mailbox("INBOX").messages == ()


def test_two_way_sync_merges_both_sides(backed_up: tuple[DovecotUser, DovecotUser]) -> None:
    a, b = backed_up
    a.save("Work", b"Subject: from a\n\n")
    b.save("Archive/2024", b"Subject: from b\n\n")
    b.flags_add("INBOX", 1, "\\Answered")
    b.mailbox_create("FromB", subscribe=True)
    assert a.sync(b.dsync_server_destination()).returncode == 0
    sa, sb = snapshot(a), snapshot(b)
    _assert_same(sa, sb)
    assert "FromB" in sa.subscriptions
    assert sa.mailbox("INBOX").messages[0].flags == ("\\Answered", "\\Flagged", "\\Seen")
    assert len(sa.mailbox("Work").messages) == 4
    assert len(sa.mailbox("Archive/2024").messages) == 2


def _work_pair(env: DovecotEnv) -> tuple[DovecotUser, DovecotUser]:
    a, b = env.user("a"), env.user("b")
    a.mailbox_create("Work")
    a.save("Work", b"Subject: common\n\n")
    a.backup(b.dsync_server_destination())
    return a, b


def test_two_way_sync_renumbers_uid_conflicts(dovecot_env: DovecotEnv) -> None:
    """Same UID, different mail on each side: both sides end with both mails under new UIDs."""
    a, b = _work_pair(dovecot_env)
    a.save("Work", b"Subject: from a\n\n")  # uid 2 on a
    b.save("Work", b"Subject: from b1\n\n")  # uid 2 on b
    b.save("Work", b"Subject: from b2\n\n")  # uid 3 on b
    a.sync(b.dsync_server_destination())
    sa = snapshot(a)
    _assert_same(sa, snapshot(b))
    by_hash = {m.sha256: m.uid for m in sa.mailbox("Work").messages}
    uid_of = {s: by_hash[hashlib.sha256(b"Subject: %s\n\n" % s).hexdigest()]
              for s in (b"common", b"from a", b"from b1", b"from b2")}  # fmt: skip
    assert (uid_of[b"common"], uid_of[b"from b2"]) == (1, 3)
    # The two conflicting mails get UIDs 4 and 5; their order varies between runs.
    assert {uid_of[b"from a"], uid_of[b"from b1"]} == {4, 5}
    assert sa.mailbox("Work").uidnext == 6


def test_two_way_sync_skips_mailbox_whose_state_looks_equal(dovecot_env: DovecotEnv) -> None:
    """One save on each side leaves equal UIDNEXT/HIGHESTMODSEQ/count: dsync compares only
    that state, calls the mailboxes equal and syncs nothing (exit 0), in 2.3 and 2.4."""
    a, b = _work_pair(dovecot_env)
    a.save("Work", b"Subject: from a\n\n")
    b.save("Work", b"Subject: from b\n\n")
    assert a.sync(b.dsync_server_destination()).returncode == 0
    sa, sb = snapshot(a), snapshot(b)
    assert [m.uid for m in sa.mailbox("Work").messages] == [1, 2]
    assert [m.uid for m in sb.mailbox("Work").messages] == [1, 2]
    assert sa.mailbox("Work").messages[1].sha256 != sb.mailbox("Work").messages[1].sha256


@pytest.mark.parametrize(
    "location",
    ["maildir:~/Maildir", "maildir:~/Maildir:LAYOUT=fs", "mdbox:~/mdbox", "sdbox:~/sdbox"],
)
def test_backup_into_each_location(dovecot_env: DovecotEnv, location: str) -> None:
    a = dovecot_env.user("a")
    b = dovecot_env.user("b", location=location)
    a.mailbox_create("Work/Sub", "Été", subscribe=True)
    for body in BODIES.values():
        a.save("Work/Sub", body)
    a.flags_add("Work/Sub", 2, "\\Seen $Label1")
    a.backup(b.dsync_server_destination())
    _assert_same(snapshot(a), snapshot(b))
    assert b.mail_path.is_dir()
    if not location.startswith("maildir:"):
        assert not (b.home / "Maildir").exists()
    if location.endswith("LAYOUT=fs"):
        assert (b.mail_path / "Work" / "Sub").is_dir()
    # b's own store, read back with its location, round-trips through doveadm itself.
    c = dovecot_env.user("c", location=location)
    b.backup(c.dsync_server_destination())
    if dovecot.is_24(dovecot_env.version) and location != "maildir:~/Maildir":
        # 2.4.1: the source's directory-only parent "Work" becomes a real mailbox on the
        # destination; the next backup deletes it ("Mailbox doesn't exist" on the source).
        assert diff(snapshot(b), snapshot(c)) == "  mailbox 'Work': only right"
        b.backup(c.dsync_server_destination())
    _assert_same(snapshot(b), snapshot(c))


def test_attributes_are_synced(tmp_path: Path) -> None:
    dovecot.require_dovecot()
    with DovecotEnv(tmp_path, attributes=True) as env:
        a, b = env.user("a"), env.user("b")
        a.save("INBOX", BODIES["bare_lf"])
        a.metadata_set("INBOX", "/private/comment", "hello world")
        a.sync(b.dsync_server_destination())
        assert b.metadata_get("INBOX", "/private/comment") == "hello world"
