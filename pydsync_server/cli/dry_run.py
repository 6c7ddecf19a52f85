"""`--dry-run`: run the real sync on private copies of both stores and print its writes.

Both brains and both drivers run unchanged, on snapshots: every directory and control
file of a Maildir store (uidlist, keywords, pydsync's change sidecar, Dovecot's own
files, the mailbox log) is copied into a scratch directory, and each message file in
`cur/`, `new/` and `tmp/` becomes a symlink to the original. Maildir never rewrites a
message file (a flag change renames it, an expunge unlinks it, a save makes a new one),
so nothing the run does can reach an original. dbox files are written in place (mdbox
appends, a purge rewrites), so sdbox and mdbox stores are copied whole. The scratch
directory is removed afterwards. The writes are observed (storage/observed.py) and
become the plan.

Only local destinations: a remote side writes as it imports, and neither Dovecot's
`dsync-server` nor the protocol has a way to ask it not to (usage error, exit 64).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from ..errors import UsageError
from ..storage.location import MailLocation
from ..storage.observed import WriteEvent

MESSAGE_DIRS = frozenset({"cur", "new", "tmp"})
# Drivers whose message files are linked (never rewritten), and those copied whole.
LINKED_DRIVERS = frozenset({"maildir"})
COPIED_DRIVERS = frozenset({"sdbox", "mdbox"})
# Location parameters naming further directories a store writes under.
PATH_PARAMS = ("CONTROL", "INDEX", "ALT")
REMOTE_REFUSAL = (
    "--dry-run works only with a local destination (driver:path): a remote side "
    "changes its store while it imports"
)


@contextmanager
def snapshot(location: MailLocation) -> Iterator[MailLocation]:
    """A location for a throw-away copy of the store at `location`."""
    if location.driver == "memory":
        yield location  # nothing outlives the process anyway
        return
    link = location.driver in LINKED_DRIVERS
    if not link and location.driver not in COPIED_DRIVERS:
        raise UsageError(
            f"--dry-run supports maildir, sdbox and mdbox stores, not {location.driver}"
        )
    scratch = Path(tempfile.mkdtemp(prefix="pydsync-dry-run."))
    try:
        params = dict(location.params)
        path = _mirror(Path(location.path), scratch / "mail", link)
        for index, key in enumerate(PATH_PARAMS):
            value = params.get(key)
            if value and value.upper() != "MEMORY":
                mirrored = _mirror(Path(value), scratch / f"{index}-{key.lower()}", link)
                params[key] = str(mirrored)
        yield replace(location, path=str(path), params=params)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _mirror(source: Path, target: Path, link: bool) -> Path:
    """Copy `source` to `target`: directories and control files copied, message files
    linked if `link`. A store that does not exist yet is not created (the driver does,
    there)."""
    if not source.is_dir():
        return target
    source = Path(os.path.abspath(source))  # the links must not depend on the cwd
    dirs: list[tuple[Path, Path]] = []
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        there = target / here.relative_to(source)
        there.mkdir(parents=True, exist_ok=True)
        dirs.append((here, there))
        messages = link and here.name in MESSAGE_DIRS
        for name in filenames:
            src = here / name
            if messages and not src.is_symlink() and src.is_file():
                os.symlink(src, there / name)
            else:
                shutil.copy2(src, there / name, follow_symlinks=False)
        for name in [d for d in dirnames if (here / d).is_symlink()]:
            dirnames.remove(name)  # a linked directory is copied as the link itself
            os.symlink(os.readlink(here / name), there / name)
    # Directory times last, children first: a driver that trusts a summary while the
    # directory's mtime is unchanged must see the same times as in the original.
    for here, there in reversed(dirs):
        shutil.copystat(here, there)
    return target


def refuse_remote() -> UsageError:
    return UsageError(REMOTE_REFUSAL)


def plan_lines(writes: Sequence[tuple[str, WriteEvent]]) -> list[str]:
    """`SIDE<TAB>ACTION<TAB>MAILBOX<TAB>UID<TAB>DETAIL` per write ("-": no UID)."""
    lines = []
    for side, event in writes:
        detail = event.detail
        if event.kind == "save":
            detail = f"{event.size} bytes"
        uid = str(event.uid) if event.uid else "-"
        lines.append(f"{side}\t{event.kind}\t{event.mailbox}\t{uid}\t{detail}")
    return lines


def print_plan(out: BinaryIO, user: str, writes: Sequence[tuple[str, WriteEvent]]) -> None:
    """The plan on standard output; `user` prefixes each line in a multi-user run."""
    prefix = f"{user}\t" if user else ""
    for line in plan_lines(writes):
        out.write((prefix + line + "\n").encode("utf-8", "surrogateescape"))
    out.flush()
