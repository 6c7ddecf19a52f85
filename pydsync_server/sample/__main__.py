"""`python -m pydsync_server.sample HOME`: write the sample mail to HOME/Maildir."""

from __future__ import annotations

import sys

from . import materialise


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write("usage: python -m pydsync_server.sample <new home directory>\n")
        return 64
    try:
        root = materialise(argv[0])
    except FileExistsError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 73
    print(root)
    return 0


sys.exit(main(sys.argv[1:]))
