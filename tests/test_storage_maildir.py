"""The maildir driver: the conformance suite (external changes made on the files, as a
mail client would), plus the on-disk formats and failure behaviour only maildir has."""

from __future__ import annotations

import errno
import io
import os
import re
import time
from collections.abc import Callable
from itertools import count
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_conformance import StorageConformance, msg
from storage_conformance_attributes import AttributeConformance
from storage_conformance_mail import ChangeConformance, MailConformance
from storage_conformance_model import OPS, Op
from storage_conformance_tree import TreeConformance

from pydsync_server.errors import (
    InvalidMailboxNameError,
    MailboxExistsError,
    MailError,
    StorageError,
)
from pydsync_server.storage import maildir_folder, maildir_transaction
from pydsync_server.storage.base import LogType, MessageChange, NewMessage, Storage, name_hash
from pydsync_server.storage.maildir import MaildirStorage
from pydsync_server.storage.maildir_files import dotlock
from pydsync_server.storage.maildir_names import mutf7_decode, mutf7_encode
from pydsync_server.storage.maildir_tracker import MAX_LOG_RECORDS
from pydsync_server.storage.maildir_uidlist import parse_uidlist

SEEN, FLAGGED, ANSWERED, DELETED, DRAFT = 0x08, 0x02, 0x01, 0x04, 0x10
_LETTERS = {DRAFT: "D", FLAGGED: "F", ANSWERED: "R", SEEN: "S", DELETED: "T"}
_DELIVERIES = count()


# -- a mail client working on the files (independent of the driver's code) -------------


def _maildir(storage: Storage) -> MaildirStorage:
    assert isinstance(storage, MaildirStorage)
    return storage


def _folder(storage: Storage, vname: str) -> tuple[Path, Path]:
    """(mail dir, control dir) of a folder."""
    paths = _maildir(storage).paths(vname)
    return paths.mail, paths.control


def _keyword_letters(control: Path, keywords: frozenset[str]) -> str:
    """Letters for keywords, adding names to dovecot-keywords like a client would."""
    path = control / "dovecot-keywords"
    names: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            idx, _, name = line.partition(" ")
            names[name] = int(idx)
    for kw in sorted(keywords - names.keys()):
        names[kw] = max(names.values(), default=-1) + 1
    path.write_text("".join(f"{i} {n}\n" for n, i in sorted(names.items(), key=lambda x: x[1])))
    return "".join(chr(ord("a") + names[kw]) for kw in keywords)


def _info(control: Path, flags: int, keywords: frozenset[str]) -> str:
    letters = [letter for bit, letter in _LETTERS.items() if flags & bit]
    return "2," + "".join(sorted(letters + list(_keyword_letters(control, keywords))))


def _file_of(mail: Path, control: Path, uid: int) -> Path:
    lines = (control / "dovecot-uidlist").read_text().splitlines()[1:]
    base = next(line.split(" :", 1)[1] for line in lines if int(line.split()[0]) == uid)
    for sub in ("new", "cur"):
        for name in os.listdir(mail / sub):
            if name.split(":")[0] == base:
                return mail / sub / name
    raise AssertionError(f"no file for UID {uid}")


def client_deliver(
    mail: Path, control: Path, body: bytes, flags: int = 0, kws: frozenset[str] = frozenset()
) -> None:
    name = f"{int(time.time())}.M{next(_DELIVERIES)}P{os.getpid()}.mda,S={len(body)}"
    (mail / "tmp" / name).write_bytes(body)
    if flags or kws:
        os.rename(mail / "tmp" / name, mail / "cur" / f"{name}:{_info(control, flags, kws)}")
    else:
        os.rename(mail / "tmp" / name, mail / "new" / name)


def client_set_flags(mail: Path, control: Path, uid: int, flags: int, kws: frozenset[str]) -> None:
    path = _file_of(mail, control, uid)
    base = path.name.split(":")[0]
    os.rename(path, path.parent / f"{base}:{_info(control, flags, kws)}")


_DICT_ESCAPES = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n", "\x00": "\x010"}
_DICT_UNESCAPES = {v: k for k, v in _DICT_ESCAPES.items()}


