"""Side-by-side benchmark of pydsync against real Dovecot dsync, reported as ratios.

Builds a seeded corpus once, then for each round runs every scenario once from a fresh
copy of the source, timing the whole process tree (wall, CPU and peak RSS), and checks
the destination against the source through doveadm. Not a test: pytest never runs it.

    python bench/run.py [--messages N] [--repeat 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import pwd
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import corpus

ROOT = Path(__file__).resolve().parents[1]
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
FETCH_FIELDS = ("mailbox", "uid", "guid", "flags", "date.received", "size.physical")


def env_i(user: str, home: Path) -> list[str]:
    """A clean environment as in vectors/README.md: only PATH, USER and HOME."""
    return ["/usr/bin/env", "-i", f"PATH={PATH}", f"USER={user}", f"HOME={home}"]


class BenchError(Exception):
    """A setup step or a correctness check failed; the message says which."""


# ---------------------------------------------------------------- Dovecot invocation


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


def sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """Run an untimed helper command; raise with its stderr if it fails."""
    p = subprocess.run(argv, capture_output=True, check=False, **kw)
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip()
        raise BenchError(f"{shlex.join(argv)} exited {p.returncode}: {err[-600:]}")
    return p


def copy_tree(src: Path, dst: Path, owner: str | None = "vmail") -> None:
    shutil.rmtree(dst, ignore_errors=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    sh(["cp", "-a", str(src), str(dst)])
    if owner:
        sh(["chown", "-R", f"{owner}:{owner}", str(dst)])


# ---------------------------------------------------------------- correctness check


def parse_fetch(stream: IO[bytes]) -> Iterator[dict[str, str]]:
    """Records of `doveadm -f pager fetch '<FETCH_FIELDS> text'`.

    pager prints `key: value` lines, then `text:` and the raw message, and "\\f\\n"
    between records; size.physical says how many bytes the message takes.
    """
    while True:
        rec: dict[str, str] = {}
        for key in FETCH_FIELDS:
            line = stream.readline()
            if not line and not rec:
                return
            k, _, v = line.decode("utf-8", "replace").rstrip("\n").partition(":")
            if k != key:
                raise BenchError(f"fetch output: expected {key!r}, got {line[:80]!r}")
            rec[key] = v.strip()
        if stream.readline() != b"text:\n":
            raise BenchError(f"fetch output: no text after {rec}")
        body = stream.read(int(rec["size.physical"]))
        # Dovecot stores LF line ends when it saves (mail_save_crlf=no): hash them alike.
        rec["sha1"] = hashlib.sha1(body.replace(b"\r\n", b"\n")).hexdigest()
        sep = stream.read(2)
        if sep not in (b"", b"\f\n"):
            raise BenchError(f"fetch output out of step after {rec['mailbox']} uid {rec['uid']}")
        yield rec


def tab_rows(out: bytes) -> list[dict[str, str]]:
    lines = out.decode("utf-8", "replace").splitlines()
    if not lines:
        return []
    names = lines[0].split("\t")
    return [dict(zip(names, ln.split("\t"), strict=False)) for ln in lines[1:]]


def snapshot(dc: Dovecot, home: Path) -> dict[str, Any]:
    """Mailbox list/status, subscriptions and every mail (GUID, flags, body hash)."""
    status = sh(
        dc.argv(
            "check",
            home,
            ["mailbox", "status"],
            ["messages uidnext uidvalidity guid", "*"],
            fmt="tab",
        )
    ).stdout
    subs = sh(dc.argv("check", home, ["mailbox", "list"], ["-s"], fmt="tab")).stdout
    argv = dc.argv("check", home, ["fetch"], [" ".join(FETCH_FIELDS) + " text", "all"], fmt="pager")
    mails: dict[str, tuple[str, ...]] = {}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        assert p.stdout is not None and p.stderr is not None
        for r in parse_fetch(p.stdout):
            flags = " ".join(sorted(f for f in r["flags"].split() if f != "\\Recent"))
            mails[f"{r['mailbox']}/{r['uid']}"] = (r["guid"], flags, r["date.received"], r["sha1"])
        err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0 or err.strip():
        raise BenchError(f"doveadm fetch exited {p.returncode}: {err.strip()[-600:]}")
    boxes = {r["mailbox"]: r for r in tab_rows(status)}
    return {
        "mailboxes": boxes,
        "subscriptions": sorted(r["mailbox"] for r in tab_rows(subs)),
        "mails": mails,
    }


def compare(src: dict[str, Any], dst: dict[str, Any]) -> list[str]:
    """Human-readable differences, empty when the destination equals the source."""
    probs: list[str] = []
    if src["mailboxes"].keys() != dst["mailboxes"].keys():
        probs.append(f"mailboxes {sorted(src['mailboxes'])} != {sorted(dst['mailboxes'])}")
    for name, row in src["mailboxes"].items():
        other = dst["mailboxes"].get(name, row)
        diff = [f"{k} {v} != {other.get(k)}" for k, v in row.items() if other.get(k) != v]
        if diff:
            probs.append(f"mailbox {name}: " + ", ".join(diff))
    if src["subscriptions"] != dst["subscriptions"]:
        probs.append(f"subscriptions {src['subscriptions']} != {dst['subscriptions']}")
    sm, dm = src["mails"], dst["mails"]
    missing, extra = sm.keys() - dm.keys(), dm.keys() - sm.keys()
    if missing:
        probs.append(f"{len(missing)} mails missing, e.g. {sorted(missing)[:3]}")
    if extra:
        probs.append(f"{len(extra)} extra mails, e.g. {sorted(extra)[:3]}")
    what = ("guid", "flags", "date.received", "body sha1")
    for i, name in enumerate(what):
        bad = sorted(k for k in sm.keys() & dm.keys() if sm[k][i] != dm[k][i])
        if bad:
            k = bad[0]
            probs.append(
                f"{len(bad)} mails differ in {name}, e.g. {k}: {sm[k][i]!r} != {dm[k][i]!r}"
            )
    return probs


# ---------------------------------------------------------------- timing


class TreeSampler(threading.Thread):
    """Polls /proc for the processes of one process group.

    Keeps the peak of their summed VmRSS (the tree) and the largest VmHWM seen (one
    process's own peak; unlike ru_maxrss it is not inflated by the pre-exec image of
    the forking Python parent, because exec starts a fresh mm).
    """

    def __init__(self, pgid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pgid, self.interval = pgid, interval
        self.tree_kb = self.hwm_kb = 0
        self.halt = threading.Event()

    def sample(self) -> None:
        total = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[2]) != self.pgid:  # pgrp
                        continue
                with open(f"/proc/{pid}/status", "rb") as f:
                    status = f.read()
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            for key in (b"VmRSS:", b"VmHWM:"):
                m = re.search(key + rb"\s+(\d+) kB", status)
                kb = int(m.group(1)) if m else 0
                if key == b"VmRSS:":
                    total += kb
                else:
                    self.hwm_kb = max(self.hwm_kb, kb)
        self.tree_kb = max(self.tree_kb, total)

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)


@dataclass
class Timing:
    exit: int
    wall: float
    user: float
    sys: float
    rss_proc_mb: float  # largest single process of the tree: GNU time %M, else sampled VmHWM
    rss_tree_mb: float  # peak of the sampled VmRSS sum over the process group
    rss_hwm_sampled_mb: float
    rss_method: str
    timed_out: bool


def gnu_time() -> str | None:
    """/usr/bin/time if it is GNU time (the baseline's %M accounting), else None."""
    try:
        p = subprocess.run(["/usr/bin/time", "--version"], capture_output=True, text=True)
    except OSError:
        return None
    return "/usr/bin/time" if "GNU" in p.stdout + p.stderr else None


def timed(argv: list[str], logdir: Path, timeout: float, gtime: str | None) -> Timing:
    """Run argv in its own process group; wait4() rusage covers every reaped descendant.

    ru_maxrss survives exec, so a child forked from this (large) Python process would
    report our RSS: GNU time, a small C parent, measures %M instead when present.
    """
    mfile = logdir / "maxrss"
    if gtime:
        argv = [gtime, "-f", "%M", "-o", str(mfile), "--", *argv]
    with open(logdir / "stdout", "wb") as out, open(logdir / "stderr", "wb") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            cwd=logdir,
        )
        sampler = TreeSampler(p.pid)
        sampler.start()
        fired = threading.Event()

        def kill() -> None:
            fired.set()
            os.killpg(p.pid, 9)

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
    sampler.halt.set()
    sampler.join()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, 9)  # stragglers (e.g. an orphaned server) must not outlive the run
    hwm = sampler.hwm_kb / 1024
    lines = mfile.read_text().split() if mfile.exists() else []
    proc = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else None
    return Timing(
        p.returncode,
        wall,
        ru.ru_utime,
        ru.ru_stime,
        hwm if proc is None else proc,
        sampler.tree_kb / 1024,
        hwm,
        "sampled VmHWM" if proc is None else "GNU time %M",
        fired.is_set(),
    )


