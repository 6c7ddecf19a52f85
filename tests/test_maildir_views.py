"""The folder view a commit hands to its mailbox (instead of a rescan) must equal
what a fresh scan of the disk shows, and an unchanged folder is not rescanned."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pydsync_server.storage import maildir_mailbox
from pydsync_server.storage.base import Mailbox, NewMessage
from pydsync_server.storage.maildir import MaildirStorage
from pydsync_server.storage.maildir_summary import SUMMARY_NAME

OPS = st.lists(
    st.tuples(
        st.sampled_from(["save", "flags", "expunge", "move", "attr", "foreign"]),
        st.integers(0, 20),
        st.integers(0, 0x1F),
        st.frozensets(st.sampled_from(["a", "$b", "NonJunk"])),
    ),
    min_size=1,
    max_size=12,
)


def _view(box: Mailbox) -> tuple[object, ...]:
    assert isinstance(box, maildir_mailbox.MaildirMailbox)
    return (
        sorted((uid, m.subdir, m.filename) for uid, m in box.plan.messages.items()),
        box.status(),
        list(box.messages()),
        box.changes_since(0),
        box.history_start(),
        [(a.type, a.key, a.value, a.modseq) for a in box.attributes()],
    )


def _fresh_view(root: Path) -> tuple[object, ...]:
    (root / SUMMARY_NAME).unlink(missing_ok=True)
    return _view(MaildirStorage(root).open_mailbox("INBOX"))


def _apply(box: Mailbox, op: tuple[str, int, int, frozenset[str]], serial: int) -> None:
    kind, pick, flags, keywords = op
    uids = [m.uid for m in box.messages()]
    uid = uids[pick % len(uids)] if uids else 0
    with box.transaction() as tx:
        if kind == "save" or not uids:
            body = io.BytesIO(b"Subject: %d\n\nbody\n" % serial)
            tx.save(NewMessage(box.status().uid_next, f"guid-{serial}", body, flags, keywords))
        elif kind == "flags":
            tx.update_flags(uid, add_flags=flags, remove_flags=~flags & 0x1F,
                            add_keywords=keywords, remove_keywords=frozenset())  # fmt: skip
        elif kind == "expunge":
            tx.expunge(uid)
        elif kind == "move":
            tx.move(uid, box.status().uid_next + pick)
        elif kind == "attr":
            tx.set_attribute("p", f"k{pick % 3}", f"v{serial}" if flags else None, serial)


def _foreign_flag_change(root: Path, serial: int) -> None:
    """Another program renames a message file, as a flag change in a mail client."""
    names = sorted(os.listdir(root / "cur"))
    if names:
        name = names[serial % len(names)]
        os.rename(root / "cur" / name, root / "cur" / (name.split(":")[0] + ":2,T"))


def _settle(root: Path) -> None:
    """Age what a stamp watches, as if the last change were seconds ago."""
    past = time.time() - 5
    watched = ("cur", "new", "dovecot-uidlist", "dovecot-keywords", "pydsync-changes")
    for name in watched:
        if (root / name).exists():
            os.utime(root / name, (past, past))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_handed_over_view_equals_a_rescan(tmp_path_factory: object, ops: list) -> None:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("views")  # type: ignore[attr-defined]
    storage = MaildirStorage(root)
    box = storage.open_mailbox("INBOX")
    for serial, op in enumerate(ops, 1):
        if op[0] == "foreign":
            _foreign_flag_change(root, serial)
        else:
            _apply(box, op, serial)
        box.refresh()
        # another program's change is recorded when this run commits or closes the
        # store: until then a rescan elsewhere would draw other modseqs for it
        if any(view.tracker_pending for view in storage.ctx.views.values()):
            storage.close()
        assert _view(box) == _fresh_view(root)
        assert _view(storage.open_mailbox("INBOX")) == _view(box)


def test_unchanged_settled_folder_is_not_rescanned(tmp_path: Path, monkeypatch: object) -> None:
    storage = MaildirStorage(tmp_path)
    box = storage.open_mailbox("INBOX")
    with box.transaction() as tx:
        tx.save(NewMessage(1, "g1", io.BytesIO(b"Subject: 1\n\nx\n")))
    _settle(tmp_path)
    expected = _fresh_view(tmp_path)  # this scan finds a settled folder: summary saved
    assert (tmp_path / SUMMARY_NAME).exists()

    def no_scan(*args: object) -> None:
        raise AssertionError("rescanned an unchanged folder")

    monkeypatch.setattr(maildir_mailbox, "read_folder", no_scan)  # type: ignore[attr-defined]
    later = MaildirStorage(tmp_path).open_mailbox("INBOX")
    status = later.status()
    assert status == expected[1]
    assert later.changes_since(status.highest_modseq) == []
    # a change to cur/ is seen: the summary no longer vouches for the folder
    monkeypatch.undo()  # type: ignore[attr-defined]
    _foreign_flag_change(tmp_path, 0)
    again = MaildirStorage(tmp_path).open_mailbox("INBOX")
    assert again.status().highest_modseq > status.highest_modseq
    assert again.messages()[0].flags != expected[2][0].flags  # type: ignore[index]


def test_commit_on_a_settled_view_skips_rereading(tmp_path: Path, monkeypatch: object) -> None:
    from pydsync_server.storage import maildir_transaction

    box = MaildirStorage(tmp_path).open_mailbox("INBOX")
    with box.transaction() as tx:
        for uid in (1, 2):
            tx.save(NewMessage(uid, f"g{uid}", io.BytesIO(b"Subject: %d\n\nx\n" % uid)))
    _settle(tmp_path)
    box = MaildirStorage(tmp_path).open_mailbox("INBOX")
    box.messages()
    reads: list[Path] = []
    real = maildir_transaction.read_folder

    def counting(paths: object) -> object:
        reads.append(paths)  # type: ignore[arg-type]
        return real(paths)  # type: ignore[arg-type]

    monkeypatch.setattr(maildir_transaction, "read_folder", counting)  # type: ignore[attr-defined]
    with box.transaction() as tx:
        tx.update_flags(1, add_flags=2, remove_flags=0, add_keywords=frozenset({"kw"}),
                        remove_keywords=frozenset())  # fmt: skip
        tx.save(NewMessage(3, "g3", io.BytesIO(b"Subject: 3\n\nx\n")))
    assert reads == []
    box.refresh()
    assert _view(box) == _fresh_view(tmp_path)

    # another program's rename after the scan: the commit reads the folder again
    _settle(tmp_path)
    box = MaildirStorage(tmp_path).open_mailbox("INBOX")
    box.messages()
    _foreign_flag_change(tmp_path, 1)
    with box.transaction() as tx:
        tx.expunge(2)
    assert len(reads) == 1
    box.refresh()
    assert _view(box) == _fresh_view(tmp_path)
    assert [m.uid for m in box.messages()] == [1, 3]


def test_opening_a_settled_folder_with_new_mail_reads_it_once(
    tmp_path: Path, monkeypatch: object
) -> None:
    box = MaildirStorage(tmp_path).open_mailbox("INBOX")
    with box.transaction() as tx:
        tx.save(NewMessage(1, "g1", io.BytesIO(b"Subject: 1\n\nx\n")))
    (tmp_path / "new" / "1700000000.M1P1.other").write_bytes(b"Subject: 2\n\ny\n")
    _settle(tmp_path)
    reads: list[object] = []
    real = maildir_mailbox.read_folder

    def counting(paths: object) -> object:
        reads.append(paths)
        return real(paths)  # type: ignore[arg-type]

    monkeypatch.setattr(maildir_mailbox, "read_folder", counting)  # type: ignore[attr-defined]
    box = MaildirStorage(tmp_path).open_mailbox("INBOX")
    assert [m.uid for m in box.messages()] == [1, 2]  # the new file got its UID
    assert len(reads) == 1
    assert _view(box) == _fresh_view(tmp_path)


def test_a_copy_keeping_mtimes_keeps_its_summary(tmp_path: Path, monkeypatch: object) -> None:
    """As Dovecot's index, which keeps cur/'s mtime, stays valid in a `cp -a` copy."""
    import shutil

    src, copy = tmp_path / "src", tmp_path / "copy"
    box = MaildirStorage(src).open_mailbox("INBOX")
    with box.transaction() as tx:
        tx.save(NewMessage(1, "g1", io.BytesIO(b"Subject: 1\n\nx\n")))
    _settle(src)
    expected = _fresh_view(src)
    shutil.copytree(src, copy, copy_function=shutil.copy2)
    for sub in ("cur", "new"):
        st = os.stat(src / sub)
        os.utime(copy / sub, ns=(st.st_atime_ns, st.st_mtime_ns))

    def no_scan(*args: object) -> None:
        raise AssertionError("rescanned an unchanged copy")

    monkeypatch.setattr(maildir_mailbox, "read_folder", no_scan)  # type: ignore[attr-defined]
    assert MaildirStorage(copy).open_mailbox("INBOX").status() == expected[1]


def _sync(home: Path, *options: str) -> int:
    from pydsync_server.cli.main import main

    environ = {"USER": "jane", "HOME": str(home), "PYDSYNC_CONFIG": ""}
    argv = ["-o", f"mail_location=maildir:{home}/a", "sync", *options, f"maildir:{home}/b"]
    return main(argv, stdout=io.BytesIO(), stderr=io.StringIO(), environ=environ)


def test_first_sync_into_an_empty_store_leaves_equal_counters(
    tmp_path: Path, monkeypatch: object
) -> None:
    """As between Dovecot stores: the copy ends at the source's HIGHESTMODSEQ, so the
    next fast sync skips every mailbox instead of comparing their messages."""
    (tmp_path / "a").mkdir()
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "a" / sub).mkdir()
    for i in range(3):
        (tmp_path / "a" / "cur" / f"17000000{i}.M1P1.h:2,S").write_bytes(b"Subject: %d\n\n" % i)
    (tmp_path / "a" / "new" / "1700000099.M1P1.h").write_bytes(b"Subject: unseen\n\n")
    out = io.BytesIO()
    from pydsync_server.cli.main import main

    environ = {"USER": "jane", "HOME": str(tmp_path), "PYDSYNC_CONFIG": ""}
    location = ["-o", f"mail_location=maildir:{tmp_path}/a"]
    argv = [*location, "sync", "-s", "", f"maildir:{tmp_path}/b"]
    assert main(argv, stdout=out, stderr=io.StringIO(), environ=environ) == 0
    # a stateful run after it (the peer's message modseqs are newer than ours: they
    # are raised without a change, so the counters stay equal), as the benchmark
    # settles its pairs
    assert _sync(tmp_path, "-s", out.getvalue().decode().strip()) == 0
    a = MaildirStorage(tmp_path / "a").open_mailbox("INBOX").status()
    b = MaildirStorage(tmp_path / "b").open_mailbox("INBOX").status()
    assert a.highest_modseq == b.highest_modseq > 1
    from pydsync_server.brain import mailbox_sync

    def no_mailbox_sync(*args: object, **kwargs: object) -> None:
        raise AssertionError("fast mode compared a mailbox whose counters are equal")

    monkeypatch.setattr(mailbox_sync, "sync_mailbox", no_mailbox_sync)  # type: ignore[attr-defined]
    assert _sync(tmp_path) == 0


def test_closing_the_store_leaves_a_summary_of_its_writes(
    tmp_path: Path, monkeypatch: object
) -> None:
    """The next run needs no rescan after this one wrote (Dovecot's index is current
    after its own writes)."""
    storage = MaildirStorage(tmp_path)
    box = storage.open_mailbox("INBOX")
    with box.transaction() as tx:
        tx.save(NewMessage(1, "g1", io.BytesIO(b"Subject: 1\n\nx\n"), 0x02))
    box.refresh()
    expected = _view(box)
    storage.close()

    def no_scan(*args: object) -> None:
        raise AssertionError("rescanned what the last run wrote")

    monkeypatch.setattr(maildir_mailbox, "read_folder", no_scan)  # type: ignore[attr-defined]
    assert MaildirStorage(tmp_path).open_mailbox("INBOX").status() == expected[1]
    monkeypatch.undo()  # type: ignore[attr-defined]
    assert _fresh_view(tmp_path) == expected


def test_a_delivery_after_the_commit_is_not_hidden_by_the_summary(tmp_path: Path) -> None:
    storage = MaildirStorage(tmp_path)
    box = storage.open_mailbox("INBOX")
    with box.transaction() as tx:
        tx.save(NewMessage(1, "g1", io.BytesIO(b"Subject: 1\n\nx\n")))
    box.refresh()
    (tmp_path / "new" / "1700000000.M9P9.mta").write_bytes(b"Subject: late\n\ny\n")
    storage.close()
    later = MaildirStorage(tmp_path).open_mailbox("INBOX")
    assert [m.uid for m in later.messages()] == [1, 2]


def _flag_change_pending(tmp_path: Path) -> tuple[MaildirStorage, Mailbox, int, bytes]:
    """A store whose INBOX saw another program's flag change: (store, box, its
    modseq, the tracker file before)."""
    setup = MaildirStorage(tmp_path)
    _apply(setup.open_mailbox("INBOX"), ("save", 0, 0, frozenset()), 1)
    setup.close()
    before = (tmp_path / "pydsync-changes").read_bytes()
    _foreign_flag_change(tmp_path, 1)
    storage = MaildirStorage(tmp_path)
    box = storage.open_mailbox("INBOX")
    return storage, box, box.status().highest_modseq, before


def test_other_programs_changes_are_written_when_the_store_closes(tmp_path: Path) -> None:
    tracker = tmp_path / "pydsync-changes"
    storage, box, modseq, before = _flag_change_pending(tmp_path)
    assert tracker.read_bytes() == before  # recorded in the view only, so far
    storage.close()
    assert tracker.read_bytes() != before
    fresh = MaildirStorage(tmp_path).open_mailbox("INBOX")
    assert fresh.status().highest_modseq == modseq
    assert [c.modseq for c in fresh.changes_since(0) or []] == [modseq]
    assert (tmp_path / SUMMARY_NAME).exists()


def test_a_commit_writes_the_changes_its_view_recorded(tmp_path: Path) -> None:
    storage, box, modseq, _ = _flag_change_pending(tmp_path)
    _apply(box, ("save", 0, 0, frozenset()), 2)
    fresh = MaildirStorage(tmp_path).open_mailbox("INBOX")
    changes = fresh.changes_since(0) or []
    assert modseq in [c.modseq for c in changes]
    assert fresh.status().highest_modseq > modseq


def test_a_pending_tracker_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    storage, box, modseq, _ = _flag_change_pending(tmp_path)
    other = MaildirStorage(tmp_path)  # another process records the change its own way
    _apply(other.open_mailbox("INBOX"), ("save", 0, 0, frozenset()), 3)
    written = (tmp_path / "pydsync-changes").read_bytes()
    (tmp_path / SUMMARY_NAME).unlink(missing_ok=True)
    storage.close()
    assert (tmp_path / "pydsync-changes").read_bytes() == written
    assert not (tmp_path / SUMMARY_NAME).exists()


def test_a_commit_that_must_rescan_keeps_the_modseqs_already_handed_out(tmp_path: Path) -> None:
    storage, box, modseq, _ = _flag_change_pending(tmp_path)
    (tmp_path / "new" / "123.M1P1.other").write_bytes(b"Subject: x\n\ndelivered\n")
    _apply(box, ("save", 0, 0, frozenset()), 2)  # the listing changed: a rescan
    fresh = MaildirStorage(tmp_path).open_mailbox("INBOX")
    modseqs = sorted(c.modseq for c in fresh.changes_since(0) or [])
    assert modseq in modseqs
    assert len(fresh.messages()) == 3