def client_set_attribute(
    dict_path: Path, guid: bytes, type_: str, key: str, value: str | None
) -> None:
    """Change `dovecot-attributes` as Dovecot's file dict does: the whole file rewritten
    through `dovecot-attributes.lock` (storage-formats.md §7.7)."""
    lines = dict_path.read_text().split("\n")[:-1] if dict_path.exists() else []
    text = [re.sub("\x01.", lambda m: _DICT_UNESCAPES[m.group()], line) for line in lines]
    entries = dict(zip(text[::2], text[1::2], strict=True))
    name = f"{'priv' if type_ == 'p' else 'shared'}/{guid.hex()}/{key}"
    entries.pop(name, None)
    if value is not None:
        entries[name] = value
    out = "".join(
        "".join(_DICT_ESCAPES.get(c, c) for c in item) + "\n"
        for pair in entries.items()
        for item in pair
    )
    lock = dict_path.with_name(dict_path.name + ".lock")
    lock.write_text(out)
    os.rename(lock, dict_path)


class _MaildirHooks:
    layout = "maildir++"
    utf8_names = False
    separate_dirs = False  # CONTROL= and INDEX= outside the mail root

    def make_storage(self, tmp_path: Path) -> Storage:
        extra = tmp_path if self.separate_dirs else None
        return MaildirStorage(
            tmp_path / "Maildir",
            layout=self.layout,
            utf8_names=self.utf8_names,
            control_dir=extra and extra / "control",
            index_dir=extra and extra / "index",
        )

    def reopen_storage(self, storage: Storage, tmp_path: Path) -> Storage:
        return self.make_storage(tmp_path)

    def external_deliver(
        self,
        storage: Storage,
        vname: str,
        body: bytes,
        flags: int = 0,
        keywords: frozenset[str] = frozenset(),
    ) -> None:
        client_deliver(*_folder(storage, vname), body, flags, keywords)

    def external_set_flags(
        self, storage: Storage, vname: str, uid: int, flags: int, keywords: frozenset[str]
    ) -> None:
        client_set_flags(*_folder(storage, vname), uid, flags, keywords)

    def external_expunge(self, storage: Storage, vname: str, uid: int) -> None:
        os.unlink(_file_of(*_folder(storage, vname), uid))

    def external_set_attribute(
        self, storage: Storage, vname: str, type_: str, key: str, value: str | None
    ) -> None:
        uidlist = (_folder(storage, vname)[1] / "dovecot-uidlist").read_text()
        guid = bytes.fromhex(re.search(r" G([0-9a-f]{32})", uidlist.splitlines()[0])[1])  # type: ignore[index]
        client_set_attribute(_maildir(storage).root / "dovecot-attributes", guid, type_, key, value)


def _own_model_test() -> Callable[..., None]:
    """The suite's model test as a new function: hypothesis refuses to run one @given
    function from several classes (HealthCheck.differing_executors), and the memory
    driver's tests already run the suite's own."""
    suite_test = StorageConformance.test_changes_match_model
    inner = suite_test.hypothesis.inner_test  # type: ignore[attr-defined]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=st.lists(OPS, max_size=14))
    def test_changes_match_model(self: StorageConformance, ops: list[Op]) -> None:
        inner(self, ops)

    return test_changes_match_model


class TestMaildirPlusPlus(_MaildirHooks, StorageConformance):
    supports_dirs = False  # Maildir++ has no \NoSelect directories of its own
    test_changes_match_model = _own_model_test()


# The model-based test exercises the change tracker, which does not depend on the
# layout, so the variants below run the rest of the suite.
class TestMaildirFs(
    _MaildirHooks, TreeConformance, MailConformance, ChangeConformance, AttributeConformance
):
    layout = "fs"


class TestMaildirSeparateDirs(
    _MaildirHooks, TreeConformance, MailConformance, ChangeConformance, AttributeConformance
):
    separate_dirs = True
    supports_dirs = False


class TestMaildirUtf8(_MaildirHooks, TreeConformance):
    """With `:UTF-8` only the names differ, so the tree tests suffice."""

    utf8_names = True
    supports_dirs = False


# -- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [("Été", "&AMk-t&AOk-"), ("a&b", "a&-b"), ("日本語", "&ZeVnLIqe-"), ("~x", "~x"), ("", "")],
)
def test_mutf7_vectors(text: str, encoded: str) -> None:
    assert mutf7_encode(text) == encoded and mutf7_decode(encoded) == text


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_mutf7_round_trip(text: str) -> None:
    assert mutf7_decode(mutf7_encode(text)) == text


