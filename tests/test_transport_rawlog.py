"""RawLog writes Dovecot's `-r PATH` format: one file, `<secs>.<usecs> I: ` / `O: ` lines."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from rawlog_parse import parse_rawlog

from pydsync_server.transport.rawlog import MAX_LINE, RawLog


def fixed_clock() -> float:
    return 1795918402.194506


def test_lines_are_prefixed_and_held_until_their_lf(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = RawLog(str(path), clock=fixed_clock)
    log.received(b"VERSION\tdsync\t3\t5\nHa")
    log.sent(b"X\n")
    log.received(b"\n")
    log.close()
    assert path.read_bytes() == (
        b"1795918402.194506 I: VERSION\tdsync\t3\t5\n"
        b"1795918402.194506 O: X\n"
        b"1795918402.194506 I: Ha\n"
    )


def test_long_line_is_written_unfinished_with_gt_marker(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = RawLog(str(path), clock=fixed_clock)
    log.sent(b"x" * (MAX_LINE - 1))  # still held back
    log.sent(b"y")  # 8192 pending: out it goes, marked unfinished
    log.sent(b"end\nab")
    log.close()  # pending "ab" is written at close (Dovecot would drop it)
    assert path.read_bytes() == (
        b"1795918402.194506 O> " + b"x" * (MAX_LINE - 1) + b"y"
        b"1795918402.194506 O: end\n"
        b"1795918402.194506 O> ab"
    )


def test_appends_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"old\n")
    path.chmod(0o644)
    log = RawLog(str(path), clock=fixed_clock)
    log.sent(b"new\n")
    log.close()
    assert path.read_bytes() == b"old\n1795918402.194506 O: new\n"
    fresh = tmp_path / "fresh"
    RawLog(str(fresh)).close()
    assert fresh.stat().st_mode & 0o777 == 0o600


@given(
    st.lists(
        st.tuples(st.sampled_from("IO"), st.text(alphabet="ab\n", max_size=3000).map(str.encode)),
        max_size=20,
    )
)
def test_round_trip(transfers: list[tuple[str, bytes]]) -> None:
    # hypothesis and function-scoped fixtures do not mix: a directory per example.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log"
        log = RawLog(str(path))
        want = {"I": b"", "O": b""}
        for direction, data in transfers:
            (log.received if direction == "I" else log.sent)(data)
            want[direction] += data
        log.close()
        assert parse_rawlog(path.read_bytes()) == want
