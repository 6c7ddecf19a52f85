"""Side-by-side benchmark of pydsync against real Dovecot dsync, reported as ratios.

Builds a seeded corpus once and, per corpus size, the start states (pairs.py); then each
round runs every chosen row once from a fresh clone of its start state, timing the whole
process tree (wall, CPU, peak RSS), and checks the result through doveadm (check.py).
Not a test: pytest never runs it.

    python bench/run.py [--messages N] [--repeat 3] [--only ROWS] [--scaling 1000,10000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import pwd
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from check import check_sync, compare, snapshot
from harness import (
    PATH,
    BenchError,
    Dovecot,
    chown_vmail,
    clone_tree,
    detect_version,
    freeze_pydsync,
    native_of,
    write_conf,
)
from pairs import Bed, Pair, keep_logs, prepare, tail
from report import Run, load_line, markdown, prep_line, scaling_table, summarise, table, title
from rows import Row, probe_pydsync, select
from timing import gnu_time, timed

ROOT = Path(__file__).resolve().parents[1]
SCALING_ROWS = "state,fast.d,fast.p"


def check_run(bed: Bed, pair: Pair, src: Path, dst: Path, store: str) -> list[str]:
    """The destination equals the source (backup), or both sides hold the merge (sync).

    A dbox destination is read by Dovecot as its own store, in place: no force-resync,
    and nothing on doveadm's stderr (no rebuild, no corruption found).
    """
    try:
        chown_vmail(dst)
        if store != "maildir":
            return compare(bed.ref, snapshot(bed.dc.at(store), dst, strict=True))
        if pair.b is None:
            return compare(bed.ref, snapshot(bed.dc, dst))
        chown_vmail(src)
        assert pair.want is not None
        return check_sync(pair.want, snapshot(bed.dc, src), snapshot(bed.dc, dst), pair.exact)
    except BenchError as e:
        return [f"check could not read the result: {e}"]


def one_run(bed: Bed, row: Row, rnd: int) -> Run:
    """Fresh clone of the row's start state, sync(2); time; then check."""
    args = bed.args
    pair = bed.pair(row)
    run = Run(row.id, rnd, rnd < args.warmup, "FAILED")
    rundir: Path = args.work / "run"
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    src, dst = rundir / "src", rundir / "dst"
    clone_tree(pair.a, src)
    if pair.b is not None:
        clone_tree(pair.b, dst)
    else:
        dst.mkdir()
        shutil.chown(dst, "vmail", "vmail")
    argv = bed.ctx(src, dst, rundir, row.work.store).argv(row.link, row.work.words(pair.state))
    (rundir / "argv").write_text(shlex.join(argv) + "\n")
    os.sync()
    run.load = os.getloadavg()[0]
    t = run.timing = timed(argv, rundir, args.timeout, args.gnu_time)
    if t.exit != 0 or t.timed_out:
        why = "timed out" if t.timed_out else f"exit {t.exit}"
        run.error = f"{why}: {tail(rundir / 'stderr')}"
    else:
        run.problems = [] if args.no_check else check_run(bed, pair, src, dst, row.work.store)
        if broken := pair.broken():
            run.problems.append(broken)
        if run.problems:
            run.error = "check: " + "; ".join(run.problems[:4])
    if run.error:
        keep_logs(rundir, args.work / f"failed-{row.id}")
    else:
        run.status = "ok"
    return run


