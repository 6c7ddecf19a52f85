"""Dovecot's config syntax into a tree: `key = value`, `name [arg] { ... }` sections,
`!include`/`!include_try` (globs, relative to the including file), `<file` values,
`$setting` words, `#` comments and backslash continuation lines.

Errors are `ConfigError("FILE line N: message")` (exit 78). Nothing here knows which
settings exist; config_check.py does.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from ..errors import ConfigError
from .config_settings import default

MAX_INCLUDE_DEPTH = 20
_KEY = re.compile(r"[^\s={]+")


class Setting(NamedTuple):
    """`key = value`, where it was written (a NamedTuple: a tenth of a dataclass's
    class-creation cost, which every run pays at start-up)."""

    key: str
    value: str
    file: str = ""
    line: int = 0


@dataclass
class Section:
    """`kind name { ... }`; the root is Section("", "")."""

    kind: str
    name: str
    entries: list[Setting | Section] = field(default_factory=list)
    file: str = ""
    line: int = 0

    def settings(self) -> dict[str, str]:
        """Plain settings of this section, the last one of a name winning."""
        return {e.key: e.value for e in self.entries if isinstance(e, Setting)}

    def get(self, key: str) -> str | None:
        return self.settings().get(key)

    def sections(self, kind: str | None = None) -> Iterator[Section]:
        for entry in self.entries:
            if isinstance(entry, Section) and (kind is None or entry.kind == kind):
                yield entry

    def set(self, key: str, value: str) -> None:
        """Replace every `key` setting here by one (an override)."""
        self.entries = [e for e in self.entries if not (isinstance(e, Setting) and e.key == key)]
        self.entries.append(Setting(key, value))

    def child(self, kind: str, name: str) -> Section:
        """The last `kind name` subsection, created when missing."""
        found = [s for s in self.sections(kind) if s.name == name]
        if found:
            return found[-1]
        section = Section(kind, name)
        self.entries.append(section)
        return section


def parse_file(path: str, read_keys: Collection[str] = ()) -> Section:
    """The tree of `path`; a `<file` value is read for `read_keys` and otherwise kept as
    `<ABSOLUTE-PATH` (doveconf -n shows it so; it may be a file only root can read)."""
    root = Section("", "", file=path)
    _Parser(frozenset(read_keys)).read(path, [root], depth=0)
    return root


class _Parser:
    def __init__(self, read_keys: frozenset[str]) -> None:
        self.read_keys = read_keys

    def read(self, path: str, stack: list[Section], depth: int) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            raise ConfigError(f"{path}: !include nested too deeply")
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as exc:
            raise ConfigError(f"Couldn't read config file {path}: {exc.strerror or exc}") from exc
        base = len(stack)
        for number, line in _logical_lines(text):
            try:
                self._line(path, number, line, stack, depth)
            except _LineError as exc:
                raise ConfigError(f"{path} line {number}: {exc}") from None
        if len(stack) > base:
            opened = stack[-1]
            raise ConfigError(f"{path} line {opened.line}: Missing '}}'")

    def _line(self, path: str, number: int, line: str, stack: list[Section], depth: int) -> None:
        if line.startswith("!"):
            self._include(path, line, stack, depth)
            return
        if line == "}":
            if len(stack) == 1:
                raise _LineError("Unexpected '}'")
            stack.pop()
            return
        match = _KEY.match(line)
        if match is None:
            raise _LineError(f"Expecting '=' in: {line}")
        key, rest = match.group(), line[match.end() :].strip()
        if rest.startswith("="):
            value = _value(key, rest[1:].strip(), stack, os.path.dirname(path))
            if value.startswith("<") and key in self.read_keys:
                value = _file_value(value[1:])
            stack[-1].entries.append(Setting(key, value, path, number))
        elif rest.endswith("{"):
            name = _unquote(rest[:-1].strip())
            section = Section(key, name, file=path, line=number)
            stack[-1].entries.append(section)
            stack.append(section)
        else:
            raise _LineError(f"Expecting '=' in: {line}")

    def _include(self, path: str, line: str, stack: list[Section], depth: int) -> None:
        directive, _, pattern = line.partition(" ")
        if directive not in ("!include", "!include_try"):
            raise _LineError(f"Unknown command: {directive}")
        pattern = _unquote(pattern.strip())
        if not pattern:
            raise _LineError(f"{directive} needs a file name")
        full = os.path.join(os.path.dirname(path), pattern)
        matches = sorted(glob.glob(full))
        if not matches and directive == "!include":
            raise _LineError(f"No matches: {full}")
        for match in matches:
            self.read(match, stack, depth + 1)


class _LineError(Exception):
    """A syntax error; `_Parser.read` adds the file and line."""


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) per logical line: comments cut, continuations joined,
    blank lines dropped."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        line = _strip_comment(pending + raw).strip()
        pending = ""
        if line:
            yield start, line
    if pending and _strip_comment(pending).strip():
        yield start, _strip_comment(pending).strip()


def _strip_comment(line: str) -> str:
    """Cut at a `#` outside quotes (Dovecot treats any such `#` as a comment)."""
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif quote and char == "\\":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:i]
    return line


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _value(key: str, raw: str, stack: list[Section], directory: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return _unquote(raw)
    if raw.startswith("<"):
        return "<" + os.path.join(directory, raw[1:].strip())
    return " ".join(_expand_word(key, word, stack) for word in raw.split(" "))


def _file_value(path: str) -> str:
    """`key = <file`: the file's contents, without the final newline."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read().rstrip("\r\n")
    except OSError as exc:
        raise _LineError(f"Can't read {path}: {exc.strerror or exc}") from exc


def _expand_word(key: str, word: str, stack: list[Section]) -> str:
    """`$name` as a whole word: the value `name` has so far (innermost section first),
    its own earlier value or default for `key = $key ...`; other words stay as written."""
    if not word.startswith("$") or len(word) < 2:
        return word
    name = word[1:]
    for section in reversed(stack):
        value = section.get(name)
        if value is not None:
            return value
    return default(name) if name == key else word
