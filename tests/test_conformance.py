"""The conformance scenarios (conformance/scenarios/) for master x server = doveadm/pydsync.

The doveadm x doveadm column proves every scenario's expectations on real Dovecot. All
scenarios also run for pydsync x pydsync and doveadm x pydsync; pydsync x doveadm runs a
representative subset to keep the file under ~3 minutes. Known pydsync bugs are listed in
KNOWN_PYDSYNC_GAPS (strict xfail: remove an entry once the bug is fixed).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) leaves the checkout out
    sys.path.insert(0, str(REPO))

from conformance.checks import Subjects, check_side  # noqa: E402
from conformance.execute import (  # noqa: E402
    Combination,
    Status,
    dovecot_expected_to_fail,
    run_scenario,
)
from conformance.harness import (  # noqa: E402
    MailboxSnapshot,
    MessageSnapshot,
    StoreSnapshot,
    require_dovecot,
)
from conformance.impls import IMPLEMENTATIONS, expand  # noqa: E402
from conformance.ops import OperationError, message_body, parse_operation, split_words  # noqa: E402
from conformance.scenario import ScenarioError, SideExpect, load_all, parse_scenario  # noqa: E402

SCENARIOS = load_all()
COMBINATIONS = ("doveadm-doveadm", "pydsync-pydsync", "doveadm-pydsync", "pydsync-doveadm")
# pydsync x doveadm runs only these: one per area (backup, revert, two-way, state, -1, -R).
SUBSET = {
    "backup_destination_expunge",
    "backup_destination_inbox_mail",
    "backup_reverse",
    "stateful_sync_chain",
    "sync_flag_conflict",
    "sync_oneway",
    "sync_uid_conflict",
}
# (scenario, combination such as "doveadm-pydsync", what pydsync does wrong); each becomes a
# strict xfail, so a fixed bug shows up as XPASS: then delete its entry.
KNOWN_PYDSYNC_GAPS: list[tuple[str, str, str]] = []


def _params() -> list[object]:
    gaps = {(name, combo): why for name, combo, why in KNOWN_PYDSYNC_GAPS}
    params: list[object] = []
    for name in sorted(SCENARIOS):
        for combo in COMBINATIONS:
            if combo == "pydsync-doveadm" and name not in SUBSET:
                continue
            why = gaps.get((name, combo))
            marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
            params.append(pytest.param(name, combo, id=f"{name}-{combo}", marks=marks))
    return params


def _combination(combo: str) -> Combination:
    master, server = combo.split("-")
    return Combination(IMPLEMENTATIONS[master], IMPLEMENTATIONS[server])


@pytest.mark.dovecot
@pytest.mark.parametrize(("name", "combo"), _params())
def test_scenario(name: str, combo: str, tmp_path: Path) -> None:
    require_dovecot()
    outcome = run_scenario(SCENARIOS[name], _combination(combo), tmp_path)
    if outcome.status is Status.XFAIL:
        pytest.xfail(outcome.detail)
    assert outcome.status is Status.PASS, f"{outcome.status.value}: {outcome.detail}"


# ---------------------------------------------------------------- the suite itself


def test_scenarios_cover_the_required_areas() -> None:
    assert len(SCENARIOS) >= 15
    runs = [s.run for sc in SCENARIOS.values() for s in sc.steps if s.run is not None]
    options = {o for r in runs for o in r.options}
    assert {"-1", "-R", "-s", "-m", "-x", "-f"} <= options
    assert {r.command for r in runs} == {"sync", "backup"}
    assert any(r.master == "b" for r in runs)
    assert any(s.exit == {75} for sc in SCENARIOS.values() for s in sc.steps)
    assert {gap[0] for gap in KNOWN_PYDSYNC_GAPS} <= set(SCENARIOS)
    assert SUBSET <= set(SCENARIOS)


def test_known_failure_applies_by_side_and_version() -> None:
    v23, v24 = (2, 3, 19), (2, 4, 1)
    inbox = SCENARIOS["backup_destination_inbox_mail"]  # fails where b (destination) is Dovecot
    for version in (v23, v24):
        assert dovecot_expected_to_fail(inbox, _combination("doveadm-doveadm"), version)
        assert dovecot_expected_to_fail(inbox, _combination("pydsync-doveadm"), version)
        assert not dovecot_expected_to_fail(inbox, _combination("doveadm-pydsync"), version)
    same_name = SCENARIOS["same_name_created_both_sides"]  # no side: doveadm on both only
    assert dovecot_expected_to_fail(same_name, _combination("doveadm-doveadm"), v23)
    assert not dovecot_expected_to_fail(same_name, _combination("pydsync-doveadm"), v23)
    assert not dovecot_expected_to_fail(same_name, _combination("doveadm-doveadm"), v24)
    assert not dovecot_expected_to_fail(
        SCENARIOS["sync_uid_conflict"], _combination("doveadm-doveadm"), v23
    )


def test_operations_become_doveadm_commands() -> None:
    assert split_words(r"flags add INBOX 1 \Seen 'two words'") == [
        "flags", "add", "INBOX", "1", "\\Seen", "two words",
    ]  # fmt: skip
    flags = parse_operation(r"flags replace Work 3 \Deleted $Label2")
    assert flags.doveadm_calls() == [
        (["flags", "replace", "\\Deleted $Label2", "mailbox", "Work", "uid", "3"], None)
    ]
    save = parse_operation("save 'My Box' m1 m2")
    assert save.saves == ("m1", "m2")
    assert save.doveadm_calls()[1] == (["save", "-m", "My Box"], message_body("m2"))
    assert parse_operation("expunge INBOX 1 3").doveadm_calls() == [
        (["expunge", "mailbox", "INBOX", "uid", "1,3"], None)
    ]
    assert parse_operation("create -s A B").doveadm_calls() == [
        (["mailbox", "create", "-s", "A", "B"], None)
    ]
    for bad in ("frobnicate X", "rename A", "flags toggle INBOX 1 x", "expunge INBOX last", ""):
        with pytest.raises(OperationError):
            parse_operation(bad)


def test_scenario_format_is_checked() -> None:
    good = {"steps": [{"a": ["save INBOX m1"], "run": "sync -s ''", "equal": True}]}
    step = parse_scenario("x", good).steps[0]
    assert step.run is not None and step.run.options == ("-s", "")
    assert step.state is True and step.exit == {0}
    bad_cases: list[dict[str, Any]] = [
        {"steps": []},
        {"steps": [{"run": "fetch"}]},
        {"steps": [{"exit": 2}]},  # exit without a run
        {"steps": [{"run": "sync", "exit": "0"}]},
        {"steps": [{"run": "sync", "typo": 1}]},
        {"steps": [{"run": "sync", "equal_ignore": ["bogus"]}]},
        {"steps": [{"run": "sync", "expect": {"c": {}}}]},
        {"steps": [{"run": "sync", "expect": {"a": {"count": {"INBOX": "1"}}}}]},
        {"steps": [{"a": ["rename A"]}]},
        {"steps": [{"run": "sync"}], "dovecot_known_failure_side": "a"},
        {"steps": [{"run": "sync"}], "dovecot_known_failure_until": "2.3"},
        {
            "steps": [{"run": "sync"}],
            "dovecot_known_failure": "x",
            "dovecot_known_failure_until": 2.3,
        },
        {
            "steps": [{"run": "sync"}],
            "dovecot_known_failure": "x",
            "dovecot_known_failure_until": "2",
        },
    ]
    for data in bad_cases:
        with pytest.raises(ScenarioError):
            parse_scenario("bad", data)


def _snapshot(subjects: list[str], flags: tuple[str, ...] = ()) -> StoreSnapshot:
    msgs = tuple(
        MessageSnapshot(
            uid, f"g{uid}", flags, ("kw",), 1, hashlib.sha256(message_body(s)).hexdigest()
        )
        for uid, s in enumerate(subjects, 1)
    )
    box = MailboxSnapshot("INBOX", "guid", 1, len(msgs) + 1, msgs)
    return StoreSnapshot(("INBOX",), ("Ghost",), (box,))


def test_expectations_are_checked() -> None:
    names = Subjects(["m1", "m2"])
    snap = _snapshot(["m1", "m2"], ("\\Seen",))
    ok = SideExpect(
        mailboxes=("INBOX",),
        subscriptions=("Ghost",),
        count={"INBOX": 2},
        contents={"INBOX": ("m1", "*")},
        subjects={"INBOX": ("m2", "m1")},
        uids={"INBOX": (1, 2)},
        flags={"INBOX 1": ("kw", "\\Seen"), "INBOX m2": ("\\Seen", "kw")},
    )
    assert check_side("a", snap, ok, names) == []
    wrong = SideExpect(
        mailboxes=("INBOX", "Work"),
        count={"INBOX": 3, "Work": 0},
        contents={"INBOX": ("m2", "m1")},
        flags={"INBOX m1": ("\\Seen",)},
    )
    problems = check_side("a", snap, wrong, names)
    assert len(problems) == 5 and all(p.startswith("a: ") for p in problems)
    assert "count Work: no such mailbox" in " ".join(problems)


def test_templates_expand() -> None:
    class FakeUser:
        name, home, location = "a", Path("/h/a"), "maildir:~/Maildir"

    argv = expand(
        IMPLEMENTATIONS["pydsync"].master,
        FakeUser(),  # type: ignore[arg-type]
        command="sync",
        options=["-s", ""],
        destination=["/bin/dest.sh"],
    )
    assert argv == [
        sys.executable, "-m", "pydsync_server", "-o", "mail_location=maildir:~/Maildir",
        "sync", "-s", "", "/bin/dest.sh",
    ]  # fmt: skip