# ---------------------------------------------------------------- scenarios


@dataclass
class Ctx:
    """Everything a scenario needs to build its command line for one run."""

    dc: Dovecot
    pydsync: str
    py_opts: list[str]
    src: Path  # home of the source user "a" (Maildir inside)
    dst: Path  # home of the destination user "b"
    rundir: Path

    def wrapper(self, name: str, argv: list[str]) -> str:
        """A command destination: doveadm appends `dsync-server`, the script ignores it.

        `exec` keeps no shell holding the master's pipe, so a dying server is seen as
        EOF at once (dovecot-2.4-notes §6, item 9).
        """
        path = self.rundir / name
        path.write_text(f"#!/bin/sh\nexec {shlex.join(argv)}\n")
        path.chmod(0o755)
        return str(path)

    def py(self, user: str, home: Path, args: list[str]) -> list[str]:
        return [*env_i(user, home), self.pydsync, "-o", MAIL_LOCATION, *self.py_opts, *args]

    def argv(self, sc: Scenario) -> list[str]:
        """The timed command: master for user a (home src), destination user b (home dst)."""
        if sc.dest == "local":
            dest = f"maildir:{self.dst}/Maildir"
        elif sc.dest == "pydsync":
            dest = self.wrapper("srv.sh", self.py("b", self.dst, ["dsync-server"]))
        else:
            dest = self.wrapper("srv.sh", self.dc.argv("b", self.dst, ["dsync-server"], []))
        if sc.master == "pydsync":
            return self.py("a", self.src, ["backup", dest])
        return self.dc.argv("a", self.src, ["backup"], [dest])


