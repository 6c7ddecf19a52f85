"""How the benchmark runs Dovecot and copies mail homes: clean environments, the
daemonless config, helper commands, and cheap hard-linked clones of reference homes.

A clone copies everything but the Maildir message files, which it hard-links: Dovecot
never rewrites a message file in place (storage-formats §1.3: a flag change is a rename,
an expunge an unlink), and a `Seal` verifies that a run did not either.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAIL_LOCATION = "mail_location=maildir:~/Maildir"
CONF_23 = "mail_location = maildir:~/Maildir\n"
# Daemonless 2.4 config (dovecot-2.4-notes §1): version lines first, mail_home from HOME.
CONF_24 = (
    "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n"
    "mail_driver = maildir\nmail_path = ~/Maildir\nmail_home = %{env:HOME}\n"
)
CONF_COMMON = (
    "mail_uid = vmail\nmail_gid = vmail\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n"
    "namespace inbox {\n  inbox = yes\n  separator = /\n}\n"
)
PURE_ENV = "PYDSYNC_PUREPYTHON"  # =1 makes pydsync use its pure-Python twin, not cffi
MESSAGE_DIRS = ("cur", "new")  # Maildir directories that hold only message files


class BenchError(Exception):
    """A setup step or a correctness check failed; the message says which."""


def env_i(user: str, home: Path) -> list[str]:
    """A clean environment as in vectors/README.md: only PATH, USER and HOME."""
    return ["/usr/bin/env", "-i", f"PATH={PATH}", f"USER={user}", f"HOME={home}"]


@dataclass(frozen=True)
class Dovecot:
    """How to run doveadm here: binary, version and the daemonless config file."""

    doveadm: str
    version: str
    conf: Path
    opts: tuple[str, ...] = ()  # extra `-o key=value` for every doveadm call

    @property
    def v24(self) -> bool:
        return not self.version.startswith("2.3")

    def with_opts(self, *opts: str) -> Dovecot:
        return dataclasses.replace(self, opts=self.opts + opts)

    def at(self, store: str) -> Dovecot:
        """This Dovecot with the user's mail in `~/<store>` (mdbox, sdbox): the 2.3
        mail_location or the 2.4 mail_driver/mail_path (dovecot-2.4-notes §1). An mdbox
        gets Dovecot's default rotate size, said out loud so both sides match."""
        opts = (
            [f"mail_driver={store}", f"mail_path=~/{store}"]
            if self.v24
            else [f"mail_location={store}:~/{store}"]
        )
        if store == "mdbox":
            opts.append("mdbox_rotate_size=10M")
        return self.with_opts(*opts)

    def argv(
        self, user: str, home: Path, cmd: list[str], rest: list[str], fmt: str | None = None
    ) -> list[str]:
        """env -i … doveadm -c CONF [-f fmt] CMD [--no-userdb-lookup] REST.

        2.4 needs --no-userdb-lookup right after the command words, before a
        sync/backup destination (dovecot-2.4-notes §2); 2.3 rejects it.
        """
        head = [*env_i(user, home), self.doveadm, "-c", str(self.conf)]
        for o in self.opts:
            head += ["-o", o]
        if fmt:
            head += ["-f", fmt]
        return head + cmd + (["--no-userdb-lookup"] if self.v24 else []) + rest


def detect_version(override: str | None) -> str:
    if override:
        return override
    exe = shutil.which("dovecot", path=PATH)
    if not exe:
        raise BenchError("cannot find `dovecot` to read the version; pass --dovecot-version")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    m = re.match(r"(\d+\.\d+[\w.\-]*)", out.stdout.strip())
    if not m:
        raise BenchError(f"unexpected `dovecot --version` output: {out.stdout!r}")
    return m.group(1)


def write_conf(work: Path, version: str) -> Path:
    conf = work / f"dovecot-{version}.conf"
    conf.write_text((CONF_23 if version.startswith("2.3") else CONF_24) + CONF_COMMON)
    return conf


def sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """Run an untimed helper command; raise with its stderr if it fails."""
    p = subprocess.run(argv, capture_output=True, check=False, **kw)
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip()
        raise BenchError(f"{shlex.join(argv)} exited {p.returncode}: {err[-600:]}")
    return p


def chown_vmail(path: Path) -> None:
    sh(["chown", "-R", "vmail:vmail", str(path)])


