"""Start states for the runs, built once per invocation and corpus size (untimed).

`ref/a` is the corpus indexed by Dovecot. Per link, an initial `sync -s ""` by that
link's own programs copies it into an empty side b: the synced pair and its state.
Clones of a synced pair with seeded doveadm changes on both sides (mutate.py) give the
changed pairs. Every run then starts from a clone of one of these, and its check knows
what to expect: the reference snapshot, or the merge of the changes.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import corpus
import mutate
from check import Content, Snapshot, compare, merge, snapshot_clone
from harness import (
    BenchError,
    Dovecot,
    Seal,
    broken_seal,
    chown_vmail,
    clone_tree,
    copy_tree,
    seal_tree,
    sh,
)
from rows import Ctx, Row
from timing import Timing, timed

SETTLE = 3  # stateful syncs tried after the initial sync


@dataclass
class Pair:
    """A start state: side a's home, side b's home (None: an empty destination)."""

    a: Path
    b: Path | None
    state: str | None = None  # the -s state printed by the initial sync
    want: Content | None = None  # both sides after a sync, by (mailbox, GUID)
    exact: Snapshot | None = None  # both sides must equal this, UID for UID
    changes: int = 0  # seeded changes made on the two sides together
    seals: list[tuple[Path, Seal]] = field(default_factory=list)
    error: str = ""  # preparing it failed: every row on it FAILED
    state_error: str = ""  # no stateful sync worked on it: its -s rows FAILED

    def unusable(self, stateful: bool) -> str:
        """Why a row cannot start from this pair, or ""."""
        return self.error or (self.state_error if stateful else "")

    def broken(self) -> str | None:
        return next((why for home, s in self.seals if (why := broken_seal(home, s))), None)


@dataclass
class Bed:
    """Everything prepared for one corpus size."""

    dc: Dovecot
    args: Any  # the argparse namespace of run.py
    size: int
    dir: Path
    manifest: dict[str, Any]
    ref: Snapshot
    pairs: dict[tuple[str, str], Pair] = field(default_factory=dict)
    prep: dict[str, Any] = field(default_factory=dict)  # initial syncs, changes: for the JSON

    @property
    def ref_home(self) -> Path:
        return self.dir / "ref" / "a"

    def ctx(self, src: Path, dst: Path, rundir: Path, store: str = "maildir") -> Ctx:
        py_opts = [x for o in self.args.opt + self.args.py_opt for x in ("-o", o)]
        return Ctx(self.dc, self.args.pydsync, py_opts, src, dst, rundir, store)

    def pair(self, row: Row) -> Pair:
        return self.pair_for(row.work.pair, row.link)

    def pair_for(self, kind: str, link: str) -> Pair:
        """The pair of this kind for this link, built on first use."""
        if (kind, link) not in self.pairs:
            if kind == "empty":
                built = Pair(self.ref_home, None, exact=self.ref)
                built.seals = [(self.ref_home, seal_tree(self.ref_home))]
            elif kind == "synced":
                built = self.synced(link)
            else:
                built = self.changed(kind, link)
            self.pairs[(kind, link)] = built
        return self.pairs[(kind, link)]

    def per_side(self, kind: str) -> tuple[int, int]:
        if kind == "sync-pct":
            k = max(1, round(self.size * self.args.percent / 100))
            return k, k
        n = self.args.changes
        return (n + 1) // 2, n // 2

    def synced(self, link: str) -> Pair:
        """Initial `sync -s ""` of ref/a into an empty side b by the link's own programs,
        then stateful syncs until one succeeds (at most SETTLE): the pair in steady use.

        Dovecot cannot always sync statefully after a large initial sync: the state keeps
        the lower of the two sides' modseqs (dsync-algorithm §8.6), and the importing
        side's transaction log has rotated past it ("Modseq 1 no longer in transaction
        log … retry with a full sync", exit 2; seen here at 50k messages). Such a pair
        has no stateful start state, and its stateful rows fail with that reason.
        """
        top = self.dir / "pairs" / f"synced-{link}"
        pair = Pair(top / "a", top / "b", exact=self.ref, want=self.ref.content())
        clone_tree(self.ref_home, pair.a)
        assert pair.b is not None
        pair.b.mkdir()
        shutil.chown(pair.b, "vmail", "vmail")
        runs: list[dict[str, Any]] = []
        self.prep[f"initial sync {link}"] = runs
        state = ""
        for attempt in range(1 + SETTLE):
            log = top / f"log{attempt}"
            t, printed = self.prep_sync(link, pair, state, log)
            runs.append({"wall": t.wall, "cpu": t.user + t.sys, "exit": t.exit, "state": printed})
            if t.timed_out or (attempt == 0 and t.exit != 0):
                pair.error = f"initial sync (exit {t.exit}): {tail(log / 'stderr')}"
                break
            if t.exit == 0 and state and printed:  # a stateful sync worked: steady state
                pair.state = printed
                break
            state = printed  # empty after a failure: the next try is a full sync
        else:
            pair.state_error = (
                f"no stateful sync (-s) succeeded after the initial sync in {SETTLE} tries "
                f"(exits {[r['exit'] for r in runs]}): {tail(log / 'stderr', 2)}"
            )
        if not pair.error:
            pair.error = self.check_synced(pair, top / "check")
        if pair.error or pair.state_error:
            keep_logs(log, self.args.work / f"failed-prep-{link}")
            print(f"prep {link}: FAILED — {pair.unusable(True)}", file=sys.stderr)
        pair.seals = [(h, seal_tree(h)) for h in (pair.a, pair.b)]
        return pair

    def prep_sync(self, link: str, pair: Pair, state: str, log: Path) -> tuple[Timing, str]:
        """One `sync -s STATE` on the pair (untimed for the report): timing, printed state."""
        log.mkdir()
        assert pair.b is not None
        argv = self.ctx(pair.a, pair.b, log).argv(link, ["sync", "-s", state])
        (log / "argv").write_text(shlex.join(argv) + "\n")
        t = timed(argv, log, self.args.timeout, self.args.gnu_time)
        lines = (log / "stdout").read_text().split()
        return t, lines[-1] if lines else ""

    def check_synced(self, pair: Pair, scratch: Path) -> str:
        """Both sides equal the reference exactly; else why not."""
        assert pair.b is not None
        try:
            sides = [snapshot_clone(self.dc, h, scratch) for h in (pair.a, pair.b)]
            probs = compare(self.ref, sides[0], "a: ") + compare(self.ref, sides[1], "b: ")
        except BenchError as e:
            probs = [f"check could not read the pair: {e}"]
        return "initial sync check: " + "; ".join(probs[:4]) if probs else ""

    def changed(self, kind: str, link: str) -> Pair:
        """A clone of the synced pair with seeded doveadm changes on both sides."""
        base = self.pair_for("synced", link)
        top = self.dir / "pairs" / f"{kind}-{link}"
        pair = Pair(top / "a", top / "b", state=base.state, error=base.error)
        pair.state_error = base.state_error
        if pair.error:
            return pair
        plans = mutate.plan(self.ref, self.per_side(kind), self.args.seed)
        assert base.b is not None and pair.b is not None
        try:
            for home, src, p in zip((pair.a, pair.b), (base.a, base.b), plans, strict=True):
                clone_tree(src, home)
                chown_vmail(home)
                mutate.apply(self.dc, p.side, home, p)
            sides = [snapshot_clone(self.dc, h, top / "check") for h in (pair.a, pair.b)]
        except BenchError as e:
            pair.error = f"making the changes: {e}"
            return pair
        made = [changed_mails(self.ref, side) for side in sides]
        if made != [p.count for p in plans]:
            pair.error = f"doveadm made {made} changes, not the planned {[p.count for p in plans]}"
            return pair
        pair.want = merge(self.ref, sides[0], sides[1])
        pair.changes = sum(made)
        self.prep[f"{kind} {link}"] = {"changes": [p.count for p in plans]}
        pair.seals = [(h, seal_tree(h)) for h in (pair.a, pair.b)]
        return pair


def changed_mails(base: Snapshot, now: Snapshot) -> int:
    """Mails (by mailbox and GUID) added, removed or with other flags since `base`."""
    old, new = base.content(), now.content()
    return len(old.keys() ^ new.keys()) + sum(
        1 for k in old.keys() & new.keys() if old[k] != new[k]
    )


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


def prepare(args: Any, dc: Dovecot, size: int) -> Bed:
    """Corpus (reused when present), its indexed copy ref/a, and the reference snapshot."""
    work: Path = args.work
    cdir = work / f"corpus-s{args.seed}-n{size}-v{corpus.GENERATOR_VERSION}"
    if not (cdir / "manifest.json").exists():
        shutil.rmtree(cdir, ignore_errors=True)
        cdir.mkdir(parents=True)
        print(f"generating corpus in {cdir} …", file=sys.stderr)
        manifest = corpus.generate(args.seed, size, cdir / "Maildir")
        (cdir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    manifest = json.loads((cdir / "manifest.json").read_text())
    top = work / f"n{size}"
    shutil.rmtree(top, ignore_errors=True)
    # Index the source once, as a live Dovecot would already have (perf-baseline §2).
    copy_tree(cdir / "Maildir", top / "ref" / "a" / "Maildir")
    sh(dc.argv("a", top / "ref" / "a", ["mailbox", "status"], ["messages", "*"]))
    ref = snapshot_clone(dc, top / "ref" / "a", top / "ref-check")
    if len(ref.mails) != manifest["messages"]:
        raise BenchError(
            f"doveadm sees {len(ref.mails)} mails in the corpus, expected {manifest['messages']}"
        )
    return Bed(dc, args, size, top, manifest, ref)
