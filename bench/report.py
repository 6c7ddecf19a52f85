"""Summaries of the runs: per-row medians, per-round ratios to the baseline row, the
text table, the corpus-size scaling table and the markdown page.

Ratios pair A and its baseline inside each round and take the median over rounds
(perf-baseline §1, "Protocol"): the machine drifts by more than the differences measured.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rows import Row
from timing import Timing

# wall ÷ doveadm: 1.5 is the release gate for no-change and incremental syncs (and
# perf-baseline §6's "must" for an initial copy); issue 4 asks 1.2 of the dbox rows.


@dataclass
class Run:
    row: str
    round: int
    warmup: bool
    status: str  # ok | FAILED
    timing: Timing | None = None
    error: str = ""
    problems: list[str] = field(default_factory=list)
    load: float | None = None  # 1-minute load average just before the run (shared machine)


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def spread(xs: list[float]) -> dict[str, float | None]:
    return {"median": med(xs), "min": min(xs, default=None), "max": max(xs, default=None)}


def title(row: Row, args: Any) -> str:
    return row.work.title.format(pct=f"{args.percent:g}", changes=args.changes)


def summarise(
    rows: list[Row],
    runs: list[Run],
    work: dict[str, tuple[int, str] | None],
    failed: dict[str, tuple[str, str]],
    args: Any,
) -> dict[str, dict[str, Any]]:
    """Per row: status, medians and, next to its baseline, the per-round ratios.

    `work` is (count, unit) for the rate column (messages or changes); `failed` gives
    (status, why) for rows that could not run (pydsync unavailable, no pair to start from).
    """
    counted = [r for r in runs if not r.warmup]
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        mine = [r for r in counted if r.row == row.id]
        ok = [r.timing for r in mine if r.status == "ok" and r.timing]
        bad = [r for r in runs if r.row == row.id and r.status != "ok"]
        s: dict[str, Any] = {
            "title": title(row, args),
            "who": row.who,
            "workload": row.work.name,
            "link": row.link,
            "baseline": row.baseline,
            "n": len(ok),
        }
        if row.id in failed:
            s["status"], s["error"] = failed[row.id]
        elif bad:
            s.update(status="FAILED", error=bad[0].error)
        else:
            s["status"] = "ok" if ok else "not run"
        s["wall"] = spread([t.wall for t in ok])
        s["cpu"] = med([t.user + t.sys for t in ok])
        s["user"], s["sys"] = med([t.user for t in ok]), med([t.sys for t in ok])
        s["rss_proc_mb"] = med([t.rss_proc_mb for t in ok])
        s["rss_tree_mb"] = med([t.rss_tree_mb for t in ok])
        s["load"] = spread([r.load for r in mine if r.load is not None])
        w, unit = s["wall"]["median"], work.get(row.id)
        s["rate"] = f"{unit[0] / w:.0f} {unit[1]}/s" if w and unit else None
        out[row.id] = s
    for row in rows:
        base = row.baseline
        if base and out[row.id]["status"] == "ok" and out.get(base, {}).get("status") == "ok":
            ratio = pair_ratios(counted, row.id, base)
            out[row.id]["ratio"] = ratio
            wall = ratio["wall"]["median"]
            most = row.work.target
            out[row.id]["target"] = {"wall_max": most, "met": wall is not None and wall <= most}
        twin = row.twin
        if twin and out[row.id]["status"] == "ok" and out.get(twin, {}).get("status") == "ok":
            out[row.id]["twin"] = twin
            out[row.id]["pure_over_c"] = pair_ratios(counted, row.id, twin)
    return out


def pair_ratios(runs: list[Run], a: str, b: str) -> dict[str, Any]:
    """Per-round A ÷ B, then the median over rounds."""
    by = {(r.row, r.round): r.timing for r in runs if r.status == "ok" and r.timing}
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


def wall_cell(w: dict[str, float | None], n: int) -> str:
    if not n:
        return "—"
    spec = ".3f" if (w["median"] or 0) < 1 else ".2f"
    return f"{fmt(w['median'], spec)} ({fmt(w['min'], spec)}–{fmt(w['max'], spec)})"


def cells(sid: str, r: dict[str, Any]) -> tuple[str, ...]:
    ra = r.get("ratio")
    tgt = r.get("target")
    return (
        sid,
        r["who"],
        r["status"],
        str(r["n"]),
        wall_cell(r["wall"], r["n"]),
        fmt(r["cpu"], ".3f" if (r["cpu"] or 0) < 1 else ".2f"),
        f"{fmt(r['rss_proc_mb'], '.1f')} / {fmt(r['rss_tree_mb'], '.1f')}",
        r["rate"] or "—",
        (
            f"{fmt(ra['wall']['median'])} ({fmt(ra['wall']['min'])}–"
            f"{fmt(ra['wall']['max'])}) vs {r['baseline']}"
        )
        if ra
        else "—",
        fmt(ra["cpu"]["median"]) if ra else "—",
        fmt(ra["rss_proc"]["median"]) if ra else "—",
        (f"{'yes' if tgt['met'] else 'NO'} (≤ {tgt['wall_max']:g})") if tgt else "",
    )


HEAD = tuple(
    "id|who|status|n|wall s med (min–max)|cpu s|RSS MB proc/tree|rate|"
    "wall ÷ base (min–max)|cpu ÷ base|RSS ÷ base|target".split("|")
)


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(wd) for c, wd in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def table(summary: dict[str, dict[str, Any]]) -> str:
    """One block per workload; failures and their first problems listed below."""
    keys = list(summary)
    lines = aligned([HEAD] + [cells(k, summary[k]) for k in keys])
    out = [lines[0]]
    notes: list[str] = []
    last = None
    for k, line in zip(keys, lines[1:], strict=True):
        r = summary[k]
        if r["title"] != last:
            out.append(f"— {r['title']}")
            last = r["title"]
        out.append(line)
        if r.get("error"):
            notes.append(f"  {k}: {r['status']}: {r['error']}")
    out += speedups(summary)
    return "\n".join(out + ([""] + notes if notes else []))


def speedups(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The C path's speed-up: each pure-Python row ÷ its C row, per round, then the median."""
    rows: list[tuple[str, ...]] = [("pure row", "C row", "wall pure ÷ C (min–max)", "cpu pure ÷ C")]
    for k, r in summary.items():
        if sp := r.get("pure_over_c"):
            w = sp["wall"]
            rows.append(
                (k, r["twin"], f"{fmt(w['median'])} ({fmt(w['min'])}–{fmt(w['max'])})",
                 fmt(sp["cpu"]["median"]))
            )  # fmt: skip
    if len(rows) == 1:
        return []
    return ["", "C path (cffi) against the pure-Python twin (PYDSYNC_PUREPYTHON=1):"] + [
        "  " + line for line in aligned(rows)
    ]