def run_size(bed: Bed, rows: list[Row], why: str | None) -> tuple[list[Run], dict[str, Any]]:
    """Build every row's start state, then the rounds; returns the runs and the summary."""
    args = bed.args
    failed: dict[str, tuple[str, str]] = {}
    for row in rows:
        if row.pydsync and why:
            failed[row.id] = ("unavailable", why)
        elif err := bed.pair(row).unusable(row.work.mode == "-s"):
            failed[row.id] = ("FAILED", err)
    runs: list[Run] = []
    for rnd in range(args.warmup + args.repeat):
        for row in rows:
            if row.id in failed:
                continue
            run = one_run(bed, row, rnd)
            runs.append(run)
            t = run.timing
            print(
                f"n={bed.size} round {rnd}{' (warm-up)' if run.warmup else ''} {row.id}: "
                f"{run.status}"
                + (f" {t.wall:.3f}s" if t else "")
                + (f" — {run.error}" if run.error else ""),
                file=sys.stderr,
            )
            if run.status != "ok":  # a FAILED row stays failed; no more rounds for it
                failed[row.id] = ("FAILED", run.error)
    work: dict[str, tuple[int, str] | None] = {}
    for row in rows:
        pair = bed.pairs.get((row.work.pair, row.link))
        changes = pair.changes if pair else 0
        if row.work.pair == "empty":
            work[row.id] = (bed.size, "msg")
        else:
            work[row.id] = (changes, "chg") if changes else None
    failed = {k: v for k, v in failed.items() if not any(r.row == k for r in runs)}
    return runs, summarise(rows, runs, work, failed, args)


def git(*words: str) -> str:
    p = subprocess.run(["git", "-C", str(ROOT), *words], capture_output=True, text=True)
    return p.stdout.strip()


def environment(dc: Dovecot, args: argparse.Namespace) -> dict[str, Any]:
    rev = args.pydsync_commit
    if not rev:  # the working tree: say when it differs from HEAD
        rev = git("rev-parse", "--short", "HEAD")
        rev += "+dirty" if git("status", "--porcelain", "--", "pydsync_server", "hooks") else ""
    return {
        "started": args.started,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg_start": args.load_start,
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "dovecot": dc.version,
        "doveadm": dc.doveadm,
        "pydsync": args.pydsync,
        "pydsync_commit": rev,
        "doveadm_opts": list(dc.opts),
        "pydsync_opts": args.opt + args.py_opt,
        "rss_proc_method": "GNU time %M" if args.gnu_time else "sampled VmHWM",
        "pydsync_native": args.native,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="counted rounds")
    ap.add_argument("--warmup", type=int, default=0, help="uncounted rounds run first")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pydsync-bench"))
    ap.add_argument("--only", help="rows: ids, workloads, .links, a-e (default all)")
    ap.add_argument("--percent", type=float, default=1.0, help="sync rows: changes per side, %%")
    ap.add_argument("--changes", type=int, default=100, help="chg rows: changes, both sides")
    ap.add_argument(
        "--scaling",
        nargs="?",
        const="1000,10000",
        help=f"run rows (default {SCALING_ROWS}) at each corpus size instead of --messages",
    )
    ap.add_argument("--json", type=Path, help="results file (default WORK/results/…json)")
    ap.add_argument("--markdown", type=Path, help="also write the tables as markdown here")
    ap.add_argument("--timeout", type=float, default=1800, help="per run, seconds")
    ap.add_argument("--pydsync", default=str(ROOT / ".venv" / "bin" / "pydsync"))
    ap.add_argument(
        "--pydsync-rev",
        metavar="REV",
        help="run pydsync as committed at REV (e.g. HEAD), not the working tree",
    )
    ap.add_argument("--doveadm", default=shutil.which("doveadm", path=PATH) or "doveadm")
    ap.add_argument("--dovecot-version", help="skip detection (e.g. 2.4.1)")
    for flag, who in (("--opt", "doveadm and pydsync"), ("--dove-opt", "doveadm")):
        ap.add_argument(flag, action="append", default=[], metavar="KEY=VALUE", help=f"{who} -o")
    ap.add_argument("--py-opt", action="append", default=[], metavar="KEY=VALUE", help="pydsync -o")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness checks")
    ap.add_argument("--keep", action="store_true", help="keep the pairs and the last run")
    args = ap.parse_args(argv)
    args.work = args.work.resolve()
    if any(c.isspace() for c in str(args.work)):
        ap.error("--work must not contain spaces: doveadm splits a command destination on them")
    try:
        args.sizes = [int(n) for n in args.scaling.split(",")] if args.scaling else [args.messages]
        args.rows = select(args.only or (SCALING_ROWS if args.scaling else "all"))
    except ValueError as e:
        ap.error(str(e))
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
    conf = write_conf(args.work, version)
    args.pydsync_commit = None
    if args.pydsync_rev:
        args.pydsync, args.pydsync_commit = freeze_pydsync(
            ROOT, args.pydsync_rev, args.work, sys.executable
        )
    return Dovecot(args.doveadm, version, conf, tuple(args.opt + args.dove_opt))


