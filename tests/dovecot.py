"""Harness that drives the real Dovecot (doveadm, no daemons) for interoperability tests.

Works with Dovecot 2.3 and 2.4 (config syntax, --no-userdb-lookup, location settings:
/work/shared/spec/dovecot-2.4-notes.md §1, §2, §6). Everything runs as root; doveadm drops
privileges to the ``vmail`` system user, which owns every home.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from dovecot_compare import (
    MailboxSnapshot,
    MessageSnapshot,
    StoreSnapshot,
    diff,
    normalize_for_compare,
)
from dovecot_config import (
    DEFAULT_LOCATION,
    config_text,
    is_24,
    location_options,
    parse_version,
    with_userdb_option,
)

__all__ = [
    "DEFAULT_LOCATION",
    "SAFE_PATH",
    "DoveadmError",
    "DovecotEnv",
    "DovecotUser",
    "MailboxSnapshot",
    "MessageSnapshot",
    "StoreSnapshot",
    "config_text",
    "diff",
    "dovecot_version",
    "is_24",
    "location_options",
    "normalize_for_compare",
    "parse_version",
    "require_dovecot",
    "snapshot",
    "with_userdb_option",
]

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
VMAIL = "vmail"
COMMAND_TIMEOUT = 120.0
SYNC_TIMEOUT = 300.0


class DoveadmError(subprocess.CalledProcessError):
    """A doveadm run that exited non-zero; str() includes the command line and stderr."""

    def __str__(self) -> str:
        err = (self.stderr or b"").decode("utf-8", "replace").strip()
        return f"{shlex.join(map(str, self.cmd))} exited {self.returncode}:\n{err}"


# ---------------------------------------------------------------- installation checks


def _find_binary(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), SAFE_PATH])
    return shutil.which(name, path=path)


def doveadm_path() -> str:
    """Absolute path of doveadm; pytest.fail when it is not installed."""
    found = _find_binary("doveadm")
    if found is None:
        pytest.fail(
            "doveadm not found: the interoperability tests need the real Dovecot "
            "(apt-get install dovecot-core), see .ci/run",
            pytrace=False,
        )
    return found


@functools.lru_cache(maxsize=1)
def _version_text() -> str:
    dovecot = _find_binary("dovecot")
    if dovecot is None:
        raise RuntimeError("dovecot binary not found (needed for `dovecot --version`)")
    out = subprocess.run([dovecot, "--version"], capture_output=True, check=True, timeout=30)
    return out.stdout.decode("ascii", "replace").strip()


def dovecot_version() -> tuple[int, int, int]:
    """Version of the installed Dovecot (from ``dovecot --version``)."""
    return parse_version(_version_text())


def require_dovecot() -> None:
    """Fail (never skip) the calling test when real Dovecot cannot be driven here."""
    doveadm_path()
    if _find_binary("dovecot") is None:
        pytest.fail("dovecot binary missing (package dovecot-core)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the Dovecot tests must run as root (doveadm drops to vmail)", pytrace=False)
    try:
        _vmail_ids()
    except KeyError:
        pytest.fail(
            "system user 'vmail' missing: useradd -r -M -s /usr/sbin/nologin vmail",
            pytrace=False,
        )
    version = dovecot_version()
    if version[:2] < (2, 3):
        pytest.fail(f"Dovecot {version} is too old (need 2.3 or 2.4)", pytrace=False)


def _vmail_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(VMAIL)
    return entry.pw_uid, entry.pw_gid


def _chown_tree(root: Path) -> None:
    uid, gid = _vmail_ids()
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _traversable_by_others(path: Path) -> bool:
    """True when every directory from / down to path has the others-x bit (vmail can enter)."""
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


# ---------------------------------------------------------------- environment and users


class DovecotEnv:
    """A directory with a Dovecot config and users' homes (owned by vmail)."""

    def __init__(self, tmp_path: Path | None = None, *, attributes: bool = False) -> None:
        self.version = dovecot_version()
        self.doveadm = doveadm_path()
        self._owned = tmp_path is None or not _traversable_by_others(tmp_path)
        if self._owned:
            # pytest's tmp_path lives under a 0700 directory that vmail cannot enter.
            self.root = Path(tempfile.mkdtemp(prefix="pydsync-dovecot-", dir="/tmp"))
            if tmp_path is not None:
                (tmp_path / "dovecot-root").symlink_to(self.root)
        else:
            assert tmp_path is not None
            self.root = tmp_path / "dovecot"
            self.root.mkdir()
        self.root.chmod(0o755)
        self.config = self.root / "dovecot.conf"
        self.config.write_text(config_text(self.version, attributes=attributes))
        self.config.chmod(0o644)
        self._scripts = 0

    def __enter__(self) -> DovecotEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the directory when it was created outside pytest's tmp_path."""
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    def user(self, name: str, *, location: str = DEFAULT_LOCATION) -> DovecotUser:
        """A new user with an empty home owned by vmail."""
        home = self.root / "home" / name
        home.parent.mkdir(mode=0o755, exist_ok=True)
        home.mkdir(mode=0o700)
        _chown_tree(home)
        return DovecotUser(self, name, home, location)

    def command_destination(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        *,
        forward_args: bool | None = None,
    ) -> list[str]:
        """Write a script that runs argv under ``env -i`` and return it as a destination.

        doveadm leaks its settings into a command destination's environment (and 2.3 passes
        no PATH), so the script clears it; PATH defaults to SAFE_PATH. doveadm appends
        ``dsync-server`` to the destination (dsync-protocol.md §2.1); the script passes its
        own arguments on unless forward_args is False, by default only when argv does not
        contain ``dsync-server`` already.
        """
        if forward_args is None:
            forward_args = "dsync-server" not in argv
        # PYDSYNC_CONFIG="": a pydsync destination must not read the host's dovecot.conf.
        env = {"PATH": SAFE_PATH, "PYDSYNC_CONFIG": "", **(env or {})}
        self._scripts += 1
        script = self.root / "bin" / f"destination-{self._scripts}.sh"
        script.parent.mkdir(mode=0o755, exist_ok=True)
        words = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
        tail = ' "$@"' if forward_args else ""
        body = f"#!/bin/sh\n# written by tests/dovecot.py\nexec {shlex.join(words)}{tail}\n"
        tmp = script.with_suffix(".tmp")
        tmp.write_text(body)
        tmp.chmod(0o755)
        tmp.rename(script)
        return [str(script)]


