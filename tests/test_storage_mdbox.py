"""The mdbox driver against the storage conformance suite, with the real Dovecot as the
"other program": deliveries are IMAP APPENDs through `doveadm exec imap`, flag changes,
expunges and attributes are doveadm commands on the same store."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dovecot import DovecotEnv, DovecotUser, _chown_tree, location_options
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_conformance import StorageConformance
from storage_conformance_model import OPS, Op

from pydsync_server.storage.base import Storage
from pydsync_server.storage.mdbox import MdboxStorage

pytestmark = pytest.mark.dovecot

LOCATION = "mdbox:~/mdbox"
_FLAG_NAMES = {0x01: "\\Answered", 0x02: "\\Flagged", 0x04: "\\Deleted", 0x08: "\\Seen",
               0x10: "\\Draft"}  # fmt: skip


def flag_words(flags: int, keywords: frozenset[str]) -> list[str]:
    return [name for bit, name in _FLAG_NAMES.items() if flags & bit] + sorted(keywords)


def imap(user: DovecotUser, script: bytes) -> bytes:
    """Run IMAP commands as the user through `doveadm exec imap` (PREAUTH)."""
    _chown_tree(user.home)
    # doveadm's -o settings do not reach an exec'd binary: give them to imap itself.
    loc = location_options(user.env.version, user.location)
    argv = [user.env.doveadm, "-c", str(user.env.config), "exec", "imap", *loc]
    proc = subprocess.run(
        argv, input=script + b"z LOGOUT\r\n", capture_output=True, env=user._environ(),
        cwd=user.env.root, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def imap_append(user: DovecotUser, vname: str, body: bytes, flags: list[str]) -> int:
    literal = b"{%d+}\r\n" % len(body)
    cmd = b"a APPEND \"%s\" (%s) %s%s\r\n" % (
        vname.encode(), " ".join(flags).encode(), literal, body,
    )  # fmt: skip
    out = imap(user, cmd)
    match = re.search(rb"a OK \[APPENDUID \d+ (\d+)\]", out)
    assert match, out
    return int(match.group(1))


class MdboxHooks:
    """Conformance hooks: one Dovecot user per test, the store in its home."""

    users: dict[int, DovecotUser]
    made: int

    @pytest.fixture(autouse=True)
    def _dovecot(self, tmp_path: Path) -> Iterator[None]:
        env = DovecotEnv(tmp_path, attributes=True)
        self.env = env
        self.users = {}
        self.made = 0
        yield
        env.close()

    def make_storage(self, tmp_path: Path) -> Storage:
        # a counter, not len(self.users): ids of collected storages are reused
        self.made += 1
        user = self.env.user(f"u{self.made}", location=LOCATION)
        storage = self.open(user)
        self.users[id(storage)] = user
        return storage

    @staticmethod
    def open(user: DovecotUser) -> MdboxStorage:
        return MdboxStorage(user.mail_path, attribute_dict=user.home / "dovecot-attributes")

    def user_of(self, storage: Storage) -> DovecotUser:
        return self.users[id(storage)]

    def reopen_storage(self, storage: Storage, tmp_path: Path) -> Storage:
        user = self.user_of(storage)
        new = self.open(user)
        self.users[id(new)] = user
        return new

    def doveadm(self, storage: Storage, *args: str) -> None:
        user = self.user_of(storage)
        _chown_tree(user.home)
        user.doveadm(*args)

    def external_deliver(
        self,
        storage: Storage,
        vname: str,
        body: bytes,
        flags: int = 0,
        keywords: frozenset[str] = frozenset(),
    ) -> None:
        imap_append(self.user_of(storage), vname, body, flag_words(flags, keywords))

    def external_set_flags(
        self, storage: Storage, vname: str, uid: int, flags: int, keywords: frozenset[str]
    ) -> None:
        # As an IMAP client's STORE +FLAGS / -FLAGS: only what really changes (a
        # `flags replace` would log every other flag as removed).
        old_flags, old_keywords = self._flags_of(storage, vname, uid)
        added = flag_words(flags & ~old_flags, keywords - old_keywords)
        removed = flag_words(old_flags & ~flags, old_keywords - keywords)
        for op, words in (("add", added), ("remove", removed)):
            if words:
                self.doveadm(storage, "flags", op, " ".join(words), "mailbox", vname,
                             "uid", str(uid))  # fmt: skip

    @staticmethod
    def _flags_of(storage: Storage, vname: str, uid: int) -> tuple[int, frozenset[str]]:
        box = storage.open_mailbox(vname)
        found = [(m.flags, m.keywords) for m in box.messages() if m.uid == uid]
        return found[0] if found else (0, frozenset())

    def external_expunge(self, storage: Storage, vname: str, uid: int) -> None:
        self.doveadm(storage, "expunge", "mailbox", vname, "uid", str(uid))

    def external_set_attribute(
        self, storage: Storage, vname: str, type_: str, key: str, value: str | None
    ) -> None:
        name = f"/{'private' if type_ == 'p' else 'shared'}/{key}"
        if value is None:
            self.doveadm(storage, "mailbox", "metadata", "unset", vname, name)
        else:
            self.doveadm(storage, "mailbox", "metadata", "set", vname, name, value)


def _fewer_model_examples() -> Callable[..., None]:
    """The suite's model test with fewer examples: each step here runs doveadm."""
    inner = StorageConformance.test_changes_match_model.hypothesis.inner_test  # type: ignore[attr-defined]

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=st.lists(OPS, max_size=10))
    def test_changes_match_model(self: StorageConformance, ops: list[Op]) -> None:
        inner(self, ops)

    return test_changes_match_model


class TestMdboxStorage(MdboxHooks, StorageConformance):
    test_changes_match_model = _fewer_model_examples()


def test_store_files_are_private(tmp_path: Path) -> None:
    storage = MdboxStorage(tmp_path / "mdbox")
    box = storage.open_mailbox("INBOX")
    with box.transaction() as t:
        from storage_conformance import msg

        t.save(msg(1))
    for path in (tmp_path / "mdbox" / "storage").iterdir():
        assert os.stat(path).st_mode & 0o077 == 0, path