def headline(args: argparse.Namespace, dc: Dovecot, manifest: dict[str, Any]) -> str:
    return (
        f"corpus: {manifest['messages']} messages, {manifest['bytes'] / 1e6:.1f} MB "
        f"(seed {args.seed}); Dovecot {dc.version}; {args.repeat} rounds "
        f"(+{args.warmup} warm-up); medians; ratios = median of per-round row ÷ baseline"
    )


def native_words(native: dict[str, str]) -> str:
    if not native:
        return "native path unknown"
    return f"native path {native['default']}, {native['pure']} with PYDSYNC_PUREPYTHON=1"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.gnu_time = gnu_time()
    args.started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    args.load_start = os.getloadavg()
    try:
        dc = setup(args)
    except BenchError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 1
    why = probe_pydsync(args.pydsync)
    args.native = {}
    if not why:
        try:
            args.native = {
                "default": native_of(args.pydsync, False),
                "pure": native_of(args.pydsync, True),
            }
        except BenchError as e:
            print(f"run.py: {e}", file=sys.stderr)
            return 1
        if any(r.twin for r in args.rows) and args.native != {"default": "c", "pure": "python"}:
            print(
                f"run.py: C and pure rows need both paths, pydsync has {args.native}",
                file=sys.stderr,
            )
            return 1
    results: dict[str, Any] = {}
    blocks: list[str] = []
    per_size: dict[int, dict[str, Any]] = {}
    for size in args.sizes:
        try:
            bed = prepare(args, dc, size)
        except BenchError as e:
            print(f"run.py: {e}", file=sys.stderr)
            return 1
        runs, summary = run_size(bed, args.rows, why)
        per_size[size] = summary
        blocks.append(
            "\n".join(
                [
                    headline(args, dc, bed.manifest),
                    table(summary),
                    prep_line(bed.prep),
                    load_line(runs),
                ]
            )
        )
        print(blocks[-1] + "\n")
        results[str(size)] = {
            "corpus": bed.manifest,
            "prep": bed.prep,
            "summary": summary,
            "runs": [asdict(r) for r in runs],
        }
        if not args.keep:
            shutil.rmtree(bed.dir, ignore_errors=True)
    if len(args.sizes) > 1:
        blocks.append("wall time against corpus size\n" + scaling_table(per_size))
        print(blocks[-1])
    out = args.json or args.work / "results" / time.strftime("bench-%Y%m%dT%H%M%S.json")
    env = environment(dc, args)
    doc = {
        "environment": env,
        "rounds": args.repeat,
        "warmup": args.warmup,
        "options": {"seed": args.seed, "percent": args.percent, "changes": args.changes},
        "rows": {r.id: title(r, args) + f" — {r.who}" for r in args.rows},
        "results": results,
    }
    write_atomic(out, json.dumps(doc, indent=2) + "\n")
    print(f"\nJSON: {out}")
    if args.markdown:
        intro = [
            f"`bench/run.py {shlex.join(sys.argv[1:] if argv is None else argv)}`, "
            f"{env['started']} to {env['when']}, host {env['host']} ({env['cpus']} CPUs), pydsync "
            f"{env['pydsync_commit']} ({native_words(env['pydsync_native'])}). "
            f"JSON: `{out.name}`. Load average (1/5/15 min) at the start "
            f"{', '.join(f'{x:.2f}' for x in env['loadavg_start'])}, at the end "
            f"{', '.join(f'{x:.2f}' for x in env['loadavg'])}."
        ]
        heading = (
            f"Benchmark run {env['when'][:10]}: {', '.join(map(str, args.sizes))} messages "
            f"(seed {args.seed}), Dovecot {dc.version}"
        )
        write_atomic(args.markdown, markdown(heading, intro, blocks))
    statuses = [r["status"] for s in per_size.values() for r in s.values()]
    return 0 if all(s in ("ok", "unavailable") for s in statuses) else 2


if __name__ == "__main__":
    sys.exit(main())