@dataclass(frozen=True)
class Scenario:
    id: str
    master: str  # doveadm | pydsync: runs `backup` for the source user
    dest: str  # doveadm | pydsync: the dsync-server behind a command destination; or local
    baseline: str | None  # the all-Dovecot row this one is compared with

    @property
    def title(self) -> str:
        if self.dest == "local":
            return f"{self.master} backup, local maildir"
        return f"{self.master} backup | {self.dest} dsync-server"

    @property
    def pydsync(self) -> bool:
        return "pydsync" in (self.master, self.dest)


SCENARIOS = (
    Scenario("a", "doveadm", "doveadm", None),
    Scenario("b", "doveadm", "pydsync", "a"),
    Scenario("c", "pydsync", "doveadm", "a"),
    Scenario("e", "doveadm", "local", None),
    Scenario("d", "pydsync", "local", "e"),
)


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


# ---------------------------------------------------------------- the rounds


@dataclass
class Run:
    scenario: str
    round: int
    warmup: bool
    status: str  # ok | FAILED
    timing: Timing | None = None
    error: str = ""
    problems: list[str] = field(default_factory=list)


def tail(path: Path, n: int = 6) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-n:])


def keep_logs(rundir: Path, to: Path) -> None:
    """Keep a failed run's argv, scripts and output (not its mail copies) for a post-mortem."""
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir(parents=True)
    for f in rundir.iterdir():
        if f.is_file():
            shutil.copy2(f, to / f.name)