def copy_tree(src: Path, dst: Path, owner: str | None = "vmail") -> None:
    """A real copy (`cp -a`), for trees that later runs must never share inodes with."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    sh(["cp", "-a", str(src), str(dst)])
    if owner:
        sh(["chown", "-R", f"{owner}:{owner}", str(dst)])


def clone_tree(src: Path, dst: Path) -> None:
    """`cp -a src dst`, except that files in cur/ and new/ are hard links.

    Directory modes, owners and mtimes are kept, so Dovecot (which skips a rescan
    when cur/'s mtime matches its index) and pydsync see the tree as unchanged.
    """
    shutil.rmtree(dst, ignore_errors=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    made: list[tuple[Path, os.stat_result]] = []
    for root, _, files in os.walk(src):
        here = Path(root)
        there = dst / here.relative_to(src)
        there.mkdir()
        made.append((there, os.lstat(here)))
        link = here.name in MESSAGE_DIRS
        for name in files:
            s, t = here / name, there / name
            if link:
                os.link(s, t)
            elif s.is_symlink():
                os.symlink(os.readlink(s), t)
            else:
                shutil.copy2(s, t)
                st = os.lstat(s)
                os.chown(t, st.st_uid, st.st_gid)
    for d, st in made:  # after every entry exists: adding one moves the mtime
        os.chown(d, st.st_uid, st.st_gid)
        os.chmod(d, stat.S_IMODE(st.st_mode))
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))


Seal = dict[str, tuple[int, int]]


def seal_tree(home: Path) -> Seal:
    """Size and mtime of every message file under home, keyed by relative path."""
    out: Seal = {}
    for root, _, files in os.walk(home):
        if os.path.basename(root) in MESSAGE_DIRS:
            for name in files:
                p = os.path.join(root, name)
                st = os.lstat(p)
                out[os.path.relpath(p, home)] = (st.st_size, st.st_mtime_ns)
    return out


def broken_seal(home: Path, sealed: Seal) -> str | None:
    """Why the message files under home no longer match `sealed`, or None."""
    now = seal_tree(home)
    if now == sealed:
        return None
    changed = sorted(k for k in sealed.keys() & now.keys() if sealed[k] != now[k])
    gone, new = sorted(sealed.keys() - now.keys()), sorted(now.keys() - sealed.keys())
    return (
        f"reference tree {home} changed under the benchmark (a message file written in "
        f"place?): {len(changed)} changed e.g. {changed[:2]}, {len(gone)} gone, {len(new)} new"
    )


def freeze_pydsync(root: Path, rev: str, work: Path, python: str) -> tuple[str, str]:
    """pydsync as committed at `rev`, apart from the shared working tree: (launcher, commit).

    Other people edit the checkout while a long benchmark runs; a `git archive` of the
    packages, byte-compiled up front (a first run must not pay for it), cannot change
    under it. The launcher does what the `pydsync` console script does.
    """
    sha = sh(["git", "-C", str(root), "rev-parse", "--short", rev]).stdout.decode().strip()
    top = work / f"pydsync-{sha}"
    if not (top / "pydsync").exists():
        tmp = work / f"pydsync-{sha}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tar = sh(["git", "-C", str(root), "archive", sha, "pydsync_server", "hooks"]).stdout
        sh(["tar", "-x", "-C", str(tmp)], input=tar)
        build_native(tmp, python)
        sh([python, "-m", "compileall", "-q", str(tmp)])
        launcher = tmp / "pydsync"
        launcher.write_text(
            f"#!{python}\nimport sys\n\nsys.path.insert(0, {str(top)!r})\n"
            "from pydsync_server.cli.main import entry_point\n\nsys.exit(entry_point())\n"
        )
        launcher.chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)
        tmp.rename(top)
    return str(top / "pydsync"), sha


def build_native(tree: Path, python: str) -> None:
    """Compile the cffi module of an archived tree from its own speedups.c, as an install
    does: the .so is not committed, and without it the copy would silently run pure."""
    native = tree / "pydsync_server" / "_native"
    if not (native / "_ffi_build.py").exists():
        return  # a revision before the cffi path
    script = (
        "import sys; sys.path.insert(0, 'pydsync_server/_native'); "
        "from _ffi_build import ffibuilder; ffibuilder.compile(tmpdir='.')"
    )
    sh([python, "-c", script], cwd=tree)
    for junk in [*native.glob("*.o"), native / "_speedups.c"]:
        junk.unlink(missing_ok=True)


def native_of(exe: str, pure: bool) -> str:
    """What `pydsync --version` says is live ("c" or "python"), with or without PURE_ENV."""
    env = {"PATH": PATH} | ({PURE_ENV: "1"} if pure else {})
    out = sh([exe, "--version"], env=env).stdout.decode()
    m = re.search(r"native: (\w+)", out)
    return m.group(1) if m else "unknown"
