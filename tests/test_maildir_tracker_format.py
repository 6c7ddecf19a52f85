"""The `pydsync-changes` file: format /2 round-trips, format /1 (older pydsync) is
still read, and a malformed file counts as missing rather than crashing a sync."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pydsync_server.storage.maildir_tracker import ChangeTracker, MessageState, Snapshot

KEYWORDS = st.frozensets(st.sampled_from(["$Junk", "NonJunk", "a", "ünï"]), max_size=3)
SNAPSHOTS = st.dictionaries(
    st.integers(1, 2**32 - 1),
    st.builds(
        Snapshot,
        st.integers(1, 2**63 - 1),
        st.integers(0, 0x1F),
        KEYWORDS,
        st.text(min_size=1, max_size=40),
        st.integers(0, 2**32),
        st.integers(0, 2**32),
    ),
    max_size=30,
)


def _tracker(msgs: dict[int, Snapshot]) -> ChangeTracker:
    tracker = ChangeTracker(7, b"\x01" * 16, 99, 3, 2, dict(msgs))
    if msgs:
        uid = min(msgs)
        tracker.set_flags(uid, 0x02, frozenset({"x"}), 100, dsync=False)
        tracker.expunged(max(msgs) + 1, 101, dsync=True, guid="g")
    return tracker


@given(SNAPSHOTS)
def test_serialized_tracker_loads_back_equal(msgs: dict[int, Snapshot]) -> None:
    tracker = _tracker(msgs)
    loaded = ChangeTracker._from_json(json.loads(tracker.serialize()))
    assert loaded == tracker
    assert all(type(snap) is Snapshot for snap in loaded.msgs.values())


def test_format_1_rows_are_still_read(tmp_path: Path) -> None:
    doc = {
        "format": "pydsync-changes/1",
        "uid_validity": 7,
        "mailbox_guid": "01" * 16,
        "highest_modseq": 9,
        "first_recent_uid": 1,
        "log_floor": 2,
        "msgs": [[1, 5, 2, ["$Junk"], "guid-1", 0, 1700000000], [4, 9, 0, [], "guid-4", 5]],
        "log": [[9, 4, 0, 0, "", 0, 1, []]],
    }
    (tmp_path / "t").write_text(json.dumps(doc))
    tracker = ChangeTracker.load(tmp_path / "t")
    assert tracker is not None
    assert tracker.msgs == {
        1: Snapshot(5, 2, frozenset({"$Junk"}), "guid-1", 0, 1700000000),
        4: Snapshot(9, 0, frozenset(), "guid-4", 5, 0),
    }
    assert tracker.changes_since(5) is not None


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m.update(uid=m["uid"] + [9]),  # columns of different lengths
        lambda m: m.update(modseq=["1"] * len(m["modseq"])),  # strings for numbers
        lambda m: m.update(guid=[1] * len(m["guid"])),
        lambda m: m.update(flags=5),
        lambda m: m.pop("saved"),
        lambda m: m.update(keywords=[7] * len(m["keywords"])),
    ],
)
def test_a_malformed_tracker_counts_as_missing(tmp_path: Path, damage: object) -> None:
    current = {uid: MessageState(0, frozenset(), f"g{uid}") for uid in (1, 2, 3)}
    doc = json.loads(ChangeTracker.fresh(7, b"\x01" * 16, current, 1).serialize())
    damage(doc["msgs"])  # type: ignore[operator]
    (tmp_path / "t").write_text(json.dumps(doc))
    assert ChangeTracker.load(tmp_path / "t") is None