@pytest.mark.parametrize("bad", ["&", "&AMk", "&Jjo!-", "&AGE-", "\xe9", "&-&", "&AMk-&AOk-"])
def test_mutf7_rejects_non_canonical(bad: str) -> None:
    with pytest.raises(ValueError):
        mutf7_decode(bad)


def test_layout_on_disk(tmp_path: Path) -> None:
    pp = MaildirStorage(tmp_path / "pp")
    pp.create_mailbox("Été/Sub")
    pp.create_mailbox("Work")
    assert (tmp_path / "pp/.&AMk-t&AOk-.Sub/maildirfolder").is_file()
    assert (tmp_path / "pp/.Work/cur").is_dir() and not (tmp_path / "pp/.&AMk-t&AOk-").exists()
    fs = MaildirStorage(tmp_path / "fs", layout="fs", utf8_names=True)
    fs.create_mailbox("Été/Sub.x")
    assert (tmp_path / "fs/Été/Sub.x/cur").is_dir()
    assert (
        not (tmp_path / "fs/Été/cur").exists() and not (tmp_path / "fs/Été/maildirfolder").exists()
    )
    assert [(e.vname, e.guid is None) for e in fs.list_mailboxes()] == [
        ("Été", True),  # INBOX is listed once it exists (first opened or written)
        ("Été/Sub.x", False),
    ]


@pytest.mark.parametrize(
    ("layout", "name"),
    [("maildir++", "a.b"), ("maildir++", "cur"), ("maildir++", "~home"), ("fs", "x/tmp")],
)
def test_names_dovecot_refuses(tmp_path: Path, layout: str, name: str) -> None:
    s = MaildirStorage(tmp_path, layout=layout)
    with pytest.raises(InvalidMailboxNameError):
        s.create_mailbox(name)
    MaildirStorage(tmp_path / "pp").create_mailbox("x/cur")  # only top-level in Maildir++


def test_foreign_directories_are_not_mailboxes(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path)
    for junk in ("..DOVECOT-TRASHED/cur", ".&bad/cur", ".a..b/cur", "plain/cur"):
        (tmp_path / junk).mkdir(parents=True)
    (tmp_path / ".NewByMda/cur").mkdir(parents=True)
    assert [e.vname for e in s.list_mailboxes()] == ["NewByMda"]  # INBOX never touched: not listed
    assert (tmp_path / ".NewByMda/dovecot-uidlist").read_text().startswith("3 V")


# -- text files ------------------------------------------------------------------------


def test_uidlist_keywords_and_names(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path, hostname="host")
    s.create_mailbox("Box", guid=b"\xab" * 16, uid_validity=77)
    usable = "1795913345.M835403P1321.vm,S=4,W=5"
    box = s.open_mailbox("Box")
    with box.transaction() as t:
        t.save(msg(1, b"abc\n", guid=usable, flags=SEEN | ANSWERED))
        t.save(msg(2, b"x", guid="f" * 32, keywords=frozenset({"todo", "$Label1"})))
        t.save(msg(3, b"abc\n", guid=usable))  # same GUID again: the name is taken
    box.refresh()
    lines = (tmp_path / ".Box/dovecot-uidlist").read_text().splitlines()
    assert lines[0] == "3 V77 N1 G" + "ab" * 16
    assert lines[1] == f"1 :{usable}"
    assert re.fullmatch(rf"2 G{'f' * 32} :\d+\.M\d+P{os.getpid()}\.host,S=1,W=1", lines[2])
    assert re.fullmatch(rf"3 G{re.escape(usable)} :\d+\.M\d+P\d+\.host,S=4,W=5", lines[3])
    names = sorted(os.listdir(tmp_path / ".Box/cur"))
    assert f"{usable}:2,RS" in names
    assert any(n.endswith(",S=1,W=1:2,ab") for n in names)
    keywords = (tmp_path / ".Box/dovecot-keywords").read_text().splitlines()
    assert sorted(keywords) == ["0 $Label1", "1 todo"]
    assert [m.guid for m in box.messages()] == [usable, "f" * 32, usable]
    assert not list((tmp_path / ".Box").glob("dovecot.index*"))


