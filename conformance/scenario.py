"""Scenario files (TOML) -> frozen dataclasses, validated strictly so a typo is an error.

The format is described in conformance/README.md; operations are parsed by ops.py.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ops import Operation, OperationError, parse_operation, split_words

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
SIDES = ("a", "b")
COMMANDS = ("sync", "backup")
# Snapshot fields `equal_ignore` may name (tests/dovecot_compare.py normalize_for_compare).
IGNORABLE = frozenset(
    {"uidnext", "uidvalidity", "mailbox_guid", "message_guid", "uid", "flags", "keywords",
     "subscriptions", "mailbox_list"}
)  # fmt: skip


class ScenarioError(ValueError):
    """A scenario file that does not follow the format."""


@dataclass(frozen=True)
class SideExpect:
    """Explicit expectations on one side's store, as Dovecot reads it."""

    mailboxes: tuple[str, ...] | None = None  # `mailbox list`, order ignored
    subscriptions: tuple[str, ...] | None = None  # `mailbox list -s`, order ignored
    count: Mapping[str, int] = field(default_factory=dict)  # messages per mailbox
    contents: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # subjects by UID
    subjects: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # order ignored
    uids: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    flags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # "MAILBOX UID|SUBJECT"


@dataclass(frozen=True)
class Run:
    """One dsync run: ``<command> <options> <destination>`` started on the master side."""

    command: str
    options: tuple[str, ...]
    master: str

    @property
    def stateful(self) -> bool:
        return "-s" in self.options


@dataclass(frozen=True)
class Step:
    name: str
    wait: float  # seconds to sleep first: Dovecot's tree change times have 1 s resolution
    ops: Mapping[str, tuple[Operation, ...]]  # side -> operations, done before the run
    run: Run | None
    exit: frozenset[int]
    state: bool | None  # True: a state line printed; False: stdout empty; None: unchecked
    equal: bool  # a == b as Dovecot reads them (after the run, or the ops without a run)
    equal_ignore: tuple[str, ...]
    unchanged: tuple[str, ...]  # sides the run must leave exactly as they were
    expect: Mapping[str, SideExpect]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    steps: tuple[Step, ...]
    dovecot_known_failure: str | None = None
    dovecot_known_failure_side: str | None = None  # None: only doveadm on both sides
    # The last Dovecot major.minor with the failure (None: every version); a newer
    # Dovecot must pass the scenario.
    dovecot_known_failure_until: tuple[int, int] | None = None

    def subjects(self) -> tuple[str, ...]:
        """Every message subject the scenario saves (message bodies derive from them)."""
        return tuple(
            s for step in self.steps for ops in step.ops.values() for op in ops for s in op.saves
        )


# ---------------------------------------------------------------- loading


def load_all(directory: Path = SCENARIO_DIR) -> dict[str, Scenario]:
    """Every ``*.toml`` scenario in the directory, by name (the file's stem)."""
    return {p.stem: load(p) for p in sorted(directory.glob("*.toml"))}


def load(path: Path) -> Scenario:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
        return parse_scenario(path.stem, data)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path.name}: {exc}") from None
    except ScenarioError as exc:
        raise ScenarioError(f"{path.name}: {exc}") from None


def parse_scenario(name: str, data: Mapping[str, Any]) -> Scenario:
    _check_keys(
        "scenario", data,
        {"description", "steps", "dovecot_known_failure", "dovecot_known_failure_side",
         "dovecot_known_failure_until"},
    )  # fmt: skip
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ScenarioError("needs at least one [[steps]]")
    failure = data.get("dovecot_known_failure")
    if failure is not None and not (isinstance(failure, str) and failure):
        raise ScenarioError("dovecot_known_failure must be a non-empty string")
    side = data.get("dovecot_known_failure_side")
    if side is not None and side not in SIDES:
        raise ScenarioError(f"dovecot_known_failure_side must be a or b, not {side!r}")
    if side is not None and failure is None:
        raise ScenarioError("dovecot_known_failure_side without dovecot_known_failure")
    until = _major_minor(data.get("dovecot_known_failure_until"))
    if until is not None and failure is None:
        raise ScenarioError("dovecot_known_failure_until without dovecot_known_failure")
    return Scenario(
        name=name,
        description=_str(data, "description", ""),
        steps=tuple(_step(i, s) for i, s in enumerate(steps, 1)),
        dovecot_known_failure=failure,
        dovecot_known_failure_side=side,
        dovecot_known_failure_until=until,
    )


def _major_minor(value: object) -> tuple[int, int] | None:
    """``"2.3"`` -> (2, 3)."""
    if value is None:
        return None
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ScenarioError(f'dovecot_known_failure_until must be like "2.3", not {value!r}')
    return int(parts[0]), int(parts[1])


