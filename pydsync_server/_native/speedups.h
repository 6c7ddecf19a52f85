/* Declarations shared by the cffi cdef (_ffi_build.py) and speedups.c. */
#include <stddef.h>
#include <stdint.h>

/* Each record pyd_dbox_scan finds fills PYD_REC_FIELDS int64 slots of `out`:
   offset, body_offset, body_size, end (storage-formats.md §2.5),
   metadata numbers R, V, Z (hex) and O (decimal), -1 when absent or empty,
   (offset, length) of the values of G, P, B, X (length 0 when absent),
   slow: 1 when the block needs the Python parser (unknown key, odd number). */
#define PYD_REC_FIELDS 17

size_t pyd_dbox_scan(const unsigned char *buf, size_t len, size_t start, size_t hdr_size,
                     int64_t *out, size_t max_out, size_t *next, int *error);

size_t pyd_lf_vsize(const unsigned char *in, size_t len, unsigned char *out, uint64_t *vsize);