def test_expunge_rewrites_uidlist_keeping_next_uid(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path)
    box = s.open_mailbox("INBOX")
    with box.transaction() as t:
        for uid in (1, 2, 3):
            t.save(msg(uid))
    with box.transaction() as t:
        t.expunge(3)
    lines = (tmp_path / "dovecot-uidlist").read_text().splitlines()
    assert lines[0].split()[2] == "N4" and [x.split()[0] for x in lines[1:]] == ["1", "2"]
    assert os.listdir(tmp_path / "tmp") == []
    assert MaildirStorage(tmp_path).open_mailbox("INBOX").status().uid_next == 4


def test_uidvalidity_allocator(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path, clock=lambda: 1795913345.5)
    for name in ("A", "B"):
        s.create_mailbox(name)
    assert (tmp_path / "dovecot-uidvalidity").read_text() == f"{1795913346:08x}"
    assert [p.name for p in tmp_path.glob("dovecot-uidvalidity.*")] == [
        f"dovecot-uidvalidity.{1795913346:08x}"
    ]
    assert [s.open_mailbox(n).status().uid_validity for n in "AB"] == [1795913345, 1795913346]
    (tmp_path / "dovecot-uidvalidity").unlink()  # lost file: continue from the marker
    s.create_mailbox("C")
    assert s.open_mailbox("C").status().uid_validity == 1795913347


def test_subscriptions_file(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path)
    for name in ("INBOX", "Été/Sub", "Work"):
        s.set_subscribed(name, True)
    s.set_subscribed("Work", False)
    assert (tmp_path / "subscriptions").read_bytes() == b"V\t2\n\nINBOX\n&AMk-t&AOk-\tSub\n"
    (tmp_path / "subscriptions").write_bytes(b"INBOX\n&AMk-t&AOk-.Sub\nBad..x\n")  # version 1
    assert s.subscriptions() == {"INBOX", "Été/Sub"}


def test_mailbox_log_bytes_and_rotation(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path, clock=lambda: 0x6B0B7681)
    s.set_subscribed("INBOX", True)
    raw = (tmp_path / "dovecot.mailbox.log").read_bytes()
    assert raw == b"\x04\x00\x00\x00" + name_hash("INBOX") + b"\x6b\x0b\x76\x81"
    for i in range(200):
        s.set_subscribed("INBOX", i % 2 == 1)
    assert (tmp_path / "dovecot.mailbox.log.2").stat().st_size == 4104  # rotated at >= 4096
    log = s.mailbox_log()
    assert len(log) == 201 and log[-1].type == LogType.SUBSCRIBE


def test_delete_goes_through_trash_dir(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path)
    s.create_mailbox("Gone")
    (tmp_path / "..DOVECOT-TRASHED/cur").mkdir(parents=True)  # leftover of a crash
    s.delete_mailbox("Gone")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# -- other programs' changes -------------------------------------------------------------


def test_new_files_get_uids_in_dovecot_order(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path)
    box = s.open_mailbox("INBOX")
    for name in ("20.M5P1.h", "100.M1P1.h", "20.M40P1.h", "20.xyz", "3.M9P9.h:2,S"):
        (tmp_path / "new" / name).write_bytes(name.encode())
    box.refresh()
    order = [s.open_mailbox("INBOX").open_message(m.uid).read() for m in box.messages()]
    assert order == [b"3.M9P9.h:2,S", b"20.M5P1.h", b"20.M40P1.h", b"20.xyz", b"100.M1P1.h"]
    assert [m.uid for m in box.messages()] == [1, 2, 3, 4, 5]
    assert box.messages()[0].flags == SEEN


