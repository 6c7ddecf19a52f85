"""Micro-benchmark of pydsync's native functions: the cffi path against its pure-Python
twin (pydsync_server._native), on the benchmark's own data, in one process.

    python bench/native_micro.py --storage MDBOX/storage --maildir CORPUS/Maildir [--tree DIR]

`dbox_scan` runs over every m.N file of an mdbox (as `dbox_file.walk` calls it when the
GUID index or a metadata lookup reads a file), `walk` is that whole call (scan plus the
Python record objects), `lf_vsize` over every message file of the corpus; for scale,
`dbox_file.virtual_size` (bytes methods, not native), which the dbox save paths call per
message. Each figure is the best of --repeat passes over all the inputs.
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

    def vsize_all(impl: Any) -> list[Any]:
        return [impl.lf_vsize(m) for m in msgs]

    def walk_all(impl: Any) -> list[Any]:
        saved = getattr(native, "dbox_scan")  # noqa: B009 (a module attribute, swapped)
        setattr(native, "dbox_scan", impl.dbox_scan)  # noqa: B010 (what walk calls)
        try:
            return [dbox.walk(d) for d in files]
        finally:
            setattr(native, "dbox_scan", saved)  # noqa: B010

    for fn in (scan_all, vsize_all, walk_all):  # same results, or the timing means nothing
        if fn(c) != fn(pure):
            raise SystemExit(f"{fn.__name__}: the C path and the pure twin disagree")
    out = []
    for name, fn, what in (
        ("dbox_scan", scan_all, scanned),
        ("dbox_file.walk", walk_all, scanned),
        ("lf_vsize", vsize_all, mailed),
    ):
        out.append((name, what, best(fn, c, args.repeat), best(fn, pure, args.repeat)))
    # Not native on either path, but what the dbox save paths call per message (for scale).
    vs = best(lambda _: [dbox.virtual_size(m) for m in msgs], None, args.repeat)
    out.append(("dbox_file.virtual_size (Python on both)", mailed, vs, vs))
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
