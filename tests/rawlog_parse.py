"""Read a Dovecot-format rawlog (`-r PATH`) back into the raw bytes of each direction."""

from __future__ import annotations

import re

RECORD = re.compile(rb"(\d+)\.(\d{6}) ([IO])([:>]) ")


def parse_rawlog(data: bytes) -> dict[str, bytes]:
    """{"I": received bytes, "O": sent bytes}.

    A `:` record runs through its LF; a `>` record (unfinished line) runs up to the next
    record header, which is only unambiguous when its data cannot contain one: callers
    keep `>` records to data without such headers.
    """
    out = {"I": bytearray(), "O": bytearray()}
    pos = 0
    while pos < len(data):
        match = RECORD.match(data, pos)
        assert match is not None, f"no record header at offset {pos}: {data[pos : pos + 40]!r}"
        if match.group(4) == b":":
            end = data.index(b"\n", match.end()) + 1
        else:
            following = RECORD.search(data, match.end())
            end = following.start() if following is not None else len(data)
        out[match.group(3).decode()] += data[match.end() : end]
        pos = end
    return {key: bytes(value) for key, value in out.items()}
