"""pydsync's native fast paths (cffi, API mode) with a pure-Python twin.

The C module `_speedups` is built at install time (setup.py `cffi_modules`) and used when
importable; `PYDSYNC_PUREPYTHON=1` forces the twin (`_pure`). Both give identical results
(tests/test_native.py). Bottom layer: imports nothing of pydsync.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _pure
from ._pure import DboxRec

__all__ = [
    "IMPLEMENTATION", "DboxRec", "Implementation", "c_implementation", "dbox_scan", "find_lf_dot",
    "pure_implementation", "live", "vsize_part",
]  # fmt: skip

PURE_ENV = "PYDSYNC_PUREPYTHON"
_BATCH = 512

ScanFn = Callable[[bytes, int, int, int], tuple[list[DboxRec], int, bool]]
VsizeFn = Callable[[bytes, bool], int]
FindFn = Callable[[bytes | bytearray], int]


@dataclass(frozen=True)
class Implementation:
    """One set of the functions: `name` is "c" or "python".

    `dbox_scan(data, start, hdr_size, max_records)` -> (records, stop offset, damaged):
    dbox records from `start` (storage-formats.md §2.5), see `_pure.DboxRec`.
    `vsize_part(data, after_cr)` -> len(data) + its LFs without a CR before them, the
    byte before data[0] being a CR iff after_cr: the virtual size (metadata V, §2.4) of a
    body, summed over the pieces it streams in.
    `find_lf_dot(data)` -> `data.find(b"\\n.")`: where a dsync stream's next line starting
    with a dot begins (dsync-protocol.md §4.2).
    """

    name: str
    dbox_scan: ScanFn
    vsize_part: VsizeFn
    find_lf_dot: FindFn


def pure_implementation() -> Implementation:
    return Implementation("python", _pure.dbox_scan, _pure.vsize_part, _pure.find_lf_dot)


def c_implementation() -> Implementation | None:
    """The compiled functions, or None when `_speedups` was not built."""
    try:
        from . import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    ffi: Any = _speedups.ffi
    lib: Any = _speedups.lib
    fields = 17  # PYD_REC_FIELDS in speedups.h

    def dbox_scan(
        data: bytes, start: int, hdr_size: int, max_records: int
    ) -> tuple[list[DboxRec], int, bool]:
        if start < 0 or max_records < 0:
            raise ValueError("dbox_scan needs start >= 0 and max_records >= 0")
        out = ffi.new("int64_t[]", _BATCH * fields)
        nxt, err = ffi.new("size_t *"), ffi.new("int *")
        records: list[DboxRec] = []
        offset, damaged = start, False
        while offset < len(data) and len(records) < max_records and not damaged:
            want = min(_BATCH, max_records - len(records))
            n = lib.pyd_dbox_scan(data, len(data), offset, hdr_size, out, want, nxt, err)
            flat = ffi.unpack(out, n * fields)
            records += [_c_record(data, flat, i * fields) for i in range(n)]
            offset, damaged = int(nxt[0]), bool(err[0])
        return records, offset, damaged

    def vsize_part(data: bytes, after_cr: bool) -> int:
        return int(lib.pyd_vsize_part(data, len(data), after_cr))

    def find_lf_dot(data: bytes | bytearray) -> int:
        return int(lib.pyd_find_lf_dot(ffi.from_buffer(data), len(data)))

    return Implementation("c", dbox_scan, vsize_part, find_lf_dot)


def _c_record(data: bytes, f: list[int], i: int) -> DboxRec:
    g, p, b, x = f[i + 8], f[i + 10], f[i + 12], f[i + 14]
    return (
        f[i], f[i + 1], f[i + 2], f[i + 3], f[i + 4], f[i + 5], f[i + 6], f[i + 7],
        data[g : g + f[i + 9]], data[p : p + f[i + 11]], data[b : b + f[i + 13]],
        data[x : x + f[i + 15]], f[i + 16] != 0,
    )  # fmt: skip


def _select() -> Implementation:
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return pure_implementation()
    return c_implementation() or pure_implementation()


live = _select()
"""The implementation in use: C when built, unless PYDSYNC_PUREPYTHON=1."""
IMPLEMENTATION = live.name
dbox_scan = live.dbox_scan
vsize_part = live.vsize_part
find_lf_dot = live.find_lf_dot