def one_run(sc: Scenario, ctx: Ctx, ref: dict[str, Any], args: argparse.Namespace, rnd: int) -> Run:
    """Fresh copy of the source, empty destination, sync(2); time; then check."""
    run = Run(sc.id, rnd, rnd < args.warmup, "FAILED")
    work: Path = args.work
    shutil.rmtree(ctx.rundir, ignore_errors=True)
    ctx.rundir.mkdir(parents=True)
    copy_tree(work / "ref" / "a", ctx.src)
    ctx.dst.mkdir()
    shutil.chown(ctx.dst, "vmail", "vmail")
    argv = ctx.argv(sc)
    (ctx.rundir / "argv").write_text(shlex.join(argv) + "\n")
    os.sync()
    t = run.timing = timed(argv, ctx.rundir, args.timeout, args.gnu_time)
    if t.exit != 0 or t.timed_out:
        why = "timed out" if t.timed_out else f"exit {t.exit}"
        run.error = f"{why}: {tail(ctx.rundir / 'stderr')}"
        keep_logs(ctx.rundir, work / f"failed-{sc.id}")
        return run
    if not args.no_check:
        try:
            copy_tree(ctx.dst, ctx.rundir / "check")
            run.problems = compare(ref, snapshot(ctx.dc, ctx.rundir / "check"))
        except BenchError as e:
            run.problems = [f"check could not read the destination: {e}"]
        if run.problems:
            run.error = "check: " + "; ".join(run.problems[:4])
            keep_logs(ctx.rundir, work / f"failed-{sc.id}")
            return run
    run.status = "ok"
    return run


