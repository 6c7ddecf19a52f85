"""Micro-benchmark of pydsync's native functions: the cffi path against its pure-Python
twin (pydsync_server._native), on the benchmark's own data, in one process.

    python bench/native_micro.py --storage MDBOX/storage --maildir CORPUS/Maildir [--tree DIR]

`dbox_scan` runs over every m.N file of an mdbox (as `dbox_file.walk` calls it when the
GUID index or a metadata lookup reads a file), `walk` is that whole call (scan plus the
Python record objects), `vsize_part` over every message file of the corpus in 64 KiB
pieces (as a dbox save counts the virtual size while the body streams), `find_lf_dot`
over every message dot-stuffed as on the wire, as the dsync-server's stream decoder
calls it. Each figure is the best of --repeat passes over all the inputs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAIL_DIRS = ("cur", "new")
PIECE = 1 << 16  # the chunk a dbox save reads a body in


def best(fn: Callable[[Any], Any], impl: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(impl)
        times.append(time.perf_counter() - t0)
    return min(times)


def load(tree: Path) -> tuple[ModuleType, ModuleType]:
    sys.path.insert(0, str(tree))
    native = importlib.import_module("pydsync_server._native")
    dbox = importlib.import_module("pydsync_server.storage.dbox_file")
    return native, dbox


def measure(args: argparse.Namespace) -> list[tuple[str, str, float, float]]:
    """(function, input, seconds on the C path, seconds pure), best of args.repeat."""
    native, dbox = load(args.tree)
    c, pure = native.c_implementation(), native.pure_implementation()
    if c is None:
        raise SystemExit("the cffi module is not built in " + str(args.tree))
    files = [p.read_bytes() for p in sorted(args.storage.glob("m.*"))]
    msgs = [p.read_bytes() for p in sorted(args.maildir.rglob("*")) if p.parent.name in MAIL_DIRS]
    heads = [dbox.parse_file_header(d, "") for d in files]
    scanned = f"{len(files)} m.N files, {sum(map(len, files)) / 1e6:.0f} MB"
    mailed = f"{len(msgs)} messages, {sum(map(len, msgs)) / 1e6:.0f} MB"

    def scan_all(impl: Any) -> list[Any]:
        return [
            impl.dbox_scan(d, h.size, h.msg_header_size, len(d))
            for d, h in zip(files, heads, strict=True)
        ]

    def vsize_all(impl: Any) -> list[int]:
        sizes = []
        for m in msgs:
            size, after_cr = 0, False
            for i in range(0, len(m), PIECE):
                size += impl.vsize_part(m[i : i + PIECE], after_cr)
                after_cr = m[i + PIECE - 1 : i + PIECE] == b"\r"
            sizes.append(size)
        return sizes

    stuffed = [m.replace(b"\n.", b"\n..") + b"\r\n.\r\n" for m in msgs]

    def find_all(impl: Any) -> list[int]:
        found = []
        for s in stuffed:
            buf = bytearray(s)  # consumed from the front, as the decoder does
            while (i := impl.find_lf_dot(buf)) >= 0:
                found.append(i)
                del buf[: i + 2]
        return found

    def walk_all(impl: Any) -> list[Any]:
        saved = getattr(native, "dbox_scan")  # noqa: B009 (a module attribute, swapped)
        setattr(native, "dbox_scan", impl.dbox_scan)  # noqa: B010 (what walk calls)
        try:
            return [dbox.walk(d) for d in files]
        finally:
            setattr(native, "dbox_scan", saved)  # noqa: B010

    # Same results, or the timing means nothing.
    for fn in (scan_all, vsize_all, find_all, walk_all):
        if fn(c) != fn(pure):
            raise SystemExit(f"{fn.__name__}: the C path and the pure twin disagree")
    out = []
    for name, fn, what in (
        ("dbox_scan", scan_all, scanned),
        ("dbox_file.walk", walk_all, scanned),
        ("vsize_part", vsize_all, mailed),
        ("find_lf_dot", find_all, mailed + ", dot-stuffed"),
    ):
        out.append((name, what, best(fn, c, args.repeat), best(fn, pure, args.repeat)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--storage", type=Path, required=True, help="an mdbox storage/ directory")
    ap.add_argument("--maildir", type=Path, required=True, help="a Maildir (the corpus)")
    ap.add_argument("--tree", type=Path, default=ROOT, help="where pydsync_server is")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows = measure(args)
    print(f"best of {args.repeat}; pydsync_server from {args.tree}")
    print("| function | input | C s | pure s | pure ÷ C |")
    print("|---|---|---|---|---|")
    for name, what, tc, tp in rows:
        print(f"| `{name}` | {what} | {tc:.4f} | {tp:.4f} | {tp / tc:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
