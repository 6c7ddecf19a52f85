"""The man pages document exactly the options the CLI accepts, and render cleanly.

Option lists come from the CLI's own tables (`cli.options`, `cli.main.COMMANDS`), so a
new option or command without documentation fails here. Rendering needs groff
(package groff-base): without it these tests fail, they do not skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pydsync_server.cli.main import COMMANDS
from pydsync_server.cli.options import GLOBAL_OPTIONS, Option

MAN = Path(__file__).resolve().parent.parent / "man"

# page -> section heading -> the option tables documented under it (None: global).
PAGES: dict[str, dict[str, list[str | None]]] = {
    "pydsync.1": {".SH OPTIONS": [None]},
    "pydsync.conf.5": {'.SH "THE CONFIG COMMAND"': ["config"]},
    "pydsync-backup.1": {".SH OPTIONS": ["backup"]},
    "pydsync-sync.1": {".SH OPTIONS": ["sync"]},
    "pydsync-dsync-server.1": {".SH OPTIONS": ["dsync-server"]},
    "pydsync-doveadm-server.1": {".SH OPTIONS": ["doveadm-server"]},
    "pydsync-mailbox.1": {
        '.SS "mailbox list"': ["mailbox list"],
        '.SS "mailbox status"': ["mailbox status"],
        ".SS fetch": ["fetch"],
    },
    "pydsync-force-resync.1": {
        ".SS force\\-resync": ["force-resync"],
        ".SS purge": ["purge"],
    },
}


def _table(command: str | None) -> tuple[Option, ...]:
    return GLOBAL_OPTIONS if command is None else COMMANDS[command].options


def _spellings(commands: list[str | None]) -> set[str]:
    return {s for c in commands for o in _table(c) for s in o.spellings}


def section_lines(text: str, heading: str) -> list[str]:
    """The lines of one `.SH`/`.SS` section, up to the next heading."""
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next(
        (i for i in range(start, len(lines)) if lines[i].startswith((".SH", ".SS"))),
        len(lines),
    )
    return lines[start:end]


def documented_options(lines: list[str]) -> set[str]:
    """Option spellings in the tags of `.TP` items (the line after each `.TP`)."""
    found = set()
    for prev, line in zip(lines, lines[1:], strict=False):
        if prev.strip() == ".TP":
            for token in line.split():
                if token.startswith("\\-"):
                    found.add(re.sub(r"[^\w-]+$", "", token.replace("\\-", "-")))
    return found


def test_every_command_has_a_page() -> None:
    covered = {c for sections in PAGES.values() for cs in sections.values() for c in cs}
    assert set(COMMANDS) <= covered


@pytest.mark.parametrize(
    ("page", "heading"), [(p, h) for p, sections in PAGES.items() for h in sections]
)
def test_page_documents_exactly_the_accepted_options(page: str, heading: str) -> None:
    text = (MAN / page).read_text()
    documented = documented_options(section_lines(text, heading))
    accepted = _spellings(PAGES[page][heading])
    assert accepted - documented == set(), f"{page} {heading}: undocumented options"
    assert documented - accepted == set(), f"{page} {heading}: documented but not accepted"


def test_documented_options_parser_sees_items() -> None:
    lines = [".TP", '.BI \\-c " config"', "text", ".TP", '.BR \\-h ", " \\-\\-help']
    assert documented_options(lines) == {"-c", "-h", "--help"}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_renders_without_warnings(page: str) -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff is not installed (apt-get install groff-base)", pytrace=False)
    proc = subprocess.run(
        [groff, "-man", "-ww", "-z", "-Tutf8", str(MAN / page)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stderr == ""


def test_every_page_is_listed() -> None:
    assert {p.name for p in MAN.glob("*.[15]")} == set(PAGES)
