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

/* len + the number of LFs in buf not preceded by a CR; the byte before buf[0] is a CR
   iff after_cr (a body streamed in pieces: the previous piece ended with CR). */
uint64_t pyd_vsize_part(const unsigned char *buf, size_t len, int after_cr);

/* The index of the first LF in buf that a '.' follows, -1 if none (bytes.find(b"\n.")). */
int64_t pyd_find_lf_dot(const unsigned char *buf, size_t len);
