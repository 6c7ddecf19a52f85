"""Command line: run the scenarios for one master/server combination, one line each.

``python -m conformance.runner --impl doveadm|pydsync [--server doveadm|pydsync]
[--scenario NAME]... [-v] [--keep]``; exit status 1 when any scenario FAILs or XPASSes.
Needs root and the real Dovecot (operations and snapshots always use doveadm).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from .execute import Combination, run_scenario
from .harness import require_dovecot
from .impls import IMPLEMENTATIONS, Implementation, custom
from .scenario import SCENARIO_DIR, ScenarioError, load_all


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m conformance.runner", description=__doc__)
    names = sorted(IMPLEMENTATIONS)
    parser.add_argument("--impl", choices=names, default="pydsync", help="the master")
    parser.add_argument("--server", choices=names, help="the server (default: as --impl)")
    parser.add_argument(
        "--master-template", help="custom master command template (see conformance/impls.py)"
    )
    parser.add_argument("--server-template", help="custom server command template")
    parser.add_argument("--scenario", action="append", help="run only this one (repeatable)")
    parser.add_argument(
        "--dir", type=Path, default=SCENARIO_DIR, help="scenario directory (*.toml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command")
    parser.add_argument("--keep", action="store_true", help="keep the users' homes")
    return parser


def _combination(args: argparse.Namespace) -> Combination:
    master: Implementation = IMPLEMENTATIONS[args.impl]
    server: Implementation = IMPLEMENTATIONS[args.server or args.impl]
    if args.master_template:
        master = custom("custom", shlex.split(args.master_template), master.server)
    if args.server_template:
        server = custom("custom", server.master, shlex.split(args.server_template))
    return Combination(master, server)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        scenarios = load_all(args.dir)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unknown = set(args.scenario or ()) - set(scenarios)
    if unknown:
        print(f"error: no such scenario: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    try:
        require_dovecot()
    except pytest.fail.Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    combo = _combination(args)
    log = print if args.verbose else None
    failed = 0
    for name in args.scenario or sorted(scenarios):
        started = time.monotonic()
        outcome = run_scenario(scenarios[name], combo, log=log, keep=args.keep)
        took = time.monotonic() - started
        detail = f": {outcome.detail}" if outcome.detail else ""
        print(f"{outcome.status.value:5} {name} [{combo.id}, {took:.1f}s]{detail}", flush=True)
        failed += not outcome.ok
    counts = f"{failed} unexpected" if failed else "all as expected"
    print(f"{len(args.scenario or scenarios)} scenarios, {counts}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
