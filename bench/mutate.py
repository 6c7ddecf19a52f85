"""Seeded changes to a synced pair, made through doveadm as a live Dovecot would.

Each side gets new mails (`doveadm save`), flag changes (`doveadm flags add|remove`)
and expunges (`doveadm expunge`) in the proportion 4 : 4 : 2. Targets come from the
pair's common snapshot sorted by (mailbox, UID) and shuffled by the seed, side a's
first, so the two sides never change the same mail and the merged outcome is defined.
New mails on both sides take the same UIDs, which is a UID conflict for dsync to solve.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import corpus
from check import MailKey, Snapshot
from harness import Dovecot, sh

FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "$Forwarded", "NonJunk")
SIDES = ("a", "b")


@dataclass
class SidePlan:
    """The changes for one side of the pair."""

    side: str
    new: list[tuple[str, bytes]] = field(default_factory=list)  # (mailbox, message)
    flags: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)  # op/flag
    expunge: dict[str, list[int]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        flagged = sum(len(u) for u in self.flags.values())
        return len(self.new) + flagged + sum(len(u) for u in self.expunge.values())


def split(n: int) -> tuple[int, int, int]:
    """n changes as (new, flag, expunge) in the proportion 4 : 4 : 2."""
    new = round(n * 0.4)
    flag = round(n * 0.4)
    return new, flag, max(0, n - new - flag)


def plan(base: Snapshot, per_side: tuple[int, int], seed: int) -> list[SidePlan]:
    """Deterministic changes: per_side[i] of them on side SIDES[i]."""
    rng = random.Random(f"mutate:{seed}:{per_side}")
    keys: list[MailKey] = sorted(base.mails)
    rng.shuffle(keys)
    pool = iter(keys)
    out: list[SidePlan] = []
    for side, n in zip(SIDES, per_side, strict=True):
        p = SidePlan(side)
        n_new, n_flag, n_exp = split(n)
        flags: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for box, uid in (k for _, k in zip(range(n_flag), pool, strict=False)):
            flag = rng.choice(FLAGS)
            op = "remove" if flag in base.mails[(box, uid)][1].split() else "add"
            flags[(box, op, flag)].append(uid)
        expunge: dict[str, list[int]] = defaultdict(list)
        for box, uid in (k for _, k in zip(range(n_exp), pool, strict=False)):
            expunge[box].append(uid)
        p.flags, p.expunge = dict(flags), dict(expunge)
        p.new = new_mails(seed * 1000 + 1 + SIDES.index(side), n_new, len(base.mails))
        out.append(p)
    return out


def new_mails(seed: int, n: int, corpus_size: int) -> list[tuple[str, bytes]]:
    """n fresh corpus-like messages (own seed), each with the folder it was drawn for."""
    vocab = corpus.make_vocab(seed)
    out = []
    for i in range(n):
        folder, _, data, _, _ = corpus.build(seed, i, max(corpus_size, 1), vocab)
        out.append((folder, data))
    return out


def uid_set(uids: list[int]) -> str:
    return ",".join(str(u) for u in sorted(uids))


def apply(dc: Dovecot, user: str, home: Path, p: SidePlan) -> None:
    """Make the planned changes in `home` through doveadm (untimed)."""
    for (box, op, flag), uids in sorted(p.flags.items()):
        sh(dc.argv(user, home, ["flags", op], [flag, "mailbox", box, "uid", uid_set(uids)]))
    for box, uids in sorted(p.expunge.items()):
        sh(dc.argv(user, home, ["expunge"], ["mailbox", box, "uid", uid_set(uids)]))
    for box, data in p.new:
        sh(dc.argv(user, home, ["save"], ["-m", box]), input=data)
