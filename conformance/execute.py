"""Run one scenario for one combination (master implementation x server implementation).

Fresh users a and b per run; operations through doveadm; each dsync run is started on the
step's master side with the master template, against the other side's server template
as a command destination; after each step the expectations are checked on Dovecot's
reading of both stores (tests/dovecot.py snapshot()).
"""

from __future__ import annotations

import enum
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .checks import Subjects, check_equal, check_side, check_unchanged
from .harness import DovecotEnv, StoreSnapshot, snapshot
from .impls import Implementation, environment, expand
from .scenario import SIDES, Run, Scenario, Step

RUN_TIMEOUT = 120.0
STATE_WORD = "$STATE"  # in run options: the state the previous run printed

Log = Callable[[str], None]


class Status(enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    XFAIL = "XFAIL"  # failed where the scenario says real Dovecot is known to fail
    XPASS = "XPASS"  # passed although a Dovecot failure was expected: the mark is wrong


@dataclass(frozen=True)
class Combination:
    master: Implementation
    server: Implementation

    @property
    def id(self) -> str:
        return f"{self.master.name}-{self.server.name}"

    def on_side(self, side: str, run: Run) -> Implementation:
        """The implementation that serves `side` in this run."""
        return self.master if side == run.master else self.server


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (Status.PASS, Status.XFAIL)


def dovecot_expected_to_fail(
    scenario: Scenario, combo: Combination, version: tuple[int, int, int]
) -> bool:
    """Whether the scenario's dovecot_known_failure applies to this combination and Dovecot."""
    if scenario.dovecot_known_failure is None:
        return False
    until = scenario.dovecot_known_failure_until
    if until is not None and version[:2] > until:
        return False
    side = scenario.dovecot_known_failure_side
    if side is None:
        return combo.master.name == combo.server.name == "doveadm"
    runs = [step.run for step in scenario.steps if step.run is not None]
    return any(combo.on_side(side, run).name == "doveadm" for run in runs)


def run_scenario(
    scenario: Scenario,
    combo: Combination,
    tmp_path: Path | None = None,
    *,
    log: Log | None = None,
    keep: bool = False,
) -> Outcome:
    """Run every step; the first step with problems ends the scenario."""
    env = DovecotEnv(tmp_path)
    version = env.version
    try:
        problem = _ScenarioRun(scenario, combo, env, log or (lambda _line: None)).run()
    except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
        problem = f"harness error: {exc}"
    finally:
        if keep:
            (log or print)(f"kept {env.root}")
        else:
            env.close()
    expected = dovecot_expected_to_fail(scenario, combo, version)
    if problem is None:
        if expected:
            return Outcome(Status.XPASS, f"expected to fail: {scenario.dovecot_known_failure}")
        return Outcome(Status.PASS)
    if expected:
        return Outcome(Status.XFAIL, f"{scenario.dovecot_known_failure} | {problem}")
    return Outcome(Status.FAIL, problem)


class _ScenarioRun:
    def __init__(self, scenario: Scenario, combo: Combination, env: DovecotEnv, log: Log) -> None:
        self.scenario = scenario
        self.combo = combo
        self.env = env
        self.log = log
        self.users = {side: env.user(side) for side in SIDES}
        self.subjects = Subjects(scenario.subjects())
        self.state: str | None = None

    def run(self) -> str | None:
        for number, step in enumerate(self.scenario.steps, 1):
            self.log(f"-- step {number}: {step.name}")
            problems = self._step(step)
            if problems:
                return f"step {number} ({step.name}): " + "; ".join(problems)
        return None

    def _step(self, step: Step) -> list[str]:
        if step.wait:
            time.sleep(step.wait)
        for side in SIDES:
            for op in step.ops[side]:
                problems = self._operation(side, op.doveadm_calls())
                if problems:
                    return problems
        before = self._snapshots(step.unchanged)
        problems = self._run(step.run, step) if step.run is not None else []
        if problems:
            return problems
        return self._check(step, before)

    def _operation(self, side: str, calls: list[tuple[list[str], bytes | None]]) -> list[str]:
        for args, stdin in calls:
            self.log(f"{side}$ doveadm {' '.join(args)}")
            proc = self.users[side].doveadm(*args, input=stdin, check=False)
            if proc.returncode != 0:
                err = proc.stderr.decode(errors="replace").strip()
                return [f"operation on {side} failed ({proc.returncode}): {err}"]
        return []

    def _run(self, run: Run, step: Step) -> list[str]:
        options = list(run.options)
        if STATE_WORD in options:
            if self.state is None:
                return ["$STATE used but no earlier run printed a state"]
            options = [self.state if o == STATE_WORD else o for o in options]
        proc = self._dsync(run, options)
        stdout = proc.stdout.decode(errors="replace")
        stderr = proc.stderr.decode(errors="replace").strip()
        self.log(f"exit {proc.returncode}; stdout {stdout.strip()!r}")
        if stderr:
            self.log("stderr: " + stderr.replace("\n", "\n        "))
        problems = []
        if proc.returncode not in step.exit:
            wanted = " or ".join(map(str, sorted(step.exit)))
            problems.append(f"exit {proc.returncode}, expected {wanted} (stderr: {stderr!r})")
        problems += self._stdout(stdout, step.state)
        return problems + self._root_owned()

    def _dsync(self, run: Run, options: list[str]) -> subprocess.CompletedProcess[bytes]:
        master = self.users[run.master]
        server = self.users["b" if run.master == "a" else "a"]
        server_argv = expand(self.combo.server.server, server)
        destination = self.env.command_destination(server_argv, environment(server))
        argv = expand(
            self.combo.master.master,
            master,
            command=run.command,
            options=options,
            destination=destination,
        )
        self.log(f"{run.master}$ {run.command} {' '.join(options)} -> {self.combo.id}")
        return subprocess.run(
            argv,
            env=environment(master),
            cwd=self.env.root,
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )

    def _stdout(self, stdout: str, state: bool | None) -> list[str]:
        lines = stdout.splitlines()
        if len(lines) == 1 and lines[0]:
            self.state = lines[0]
        if state is True and not (len(lines) == 1 and lines[0]):
            return [f"expected one state line on stdout, got {stdout!r}"]
        if state is False and stdout:
            return [f"expected nothing on stdout, got {stdout!r}"]
        return []

    def _root_owned(self) -> list[str]:
        """Dovecot never writes mail as root; an implementation run as root must not either."""
        found = [p for user in self.users.values() for p in user.home.rglob("*")
                 if p.lstat().st_uid == 0]  # fmt: skip
        return [f"files left owned by root: {[str(p) for p in found[:3]]}"] if found else []

    def _check(self, step: Step, before: dict[str, StoreSnapshot]) -> list[str]:
        wanted = set(step.expect) | set(before) | (set(SIDES) if step.equal else set())
        snaps = self._snapshots(sorted(wanted))
        problems: list[str] = []
        if step.equal:
            problems += check_equal(snaps["a"], snaps["b"], step.equal_ignore)
        for side, old in before.items():
            problems += check_unchanged(side, old, snaps[side])
        for side, expect in step.expect.items():
            problems += check_side(side, snaps[side], expect, self.subjects)
        return problems

    def _snapshots(self, sides: Iterable[str]) -> dict[str, StoreSnapshot]:
        """Dovecot's reading of each side, both at once (each is a few doveadm runs)."""
        with ThreadPoolExecutor(max_workers=len(SIDES)) as pool:
            futures = {side: pool.submit(snapshot, self.users[side]) for side in sides}
            return {side: future.result() for side, future in futures.items()}