def test_store_without_sidecar_starts_a_random_step_up(tmp_path: Path) -> None:
    (tmp_path / "cur").mkdir(parents=True)
    (tmp_path / "new").mkdir()
    (tmp_path / "cur/1.M1P1.h,S=1:2,Sa").write_bytes(b"x")
    (tmp_path / "new/2.M1P1.h").write_bytes(b"y")
    (tmp_path / "dovecot-keywords").write_text("0 todo\n")
    (tmp_path / "dovecot-uidlist").write_text(
        f"3 V9 N5 G{'12' * 16}\n5 :1.M1P1.h,S=1\n7 Gmy-guid :2.M1P1.h\n"
    )
    box = MaildirStorage(tmp_path).open_mailbox("INBOX")
    st_ = box.status()
    assert (st_.uid_validity, st_.uid_next, st_.guid) == (9, 8, b"\x12" * 16)
    start = st_.highest_modseq  # messages stay at modseq 1, the counter starts higher
    assert 2 <= start <= 1 + (1 << 16) and box.history_start() == start
    infos = {m.uid: (m.guid, m.flags, m.keywords, m.modseq) for m in box.messages()}
    assert infos == {
        5: ("1.M1P1.h,S=1", SEEN, frozenset({"todo"}), 1),
        7: ("my-guid", 0, frozenset(), 1),
    }
    assert st_.first_recent_uid == 7  # files in new/ are recent
    # History before tracking is unknown: only the starting modseq can be answered.
    assert box.changes_since(0) == [] and box.changes_since(1) is None
    assert box.changes_since(start) == []
    client_set_flags(tmp_path, tmp_path, 7, FLAGGED, frozenset())
    box.refresh()
    # another program's change: a random step above 1 (pitfall 22)
    modseq = box.status().highest_modseq
    assert start < modseq <= start + (1 << 16)
    assert box.changes_since(0) == [MessageChange(7, modseq, add_flags=FLAGGED)]
    assert box.changes_since(1) is None  # still below the floor: unknown history
    assert box.changes_since(modseq) == [] and box.changes_since(modseq + 1) is None


def test_unknown_keyword_letters_get_dovecot_names(tmp_path: Path) -> None:
    box = MaildirStorage(tmp_path).open_mailbox("INBOX")
    (tmp_path / "cur/1.M1P1.h:2,c").write_bytes(b"x")
    box.refresh()
    assert box.messages()[0].keywords == {"unknown-2"}
    assert (tmp_path / "dovecot-keywords").read_text() == "2 unknown-2\n"


def test_more_than_26_keywords_live_in_the_tracker(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path)
    kws = frozenset(f"kw{i}" for i in range(30))
    box = s.open_mailbox("INBOX")
    with box.transaction() as t:
        t.save(msg(1, keywords=kws))
    assert MaildirStorage(tmp_path).open_mailbox("INBOX").messages()[0].keywords == kws
    assert len((tmp_path / "dovecot-keywords").read_text().splitlines()) == 26


def test_recreated_uidlist_resets_the_tracker(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path)
    box = s.open_mailbox("INBOX")
    with box.transaction() as t:
        t.save(msg(1))
    client_set_flags(tmp_path, tmp_path, 1, SEEN, frozenset())
    box.refresh()
    before = box.status()
    (tmp_path / "dovecot-uidlist").unlink()  # as if another program recreated it
    box.refresh()
    after = box.status()
    assert after.uid_validity != before.uid_validity and after.guid != before.guid
    assert after.highest_modseq > before.highest_modseq
    assert box.changes_since(0) == [] and box.changes_since(before.highest_modseq) is None


def test_truncated_change_log(tmp_path: Path) -> None:
    box = MaildirStorage(tmp_path).open_mailbox("INBOX")
    with box.transaction() as t:
        t.save(msg(1))
    box.refresh()
    start = box.status().highest_modseq
    flags = [SEEN, 0]
    # each external change is one record; push more than the log keeps
    state = box.plan.tracker
    for i in range(MAX_LOG_RECORDS + 5):
        state.set_flags(1, flags[i % 2], frozenset(), start + 1 + i, dsync=False)
    state.finish_commit()
    assert len(state.log) == MAX_LOG_RECORDS
    assert state.changes_since(start) is None and state.changes_since(start + 5) is not None
    assert state.changes_since(0) is not None


# -- locking and failures ----------------------------------------------------------------


def test_stale_lock_of_dead_process_is_broken(tmp_path: Path) -> None:
    target = tmp_path / "dovecot-uidlist"
    (tmp_path / "dovecot-uidlist.lock").write_text("999999999:thishost")
    with dotlock(target, "thishost", timeout=1):
        assert (tmp_path / "dovecot-uidlist.lock").read_text() == f"{os.getpid()}:thishost"
    assert not (tmp_path / "dovecot-uidlist.lock").exists()


