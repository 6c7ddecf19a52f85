"""The pure-Python twin of speedups.c: the same functions, the same results, always
available (and forced by PYDSYNC_PUREPYTHON=1). Read speedups.c for the contracts."""

from __future__ import annotations

DboxRec = tuple[int, int, int, int, int, int, int, int, bytes, bytes, bytes, bytes, bool]
"""(offset, body_offset, body_size, end, R, V, Z, O (-1 absent), G, P, B, X, slow)."""

META_MAGIC = b"\n\x01\x03\n"
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DEC = frozenset(b"0123456789")
_KEYS = b"RVZOGPBX"


def _number(value: bytes, base: int) -> int:
    """-1 for empty, -2 when the Python parser must decide (as parse_number in C)."""
    if not value:
        return -1
    digits, limit = (_HEX, 15) if base == 16 else (_DEC, 18)
    if len(value) > limit or not digits.issuperset(value):
        return -2
    return int(value, base)


def _metadata(data: bytes, meta: int) -> tuple[int, list[int], list[bytes], bool] | None:
    """(offset after the block, numbers, values, slow), or None when damaged."""
    if data[meta : meta + 4] != META_MAGIC:
        return None
    pos = meta + 4
    nums, spans, slow, seen = [-1, -1, -1, -1], [b"", b"", b"", b""], False, set()
    while True:
        eol = data.find(b"\n", pos)
        if eol < 0:
            return None
        line = data[pos:eol]
        pos = eol + 1
        if not line or line[0] == 0x20:
            return pos, nums, spans, slow
        which = _KEYS.find(line[:1])
        if which < 0:
            slow = True
        elif which not in seen:
            seen.add(which)
            if which < 4:
                value = _number(line[1:], 10 if which == 3 else 16)
                slow = slow or value == -2
                nums[which] = value if value != -2 else nums[which]
            else:
                spans[which - 4] = line[1:]


def _record(data: bytes, offset: int, hdr_size: int) -> DboxRec | None:
    hdr = data[offset : offset + hdr_size]
    if len(hdr) < hdr_size or hdr[:2] != b"\x01\x02" or hdr[hdr_size - 1] != 0x0A:
        return None
    if not _HEX.issuperset(hdr[13:29]):
        return None
    size = int(hdr[13:29], 16)
    if size > len(data) - offset - hdr_size:
        return None
    found = _metadata(data, offset + hdr_size + size)
    if found is None:
        return None
    end, n, s, slow = found
    return (
        offset,
        offset + hdr_size,
        size,
        end,
        n[0],
        n[1],
        n[2],
        n[3],
        s[0],
        s[1],
        s[2],
        s[3],
        slow,
    )


def dbox_scan(
    data: bytes, start: int, hdr_size: int, max_records: int
) -> tuple[list[DboxRec], int, bool]:
    """Records from `start` on: (records, where the scan stopped, damaged there)."""
    records: list[DboxRec] = []
    offset = start
    if hdr_size < 30:
        return records, offset, offset < len(data)
    while offset < len(data) and len(records) < max_records:
        record = _record(data, offset, hdr_size)
        if record is None:
            return records, offset, True
        records.append(record)
        offset = record[3]
    return records, offset, False


def vsize_part(data: bytes, after_cr: bool) -> int:
    """len(data) + its LFs without a CR before them (data[-1] is a CR iff after_cr)."""
    bare = data.count(b"\n") - data.count(b"\r\n")
    if after_cr and data[:1] == b"\n":
        bare -= 1
    return len(data) + bare


def find_lf_dot(data: bytes | bytearray) -> int:
    """The index of the first LF that a `.` follows, -1 if none."""
    return data.find(b"\n.")