class DovecotUser:
    """One mail user of a DovecotEnv; every doveadm run gets a clean environment."""

    def __init__(self, env: DovecotEnv, name: str, home: Path, location: str) -> None:
        self.env = env
        self.name = name
        self.home = home
        self.location = location

    @property
    def mail_path(self) -> Path:
        """The store directory the location points at (``~/`` = home)."""
        path = self.location.split(":")[1]
        return self.home / path[2:] if path.startswith("~/") else Path(path)

    def _environ(self) -> dict[str, str]:
        return {"PATH": SAFE_PATH, "USER": self.name, "HOME": str(self.home)}

    def _base_argv(self) -> list[str]:
        loc = location_options(self.env.version, self.location)
        return [self.env.doveadm, "-c", str(self.env.config), *loc]

    def doveadm(
        self,
        *args: str,
        input: bytes | None = None,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``doveadm [global options] <command> ...`` as this user."""
        argv = self._base_argv() + with_userdb_option(self.env.version, list(args))
        proc = subprocess.run(
            argv,
            input=input if input is not None else b"",
            capture_output=True,
            env=self._environ(),
            cwd=self.env.root,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise DoveadmError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def save(self, mailbox: str, body: bytes) -> subprocess.CompletedProcess[bytes]:
        return self.doveadm("save", "-m", mailbox, input=body)

    def _flags(self, op: str, mailbox: str, uid: int | str, flags: str | Iterable[str]):
        text = flags if isinstance(flags, str) else " ".join(flags)
        return self.doveadm("flags", op, text, "mailbox", mailbox, "uid", str(uid))

    def flags_add(self, mailbox: str, uid: int | str, flags: str | Iterable[str]):
        return self._flags("add", mailbox, uid, flags)

    def flags_remove(self, mailbox: str, uid: int | str, flags: str | Iterable[str]):
        return self._flags("remove", mailbox, uid, flags)

    def flags_replace(self, mailbox: str, uid: int | str, flags: str | Iterable[str]):
        return self._flags("replace", mailbox, uid, flags)

    def expunge(self, mailbox: str, uid: int | str):
        return self.doveadm("expunge", "mailbox", mailbox, "uid", str(uid))

    def mailbox_create(self, *names: str, subscribe: bool = False):
        return self.doveadm("mailbox", "create", *(["-s"] if subscribe else []), *names)

    def mailbox_rename(self, old: str, new: str):
        return self.doveadm("mailbox", "rename", old, new)

    def mailbox_delete(self, *names: str, recursive: bool = False):
        return self.doveadm("mailbox", "delete", *(["-r"] if recursive else []), *names)

    def subscribe(self, *names: str):
        return self.doveadm("mailbox", "subscribe", *names)

    def unsubscribe(self, *names: str):
        return self.doveadm("mailbox", "unsubscribe", *names)

    def metadata_set(self, mailbox: str, key: str, value: str):
        """Needs DovecotEnv(attributes=True)."""
        return self.doveadm("mailbox", "metadata", "set", mailbox, key, value)

    def metadata_get(self, mailbox: str, key: str) -> str:
        out = self.doveadm("-f", "flow", "mailbox", "metadata", "get", mailbox, key)
        text = out.stdout.decode()
        return text.removeprefix("value=").removesuffix("\n")

    def message_bytes(self, mailbox: str, uid: int) -> bytes:
        """The exact stored bytes of one message (``-f pager fetch text``: ``text:\\n`` + bytes)."""
        out = self.doveadm("-f", "pager", "fetch", "text", "mailbox", mailbox, "uid", str(uid))
        return _strip_pager_text(out.stdout)

    def sync(
        self, dest_args: list[str], *options: str, check: bool = True, timeout: float = SYNC_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        """``doveadm sync [options] <destination...>``."""
        return self.doveadm("sync", *options, *dest_args, check=check, timeout=timeout)

    def backup(
        self, dest_args: list[str], *options: str, check: bool = True, timeout: float = SYNC_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        """``doveadm backup [options] <destination...>``."""
        return self.doveadm("backup", *options, *dest_args, check=check, timeout=timeout)

    def dsync_server_argv(self, *options: str) -> list[str]:
        """Full argv (with its own ``env -i``) of this user's ``doveadm dsync-server``."""
        environ = [f"{k}={v}" for k, v in self._environ().items()]
        server = with_userdb_option(self.env.version, ["dsync-server", *options])
        return ["/usr/bin/env", "-i", *environ, *self._base_argv(), *server]

    def dsync_server_destination(self, *options: str) -> list[str]:
        """A command destination running this user's ``doveadm dsync-server``."""
        return self.env.command_destination(self.dsync_server_argv(*options))


def _strip_pager_text(out: bytes) -> bytes:
    if not out.startswith(b"text:\n"):
        raise RuntimeError(f"unexpected pager output: {out[:80]!r}")
    return out[len(b"text:\n") :]


# ---------------------------------------------------------------- snapshots


def snapshot(target: DovecotUser | Path | str, *, location: str | None = None) -> StoreSnapshot:
    """Read a store with Dovecot, on a copy of the home, so no index file lands in the original."""
    if isinstance(target, DovecotUser):
        home, name = target.home, target.name
        location = location or target.location
    else:
        home, name = Path(target), "snapshot"
    with DovecotEnv() as env:
        reader = env.user(name, location=location or DEFAULT_LOCATION)
        shutil.copytree(home, reader.home, symlinks=True, dirs_exist_ok=True)
        _chown_tree(reader.home)
        return _read_store(reader)


def _lines(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    return proc.stdout.decode("utf-8").splitlines()


def _tab_rows(proc: subprocess.CompletedProcess[bytes]) -> list[dict[str, str]]:
    lines = _lines(proc)
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def _listing(user: DovecotUser, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run a read-only command over all mailboxes.

    A name can stay in the mailbox list index after dsync deleted the mailbox (e.g. a parent
    of a surviving child); iterating commands then report "Mailbox doesn't exist" for it and
    exit non-zero while printing everything else. Only that error is tolerated.
    """
    proc = user.doveadm(*args, check=False)
    errors = [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line]
    missing_only = all("Mailbox doesn't exist" in line for line in errors)
    if proc.returncode == 0 or (errors and missing_only):  # 68 = EX_NOTFOUND on 2.3
        return proc
    raise DoveadmError(proc.returncode, proc.args, proc.stdout, proc.stderr)


def _read_store(user: DovecotUser) -> StoreSnapshot:
    names = tuple(sorted(_lines(user.doveadm("mailbox", "list"))))
    subs = tuple(sorted(_lines(user.doveadm("mailbox", "list", "-s"))))
    fields = "guid uidvalidity uidnext messages"
    status = _tab_rows(_listing(user, "-f", "tab", "mailbox", "status", fields, "*"))
    rows = _tab_rows(_listing(user, "-f", "tab", "fetch", "mailbox-guid uid guid flags", "all"))
    bodies = _fetch_bodies(user, [(r["mailbox-guid"], int(r["uid"])) for r in rows])
    boxes = []
    for st in sorted(status, key=lambda s: s["mailbox"]):
        msgs = tuple(
            _message(r, bodies[(st["guid"], int(r["uid"]))])
            for r in sorted(rows, key=lambda r: int(r["uid"]))
            if r["mailbox-guid"] == st["guid"]
        )
        if len(msgs) != int(st["messages"]):
            raise RuntimeError(
                f"{st['mailbox']}: status says {st['messages']} messages, "
                f"fetch returned {len(msgs)}"
            )
        boxes.append(
            MailboxSnapshot(
                st["mailbox"], st["guid"], int(st["uidvalidity"]), int(st["uidnext"]), msgs
            )
        )
    return StoreSnapshot(names, subs, tuple(boxes))


def _message(row: dict[str, str], body: bytes) -> MessageSnapshot:
    flags = [f for f in row["flags"].split() if f != "\\Recent"]
    return MessageSnapshot(
        uid=int(row["uid"]),
        guid=row["guid"],
        flags=tuple(sorted(f for f in flags if f.startswith("\\"))),
        keywords=tuple(sorted(f for f in flags if not f.startswith("\\"))),
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
    )


def _fetch_bodies(user: DovecotUser, keys: list[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
    """All message bytes in one fetch, framed by size.physical; per message if that fails.

    ``-f pager`` prints ``name: value`` lines, ``text:\\n`` + the exact bytes, and ``\\f\\n``
    between messages. size.physical is the stored length unless a store's metadata lies
    (e.g. a wrong maildir ``S=``), which the framing check detects.
    """
    out = _listing(user, "-f", "pager", "fetch", "mailbox-guid uid size.physical text", "all")
    parsed = _parse_pager_bodies(out.stdout)
    if parsed is not None and sorted(parsed) == sorted(keys):
        return parsed
    return {
        (mguid, uid): _strip_pager_text(
            user.doveadm(
                "-f", "pager", "fetch", "text", "mailbox-guid", mguid, "uid", str(uid)
            ).stdout
        )
        for mguid, uid in keys
    }


_PAGER_HEAD = re.compile(rb"mailbox-guid: ([0-9a-f]*)\nuid: (\d+)\nsize\.physical: (\d+)\ntext:\n")


def _parse_pager_bodies(data: bytes) -> dict[tuple[str, int], bytes] | None:
    result: dict[tuple[str, int], bytes] = {}
    pos = 0
    while pos < len(data):
        head = _PAGER_HEAD.match(data, pos)
        if head is None:
            return None
        start = head.end()
        end = start + int(head.group(3))
        if end > len(data) or (end < len(data) and data[end : end + 2] != b"\f\n"):
            return None
        result[(head.group(1).decode(), int(head.group(2)))] = data[start:end]
        pos = end + 2
    return result
