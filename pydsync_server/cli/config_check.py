"""Warnings for settings and sections pydsync does not know, one line each with the
place they were written: "Warning: Unknown setting: NAME (FILE:LINE)".

Real Dovecot refuses an unknown setting; pydsync only warns, so a dovecot.conf with
settings of other Dovecot parts (or newer versions) still works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .config_parser import Section, Setting
from .config_settings import FILTERS, KNOWN, MAILBOX_KEYS, NAMESPACE_KEYS, OPAQUE

Warn = Callable[[str], object]


def check(root: Section, warn: Warn) -> None:
    for message in unknown(root):
        warn(message)


def unknown(section: Section) -> Iterator[str]:
    """Warning lines for `section` read as the root or a filter."""
    for entry in section.entries:
        if isinstance(entry, Setting):
            if entry.key not in KNOWN:
                yield _line("setting", entry.key, entry)
        elif entry.kind in FILTERS:
            yield from unknown(entry)
        elif entry.kind == "namespace":
            yield from _keys(entry, NAMESPACE_KEYS, {"mailbox": MAILBOX_KEYS})
        elif entry.kind == "mailbox":  # 2.4 allows mailbox { } outside a namespace
            yield from _keys(entry, MAILBOX_KEYS, {})
        elif entry.kind not in OPAQUE:
            yield _line("section", entry.kind, entry)


def _keys(section: Section, keys: dict[str, str], subs: dict[str, dict[str, str]]) -> Iterator[str]:
    for entry in section.entries:
        if isinstance(entry, Setting):
            if entry.key not in keys:
                yield _line("setting", f"{section.kind}/{entry.key}", entry)
        elif entry.kind in subs:
            yield from _keys(entry, subs[entry.kind], {})
        else:
            yield _line("section", f"{section.kind}/{entry.kind}", entry)


def _line(what: str, name: str, where: Setting | Section) -> str:
    return f"Warning: Unknown {what}: {name} ({where.file}:{where.line})"
