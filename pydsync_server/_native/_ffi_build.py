"""cffi build script (API mode, out of line): compiles speedups.c into
`pydsync_server._native._speedups` at install time (setup.py `cffi_modules`)."""

from __future__ import annotations

import os

from cffi import FFI

# Relative to the directory setup.py runs in: setuptools wants relative source paths.
HERE = os.path.relpath(os.path.dirname(os.path.abspath(__file__)))

ffibuilder = FFI()
ffibuilder.cdef(
    """
    size_t pyd_dbox_scan(const unsigned char *buf, size_t len, size_t start, size_t hdr_size,
                         int64_t *out, size_t max_out, size_t *next, int *error);
    size_t pyd_lf_vsize(const unsigned char *in, size_t len, unsigned char *out,
                        uint64_t *vsize);
    """
)
ffibuilder.set_source(
    "pydsync_server._native._speedups",
    '#include "speedups.h"',
    sources=[os.path.join(HERE, "speedups.c")],
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