def scaling_table(per_size: dict[int, dict[str, dict[str, Any]]]) -> str:
    """Median wall per corpus size (with the ratio to the baseline), and the growth."""
    sizes = sorted(per_size)
    ids = list(dict.fromkeys(k for n in sizes for k in per_size[n]))
    head = ("id", "who", *(f"{n} msgs: wall s (÷ base)" for n in sizes), "largest ÷ smallest")
    rows = [head]
    for k in ids:
        walls: list[float | None] = []
        row = [k, next(per_size[n][k]["who"] for n in sizes if k in per_size[n])]
        for n in sizes:
            r = per_size[n].get(k)
            w = r["wall"]["median"] if r and r["status"] == "ok" else None
            walls.append(w)
            ra = r.get("ratio") if r else None
            cell = fmt(w, ".3f") if r and r["status"] == "ok" else (r or {}).get("status", "—")
            if ra:
                cell += f" (×{fmt(ra['wall']['median'])})"
            row.append(cell)
        first, last = walls[0], walls[-1]
        row.append(fmt(last / first) if first and last else "—")
        rows.append(tuple(row))
    return "\n".join(aligned(rows))


def prep_line(prep: dict[str, Any]) -> str:
    """The syncs that built each link's synced pair: wall of the initial one, then the
    exit codes of the stateful ones that settled it."""
    done = []
    for k, runs in prep.items():
        if k.startswith("initial sync") and runs:
            first = runs[0]
            cell = f"{k.split()[-1]} {first['wall']:.2f} s"
            cell += "" if first["exit"] == 0 else f" (exit {first['exit']})"
            settle = [str(r["exit"]) for r in runs[1:]]
            done.append(cell + (f" + settle exit {','.join(settle)}" if settle else ""))
    head = "initial sync -s '' into an empty side b, one run each (then stateful settle runs): "
    return head + ", ".join(done) if done else ""


def load_line(runs: list[Run]) -> str:
    """The machine's 1-minute load average before the counted runs (it has 2 CPUs shared
    with other jobs): a ratio from a round under heavy load is less sure."""
    xs = [r.load for r in runs if r.load is not None and not r.warmup]
    if not xs:
        return ""
    return (
        f"load average (1 min) before each run: median {fmt(med(xs))}, "
        f"min {fmt(min(xs))}, max {fmt(max(xs))}"
    )


def markdown(heading: str, intro: list[str], blocks: list[str]) -> str:
    body = [f"# {heading}", "", *intro, ""]
    for b in blocks:
        body += ["```", b, "```", ""]
    return "\n".join(body)