def test_live_lock_times_out(tmp_path: Path) -> None:
    (tmp_path / "x.lock").write_text(f"{os.getpid()}:otherhost")
    with pytest.raises(StorageError) as err, dotlock(tmp_path / "x", "thishost", timeout=0.2):
        pass
    assert err.value.mail_error == MailError.TEMP


def _tree(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


@pytest.mark.parametrize("failing", [errno.ENOSPC, errno.EACCES])
def test_failed_commit_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    box = MaildirStorage(tmp_path).open_mailbox("INBOX")
    with box.transaction() as t:
        t.save(msg(1, flags=SEEN))
        t.save(msg(2))
    box.refresh()
    before, status = _tree(tmp_path), box.status()
    real = maildir_folder.write_synced

    def fail_uidlist(path: Path, data: bytes, *, exclusive: bool = False) -> None:
        if path.name == "dovecot-uidlist.tmp":
            raise OSError(failing, os.strerror(failing))
        real(path, data, exclusive=exclusive)

    monkeypatch.setattr(maildir_folder, "write_synced", fail_uidlist)
    t = box.transaction()
    t.save(msg(3, b"new"))
    t.update_flags(1, add_flags=FLAGGED, add_keywords=frozenset({"k"}))
    t.expunge(2)
    with pytest.raises(StorageError) as err:
        t.commit()
    assert err.value.mail_error == (
        MailError.NOQUOTA if failing == errno.ENOSPC else MailError.PERM
    )
    after = _tree(tmp_path)
    after.pop("dovecot-keywords", None)  # a new keyword name may stay; no file uses it
    assert after == before
    monkeypatch.undo()
    box.refresh()
    assert box.status() == status and [m.uid for m in box.messages()] == [1, 2]


def test_failed_save_leaves_no_tmp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = MaildirStorage(tmp_path).open_mailbox("INBOX")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(maildir_transaction.os, "fsync", no_space)
    t = box.transaction()
    with pytest.raises(StorageError) as err:
        t.save(NewMessage(1, "g", io.BytesIO(b"body")))
    assert err.value.mail_error == MailError.NOQUOTA
    assert os.listdir(tmp_path / "tmp") == []


def test_generated_names_are_dovecot_style(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path, hostname="mx/1:2,3", clock=lambda: 1795913345.25)
    box = s.open_mailbox("INBOX")
    with box.transaction() as t:
        t.save(msg(1, b"a\nb\n"))
        t.save(msg(2, b"a\r\n"))
    names = sorted(os.listdir(tmp_path / "cur"))
    pid = os.getpid()
    assert names == [
        rf"1795913345.M250000P{pid}.mx\0571\0722\0543,S=4,W=6:2,",
        rf"1795913345.M250001P{pid}.mx\0571\0722\0543,S=3,W=3:2,",
    ]


def test_partial_last_uidlist_line_is_not_read(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path)
    box = s.open_mailbox("INBOX")
    with box.transaction() as t:
        t.save(msg(1, guid="one"))
    uidlist = tmp_path / "dovecot-uidlist"
    complete = uidlist.read_bytes()
    with open(uidlist, "ab") as fh:
        fh.write(b"2 :half-writ")  # another writer's append, caught mid-way
    assert parse_uidlist(uidlist.read_bytes()) == parse_uidlist(complete)


def test_stale_staging_dirs_are_removed(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path)
    old = tmp_path / "tmp/pydsync-create.1.M1P1.h"
    (old / "cur").mkdir(parents=True)
    os.utime(old, (0, 0))
    fresh = tmp_path / "tmp/pydsync-create.2.M1P1.h"
    fresh.mkdir()
    s.create_mailbox("A")
    assert not old.exists() and fresh.exists()
    assert sorted(e.vname for e in s.list_mailboxes()) == ["A"]


def test_fs_rename_onto_a_directory_with_children_fails(tmp_path: Path) -> None:
    s = MaildirStorage(tmp_path, layout="fs")
    s.create_mailbox("Old")
    s.create_mailbox("New/Kid")
    with pytest.raises(MailboxExistsError):
        s.rename_mailbox("Old", "New")
    assert [e.vname for e in s.list_mailboxes()] == ["New", "New/Kid", "Old"]
