"""The benchmark's rows: a workload (what state the pair starts in, which dsync mode)
times a link (who is master, who is the destination), and the command line of each.

Link codes: `dd` doveadm | doveadm dsync-server, `dp` doveadm | pydsync dsync-server,
`pd` pydsync | doveadm dsync-server (stdio pipes to a command destination), `d` doveadm
and `p` pydsync with a local destination. dp and pd are compared with dd, p with d.
`pp` and `dpp` are p and dp with PYDSYNC_PUREPYTHON=1 (the pure twin of the cffi path);
they are compared with Dovecot too, and with their C row for the speed-up.
The destination is Maildir, except for the `mdbox` and `sdbox` workloads (storage-formats
§2-§4), whose destination store Dovecot reads back strictly (check.py).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import MAIL_LOCATION, PURE_ENV, Dovecot, env_i

# link -> (master, destination); destination "local" is a location on the command line
LINKS: dict[str, tuple[str, str]] = {
    "dd": ("doveadm", "doveadm"),
    "dp": ("doveadm", "pydsync"),
    "dpp": ("doveadm", "pydsync-pure"),
    "pd": ("pydsync", "doveadm"),
    "d": ("doveadm", "local"),
    "p": ("pydsync", "local"),
    "pp": ("pydsync-pure", "local"),
}
BASELINE = {"dp": "dd", "dpp": "dd", "pd": "dd", "p": "d", "pp": "d"}
TWIN = {"pp": "p", "dpp": "dp"}  # pure-Python row -> the same row on the C path
MAILDIR_LINKS = ("dd", "dp", "pd", "d", "p")
# Dovecot's mdbox_rotate_size default (storage-formats §3), given to both sides alike.
MDBOX_ROTATE = "mdbox_rotate_size=10M"


@dataclass(frozen=True)
class Workload:
    """What a row does: the start state of its pair and the dsync command words."""

    name: str
    title: str
    pair: str  # empty (source + empty destination) | synced | sync-pct | changes
    verb: str  # backup | sync
    mode: str  # "" (fast) | -f | -s (with the pair's state)
    store: str = "maildir"  # the destination's mail store: maildir | mdbox | sdbox
    links: tuple[str, ...] = MAILDIR_LINKS
    target: float = 1.5  # the largest acceptable wall ÷ baseline

    def words(self, state: str | None) -> list[str]:
        if self.mode == "-s":
            return [self.verb, "-s", state or ""]
        return [self.verb] + ([self.mode] if self.mode else [])


WORKLOADS = (
    Workload("backup", "initial backup into an empty destination", "empty", "backup", ""),
    Workload("sync", "two-way sync, {pct} % changes on each side", "sync-pct", "sync", ""),
    Workload("fast", "no-change sync, fast (default)", "synced", "sync", ""),
    Workload("full", "no-change sync, full (-f)", "synced", "sync", "-f"),
    Workload("state", "no-change sync, stateful (-s)", "synced", "sync", "-s"),
    Workload("chg", "{changes} changes, stateful sync (-s)", "changes", "sync", "-s"),
    Workload(
        "mdbox", "initial backup, Maildir into an empty mdbox", "empty", "backup", "",
        "mdbox", ("dd", "dp", "dpp", "d", "p", "pp"), 1.2,
    ),
    Workload(
        "sdbox", "initial backup, Maildir into an empty sdbox", "empty", "backup", "",
        "sdbox", ("dd", "dp", "d", "p"), 1.2,
    ),
)  # fmt: skip
# The ids of the first benchmark (results/2026-11-29-10k.*).
ALIASES = {"a": "backup.dd", "b": "backup.dp", "c": "backup.pd", "e": "backup.d", "d": "backup.p"}


@dataclass(frozen=True)
class Row:
    work: Workload
    link: str

    @property
    def id(self) -> str:
        return f"{self.work.name}.{self.link}"

    @property
    def baseline(self) -> str | None:
        base = BASELINE.get(self.link)
        return f"{self.work.name}.{base}" if base else None

    @property
    def twin(self) -> str | None:
        """The C-path row of a pure-Python row (for the speed-up), else None."""
        c = TWIN.get(self.link)
        return f"{self.work.name}.{c}" if c else None

    @property
    def pydsync(self) -> bool:
        return any(side.startswith("pydsync") for side in LINKS[self.link])

    @property
    def who(self) -> str:
        master, dest = LINKS[self.link]
        return f"{master}, local" if dest == "local" else f"{master} | {dest}"


ROWS = tuple(Row(w, link) for w in WORKLOADS for link in w.links)


def select(spec: str) -> list[Row]:
    """Rows named by a comma list of ids, old ids (a-e), workloads or links (`.pd`).

    A chosen row brings its baseline along: a ratio needs both in the same rounds.
    """
    want: set[str] = set()
    for word in (w.strip() for w in spec.split(",")):
        if not word:
            continue
        word = ALIASES.get(word, word)
        hits = {
            r.id
            for r in ROWS
            if word in ("all", r.id, r.work.name) or (word.startswith(".") and r.link == word[1:])
        }
        if not hits:
            raise ValueError(f"unknown row {word!r}")
        want |= hits
    want |= {b for r in ROWS if r.id in want and (b := r.baseline)}
    want |= {t for r in ROWS if r.id in want and (t := r.twin)}
    return [r for r in ROWS if r.id in want]


@dataclass
class Ctx:
    """What a command line needs: master user a (home src), destination user b (home dst)."""

    dc: Dovecot
    pydsync: str
    py_opts: list[str]
    src: Path
    dst: Path
    rundir: Path  # the wrapper script, argv, stdout and stderr go here
    store: str = "maildir"  # the destination's mail store

    def wrapper(self, argv: list[str]) -> str:
        """A command destination: doveadm appends `dsync-server`, the script ignores it.

        `exec` keeps no shell holding the master's pipe, so a dying server is seen as
        EOF at once (dovecot-2.4-notes §6, item 9).
        """
        path = self.rundir / "srv.sh"
        path.write_text(f"#!/bin/sh\nexec {shlex.join(argv)}\n")
        path.chmod(0o755)
        return str(path)

    def py(self, who: str, user: str, home: Path, args: list[str], location: str) -> list[str]:
        """pydsync for `user`; who "pydsync-pure" forces the pure-Python twin."""
        env = env_i(user, home) + ([f"{PURE_ENV}=1"] if who == "pydsync-pure" else [])
        extra = ["-o", MDBOX_ROTATE] if self.store == "mdbox" else []
        return [*env, self.pydsync, "-o", location, *extra, *self.py_opts, *args]

    def argv(self, link: str, words: list[str]) -> list[str]:
        """`<master> <words> <destination>` for this link."""
        master, dest_kind = LINKS[link]
        dc = self.dc.at(self.store) if self.store != "maildir" else self.dc
        if dest_kind == "local":
            dir_name = "Maildir" if self.store == "maildir" else self.store
            dest = f"{self.store}:{self.dst}/{dir_name}"
        elif dest_kind.startswith("pydsync"):
            location = f"mail_location={self.store}:~/{self.store}"
            if self.store == "maildir":
                location = MAIL_LOCATION
            dest = self.wrapper(self.py(dest_kind, "b", self.dst, ["dsync-server"], location))
        else:
            dest = self.wrapper(dc.argv("b", self.dst, ["dsync-server"], []))
        if master.startswith("pydsync"):
            return self.py(master, "a", self.src, [*words, dest], MAIL_LOCATION)
        # the master's own store stays Maildir; rotate size only matters to a local mdbox
        local = self.dc.with_opts(MDBOX_ROTATE) if self.store == "mdbox" else self.dc
        return local.argv("a", self.src, words[:1], [*words[1:], dest])


def probe_pydsync(exe: str) -> str | None:
    """None when the pydsync CLI starts, else why it is unavailable.

    Only a missing program or a Python start-up failure counts: a doveadm-like CLI
    may well answer --help with a usage text and a non-zero exit.
    """
    if not os.access(exe, os.X_OK):
        return f"{exe} not found"
    try:
        p = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{exe} --help: {e}"
    out = p.stderr + p.stdout
    if p.returncode != 0 and "Traceback (most recent call last)" in out:
        lines = [ln for ln in out.splitlines() if ln.strip()]
        return f"{exe} --help exited {p.returncode}: {lines[-1] if lines else ''}"
    return None