def prepare(args: argparse.Namespace, dc: Dovecot) -> tuple[dict[str, Any], dict[str, Any]]:
    """Corpus (reused when present), indexed source copy, and its reference snapshot."""
    work: Path = args.work
    cdir = work / f"corpus-s{args.seed}-n{args.messages}-v{corpus.GENERATOR_VERSION}"
    if not (cdir / "manifest.json").exists():
        shutil.rmtree(cdir, ignore_errors=True)
        cdir.mkdir(parents=True)
        print(f"generating corpus in {cdir} …", file=sys.stderr)
        manifest = corpus.generate(args.seed, args.messages, cdir / "Maildir")
        (cdir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    manifest = json.loads((cdir / "manifest.json").read_text())
    # Index the source once, as a live Dovecot would already have (perf-baseline §2).
    copy_tree(cdir / "Maildir", work / "ref" / "a" / "Maildir")
    sh(dc.argv("a", work / "ref" / "a", ["mailbox", "status"], ["messages", "*"]))
    copy_tree(work / "ref" / "a", work / "ref-check")
    ref = snapshot(dc, work / "ref-check")
    shutil.rmtree(work / "ref-check")
    if len(ref["mails"]) != manifest["messages"]:
        raise BenchError(
            f"doveadm sees {len(ref['mails'])} mails in the corpus, expected {manifest['messages']}"
        )
    return manifest, ref


def run_rounds(
    args: argparse.Namespace, dc: Dovecot, ref: dict[str, Any], unavailable: dict[str, str]
) -> list[Run]:
    rundir = args.work / "run"
    py_opts = [x for o in args.opt + args.py_opt for x in ("-o", o)]
    ctx = Ctx(dc, args.pydsync, py_opts, rundir / "src", rundir / "dst", rundir)
    runs: list[Run] = []
    failed: set[str] = set()
    chosen = [s for s in SCENARIOS if s.id in args.only]
    for rnd in range(args.warmup + args.repeat):
        for sc in chosen:
            if sc.id in failed or sc.id in unavailable:
                continue
            run = one_run(sc, ctx, ref, args, rnd)
            runs.append(run)
            t = run.timing
            print(
                f"round {rnd}{' (warm-up)' if run.warmup else ''} {sc.id}: {run.status}"
                + (f" {t.wall:.2f}s" if t else "")
                + (f" — {run.error}" if run.error else ""),
                file=sys.stderr,
            )
            if run.status != "ok":
                failed.add(sc.id)  # a FAILED row stays failed; do not spend more rounds on it
    if not args.keep:
        shutil.rmtree(ctx.rundir, ignore_errors=True)
    return runs


# ---------------------------------------------------------------- report


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def spread(xs: list[float]) -> dict[str, float | None]:
    return {"median": med(xs), "min": min(xs, default=None), "max": max(xs, default=None)}


def summarise(
    runs: list[Run], manifest: dict[str, Any], unavailable: dict[str, str], only: set[str]
) -> dict[str, dict[str, Any]]:
    counted = [r for r in runs if not r.warmup]
    out: dict[str, dict[str, Any]] = {}
    chosen = [sc for sc in SCENARIOS if sc.id in only]
    for sc in chosen:
        mine = [r for r in counted if r.scenario == sc.id]
        ok = [r.timing for r in mine if r.status == "ok" and r.timing]
        bad = [r for r in runs if r.scenario == sc.id and r.status != "ok"]
        row: dict[str, Any] = {"title": sc.title, "baseline": sc.baseline, "n": len(ok)}
        if sc.id in unavailable:
            row.update(status="unavailable", error=unavailable[sc.id])
        elif bad:
            row.update(status="FAILED", error=bad[0].error)
        else:
            row["status"] = "ok" if ok else "not run"
        row["wall"] = spread([t.wall for t in ok])
        row["cpu"] = med([t.user + t.sys for t in ok])
        row["user"], row["sys"] = med([t.user for t in ok]), med([t.sys for t in ok])
        row["rss_proc_mb"] = med([t.rss_proc_mb for t in ok])
        row["rss_tree_mb"] = med([t.rss_tree_mb for t in ok])
        w = row["wall"]["median"]
        row["msgs_per_s"] = manifest["messages"] / w if w else None
        row["mb_per_s"] = manifest["bytes"] / 1e6 / w if w else None
        out[sc.id] = row
    for sc in chosen:
        if sc.baseline and out[sc.id]["status"] == "ok" and out[sc.baseline]["status"] == "ok":
            out[sc.id]["ratio"] = pair_ratios(counted, sc.id, sc.baseline)
    return out


def pair_ratios(runs: list[Run], a: str, b: str) -> dict[str, Any]:
    """Per-round A ÷ B, then the median over rounds (perf-baseline §1, "Protocol")."""
    by = {(r.scenario, r.round): r.timing for r in runs if r.status == "ok" and r.timing}
    rounds = sorted({rnd for (s, rnd) in by if s == a and (b, rnd) in by})
    out: dict[str, Any] = {}
    metrics: dict[str, Callable[[Timing], float]] = {
        "wall": lambda t: t.wall,
        "cpu": lambda t: t.user + t.sys,
        "rss_proc": lambda t: t.rss_proc_mb,
        "rss_tree": lambda t: t.rss_tree_mb,
    }
    for name, get in metrics.items():
        xs = [
            get(ta) / get(tb)
            for rnd in rounds
            if (ta := by[(a, rnd)]) and (tb := by[(b, rnd)]) and get(tb) > 0
        ]
        out[name] = spread(xs)
    return out


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def table(summary: dict[str, dict[str, Any]]) -> str:
    head = tuple(
        "id|scenario|status|n|wall s med (min–max)|cpu s|RSS MB proc/tree|msg/s|"
        "wall ÷ base (min–max)|cpu ÷ base|RSS ÷ base".split("|")
    )
    rows = [head]
    notes: list[str] = []
    for sid, r in summary.items():
        w, ra = r["wall"], r.get("ratio")
        rows.append(
            (
                sid,
                r["title"],
                r["status"],
                str(r["n"]),
                f"{fmt(w['median'])} ({fmt(w['min'])}–{fmt(w['max'])})" if r["n"] else "—",
                fmt(r["cpu"]),
                f"{fmt(r['rss_proc_mb'], '.1f')} / {fmt(r['rss_tree_mb'], '.1f')}",
                fmt(r["msgs_per_s"], ".0f"),
                (
                    f"{fmt(ra['wall']['median'])} ({fmt(ra['wall']['min'])}–"
                    f"{fmt(ra['wall']['max'])}) vs {r['baseline']}"
                )
                if ra
                else "—",
                fmt(ra["cpu"]["median"]) if ra else "—",
                fmt(ra["rss_proc"]["median"]) if ra else "—",
            )
        )
        if r.get("error"):
            notes.append(f"  {sid}: {r['status']}: {r['error']}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(wd) for c, wd in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines + ([""] + notes if notes else []))


# ---------------------------------------------------------------- main


def environment(dc: Dovecot, args: argparse.Namespace) -> dict[str, Any]:
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "dovecot": dc.version,
        "doveadm": dc.doveadm,
        "pydsync": args.pydsync,
        "pydsync_commit": rev,
        "doveadm_opts": list(dc.opts),
        "pydsync_opts": args.opt + args.py_opt,
        "rss_proc_method": "GNU time %M" if args.gnu_time else "sampled VmHWM",
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="counted rounds")
    ap.add_argument("--warmup", type=int, default=0, help="uncounted rounds run first")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pydsync-bench"))
    ap.add_argument("--only", default="a,b,c,d,e", help="comma-separated scenario ids")
    ap.add_argument("--json", type=Path, help="results file (default WORK/results/…json)")
    ap.add_argument("--timeout", type=float, default=1800, help="per run, seconds")
    ap.add_argument("--pydsync", default=str(ROOT / ".venv" / "bin" / "pydsync"))
    ap.add_argument("--doveadm", default=shutil.which("doveadm", path=PATH) or "doveadm")
    ap.add_argument("--dovecot-version", help="skip detection (e.g. 2.4.1)")
    ap.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="-o for every doveadm and pydsync call (e.g. mail_fsync=never)",
    )
    ap.add_argument(
        "--dove-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra -o for every doveadm call",
    )
    ap.add_argument(
        "--py-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra -o for every pydsync call",
    )
    ap.add_argument("--no-check", action="store_true", help="skip the correctness check")
    ap.add_argument("--keep", action="store_true", help="keep the last run's directories")
    args = ap.parse_args(argv)
    args.work = args.work.resolve()
    if any(c.isspace() for c in str(args.work)):
        ap.error("--work must not contain spaces: doveadm splits a command destination on them")
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    if args.only - {sc.id for sc in SCENARIOS}:
        ap.error(f"unknown scenario ids: {sorted(args.only - {sc.id for sc in SCENARIOS})}")
    for sc in SCENARIOS:  # a ratio needs its baseline in the same rounds
        if sc.id in args.only and sc.baseline:
            args.only.add(sc.baseline)
    return args


