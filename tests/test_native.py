"""The native fast paths (pydsync_server._native): the C module is built, and it gives
exactly what its pure-Python twin gives, on fixed cases and arbitrary input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pydsync_server import _native
from pydsync_server._native import Implementation
from pydsync_server.storage import dbox_file as dbox

PURE = _native.pure_implementation()
C = _native.c_implementation()
IMPLS = [pytest.param(PURE, id="python"), pytest.param(C, id="c")]
FIXTURE_M1 = Path(__file__).parent / "data/fixtures/dovecot-2.3.19/mdbox/mdbox/storage/m.1"


def test_c_extension_is_built() -> None:
    # A failed C build must fail CI, not fall back silently (unless the twin is forced).
    if os.environ.get(_native.PURE_ENV, "") not in ("", "0"):
        assert _native.IMPLEMENTATION == "python"
        return
    assert C is not None, "pydsync_server._native._speedups is not built: pip install -e ."
    assert _native.IMPLEMENTATION == "c"


def test_environment_forces_the_twin() -> None:
    code = "from pydsync_server import _native; print(_native.IMPLEMENTATION)"
    env = dict(os.environ, PYDSYNC_PUREPYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "python"


def _impl(impl: Implementation | None) -> Implementation:
    if impl is None:
        pytest.fail("the C extension is not built")
    return impl


@pytest.mark.parametrize("impl", IMPLS)
def test_scan_fixture(impl: Implementation | None) -> None:
    data = FIXTURE_M1.read_bytes()
    records, stop, damaged = _impl(impl).dbox_scan(data, 16, 30, 100)
    assert (stop, damaged) == (len(data), False)
    first = records[0]
    assert first[:8] == (16, 46, 189, 295, 0x6B0B7685, 197, -1, -1)
    assert first[8:] == (b"3658981a85760b6b2e06000083ecc375", b"", b"INBOX", b"", False)
    assert [r[0] for r in records] == [16, 295, 591, 842]
    assert _impl(impl).dbox_scan(data, 16, 30, 2)[0:2] == (records[:2], 591)


@pytest.mark.parametrize("impl", IMPLS)
def test_scan_damage_and_slow_blocks(impl: Implementation | None) -> None:
    fn = _impl(impl).dbox_scan
    good = dbox.encode_record(b"hi\n", dbox.Metadata(guid="g", received_date=5, pop3_order=7))
    assert fn(good, 0, 30, 9)[0][0][4:] == (5, -1, -1, 7, b"g", b"", b"", b"", False)
    assert fn(good + good[:-1], 0, 30, 9)[1:] == (len(good), True)
    assert fn(good[:29], 0, 30, 9) == ([], 0, True)
    assert fn(good, 0, 29, 9) == ([], 0, True)  # message headers are never below 30 bytes
    odd = dbox.encode_record(b"x", dbox.Metadata(guid="g", extra=(("Q", "1"),)))
    assert fn(odd, 0, 30, 9)[0][0][12] is True
    bad_hex = odd.replace(b"Q1", b"R+1")
    rec = fn(bad_hex, 0, 30, 9)[0][0]
    assert rec[4] == -1 and rec[12] is True  # Python's int() decides on "+1"


@pytest.mark.parametrize("impl", IMPLS)
def test_vsize_part(impl: Implementation | None) -> None:
    fn = _impl(impl).vsize_part
    assert fn(b"", False) == fn(b"", True) == 0
    assert fn(b"a\r\nb\n", False) == 6
    assert fn(b"\n\n", False) == 4
    assert fn(b"\n\n", True) == 3  # the first LF ends the previous piece's CR
    assert fn(b"\r\r\n\r", True) == 4


_META_LINE = st.sampled_from([b"G", b"R", b"V", b"Z", b"O", b"P", b"B", b"X", b"Q", b" ", b""])
_VALUE = st.sampled_from([b"", b"1f", b"FF", b"12", b"0x1", b"-3", b"g" * 17, b"9" * 20, b"abc"])


@st.composite
def _dbox_bytes(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        body = draw(st.binary(max_size=40))
        lines = [k + v + b"\n" for k, v in draw(st.lists(st.tuples(_META_LINE, _VALUE)))]
        size = len(body) + draw(st.sampled_from([0, 0, 0, -1, 1]))
        hdr = dbox.encode_msg_header(max(size, 0))
        parts.append(hdr + body + draw(st.sampled_from([b"\n\x01\x03\n", b"\n\x01\x02\n"])))
        parts.append(b"".join(lines) + draw(st.sampled_from([b"\n", b"", b" pad\n"])))
    data = b"".join(parts)
    if data and draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=3)) + data[cut:]
    return data


@pytest.mark.skipif(C is None, reason="covered by test_c_extension_is_built")
@settings(max_examples=400)
@given(_dbox_bytes(), st.integers(0, 5), st.integers(0, 6))
def test_scan_c_equals_pure(data: bytes, start: int, max_records: int) -> None:
    assert C is not None
    assert C.dbox_scan(data, start, 30, max_records) == PURE.dbox_scan(data, start, 30, max_records)


@pytest.mark.skipif(C is None, reason="covered by test_c_extension_is_built")
@given(st.binary(max_size=300), st.integers(0, 40))
def test_scan_c_equals_pure_on_noise(data: bytes, start: int) -> None:
    assert C is not None
    for hdr_size in (30, 31):
        assert C.dbox_scan(data, start, hdr_size, 5) == PURE.dbox_scan(data, start, hdr_size, 5)


_LINES = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\n\r", b"."])).map(b"".join)


@pytest.mark.skipif(C is None, reason="covered by test_c_extension_is_built")
@given(_LINES, st.booleans())
def test_vsize_part_c_equals_pure(data: bytes, after_cr: bool) -> None:
    assert C is not None
    assert C.vsize_part(data, after_cr) == PURE.vsize_part(data, after_cr)


@pytest.mark.parametrize("impl", IMPLS)
@given(_LINES, st.lists(st.integers(0, 40), max_size=4))
def test_vsize_in_pieces_equals_whole(
    impl: Implementation | None, data: bytes, cuts: list[int]
) -> None:
    """A body streamed in any pieces has the virtual size of the whole: each bare LF
    counted twice, CRLF once (§2.4)."""
    fn = _impl(impl).vsize_part
    whole = len(data) + data.count(b"\n") - data.count(b"\r\n")
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    total = sum(
        fn(data[a:b], a > 0 and data[a - 1] == 0x0D)
        for a, b in zip(bounds, bounds[1:], strict=False)
    )
    assert fn(data, False) == total == whole


@pytest.mark.parametrize("impl", IMPLS)
def test_find_lf_dot(impl: Implementation | None) -> None:
    fn = _impl(impl).find_lf_dot
    assert fn(b"") == fn(b".") == fn(b"a\n") == fn(b"a\r\n") == -1
    assert fn(b"\n.") == 0 and fn(bytearray(b"ab\nc\n\r\n..")) == 6


_DOTTY = st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\n."])).map(b"".join)


@pytest.mark.skipif(C is None, reason="covered by test_c_extension_is_built")
@given(_DOTTY, st.booleans())
def test_find_lf_dot_c_equals_pure(data: bytes, as_bytearray: bool) -> None:
    assert C is not None
    arg = bytearray(data) if as_bytearray else data
    assert C.find_lf_dot(arg) == PURE.find_lf_dot(arg) == data.find(b"\n.")


@pytest.mark.parametrize("pure", ["1", ""])
def test_version_names_the_live_implementation(pure: str) -> None:
    env = dict(os.environ, PYDSYNC_PUREPYTHON=pure)
    out = subprocess.run(
        [sys.executable, "-m", "pydsync_server", "--version"], env=env, capture_output=True
    )
    assert out.returncode == 0, out.stderr
    expected = "python" if pure or C is None else "c"
    assert out.stdout.decode().strip().endswith(f"(native: {expected})")