def _step(number: int, data: Any) -> Step:
    if not isinstance(data, dict):
        raise ScenarioError(f"step {number} is not a table")
    keys = {"name", "wait", "a", "b", "run", "master", "exit", "state", "equal", "equal_ignore",
            "unchanged", "expect"}  # fmt: skip
    _check_keys(f"step {number}", data, keys)
    label = f"step {number} ({data.get('name', 'unnamed')})"
    try:
        run = _run(data)
        ops = {side: tuple(parse_operation(op) for op in _strs(data, side)) for side in SIDES}
        return Step(
            name=_str(data, "name", f"step {number}"),
            wait=_wait(data.get("wait", 0)),
            ops=ops,
            run=run,
            exit=_exit(data.get("exit", 0)),
            state=_state(data, run),
            equal=_bool(data, "equal"),
            equal_ignore=_ignore(_strs(data, "equal_ignore")),
            unchanged=_sides(_strs(data, "unchanged")),
            expect=_expects(data.get("expect", {})),
        )
    except (ScenarioError, OperationError) as exc:
        raise ScenarioError(f"{label}: {exc}") from None


def _run(data: Mapping[str, Any]) -> Run | None:
    master = _str(data, "master", "a")
    if master not in SIDES:
        raise ScenarioError(f"master must be a or b, not {master!r}")
    if "run" not in data:
        if "master" in data or "exit" in data or "state" in data or "unchanged" in data:
            raise ScenarioError("master/exit/state/unchanged need a run")
        return None
    words = split_words(_str(data, "run", ""))
    if not words or words[0] not in COMMANDS:
        raise ScenarioError(f"run must start with sync or backup: {data['run']!r}")
    return Run(command=words[0], options=tuple(words[1:]), master=master)


def _wait(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 5:
        raise ScenarioError(f"wait must be 0 to 5 seconds: {value!r}")
    return float(value)


def _state(data: Mapping[str, Any], run: Run | None) -> bool | None:
    value = data.get("state", run.stateful if run else None)
    if value is not None and not isinstance(value, bool):
        raise ScenarioError("state must be true or false")
    return value


def _exit(value: Any) -> frozenset[int]:
    codes = value if isinstance(value, list) else [value]
    if not codes or not all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
        raise ScenarioError(f"exit must be an integer or a list of them: {value!r}")
    return frozenset(codes)


def _ignore(fields: list[str]) -> tuple[str, ...]:
    unknown = set(fields) - IGNORABLE
    if unknown:
        raise ScenarioError(f"equal_ignore: unknown fields {sorted(unknown)}")
    return tuple(fields)


def _sides(names: list[str]) -> tuple[str, ...]:
    if set(names) - set(SIDES):
        raise ScenarioError(f"sides must be a or b: {names!r}")
    return tuple(names)


def _expects(data: Any) -> dict[str, SideExpect]:
    if not isinstance(data, dict):
        raise ScenarioError("expect must be a table")
    _check_keys("expect", data, set(SIDES))
    return {side: _side_expect(side, value) for side, value in data.items()}


def _side_expect(side: str, data: Any) -> SideExpect:
    if not isinstance(data, dict):
        raise ScenarioError(f"expect.{side} must be a table")
    keys = {"mailboxes", "subscriptions", "count", "contents", "subjects", "uids", "flags"}
    _check_keys(f"expect.{side}", data, keys)
    return SideExpect(
        mailboxes=tuple(_strs(data, "mailboxes")) if "mailboxes" in data else None,
        subscriptions=tuple(_strs(data, "subscriptions")) if "subscriptions" in data else None,
        count=_table(data, "count", int),
        contents=_table(data, "contents", list, str),
        subjects=_table(data, "subjects", list, str),
        uids=_table(data, "uids", list, int),
        flags=_table(data, "flags", list, str),
    )


def _table(data: Mapping[str, Any], key: str, kind: type, item: type | None = None) -> Any:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ScenarioError(f"{key} must be a table")
    out: dict[str, Any] = {}
    for k, v in table.items():
        ok = isinstance(v, kind) and not isinstance(v, bool)
        if ok and item is not None:
            ok = all(isinstance(x, item) and not isinstance(x, bool) for x in v)
        if not ok:
            raise ScenarioError(f"{key}.{k}: wrong type {v!r}")
        out[k] = tuple(v) if isinstance(v, list) else v
    return out


def _check_keys(label: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise ScenarioError(f"{label}: unknown keys {sorted(unknown)}")


def _str(data: Mapping[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ScenarioError(f"{key} must be a string")
    return value


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ScenarioError(f"{key} must be true or false")
    return value


def _strs(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScenarioError(f"{key} must be a list of strings")
    return value