def setup(args: argparse.Namespace) -> Dovecot:
    if os.geteuid() != 0:
        raise BenchError("run as root: doveadm drops privileges to vmail (vectors/README.md)")
    try:
        pwd.getpwnam("vmail")
    except KeyError as e:
        raise BenchError("needs a `vmail` system user") from e
    version = detect_version(args.dovecot_version)
    args.work.mkdir(parents=True, exist_ok=True)
    args.work.chmod(0o755)
    conf = args.work / f"dovecot-{version}.conf"
    conf.write_text((CONF_24 if not version.startswith("2.3") else CONF_23) + CONF_COMMON)
    return Dovecot(args.doveadm, version, conf, tuple(args.opt + args.dove_opt))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.gnu_time = gnu_time()
    try:
        dc = setup(args)
        manifest, ref = prepare(args, dc)
    except BenchError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 1
    why = probe_pydsync(args.pydsync)
    unavailable = {s.id: why for s in SCENARIOS if s.pydsync and why and s.id in args.only}
    runs = run_rounds(args, dc, ref, unavailable)
    summary = summarise(runs, manifest, unavailable, args.only)
    print(
        f"corpus: {manifest['messages']} messages, {manifest['bytes'] / 1e6:.1f} MB "
        f"(seed {args.seed}); Dovecot {dc.version}; {args.repeat} rounds "
        f"(+{args.warmup} warm-up); medians; ratios = median of per-round A ÷ baseline"
    )
    print(table(summary))
    out = args.json or args.work / "results" / time.strftime("bench-%Y%m%dT%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "environment": environment(dc, args),
        "corpus": manifest,
        "rounds": args.repeat,
        "warmup": args.warmup,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"\nJSON: {out}")
    return 0 if all(r["status"] in ("ok", "unavailable") for r in summary.values()) else 2


if __name__ == "__main__":
    sys.exit(main())
