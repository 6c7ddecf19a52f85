"""Settings from a Dovecot-style config file (`-c`) and `-o key=value` overrides.

The file format is the simple part of dovecot.conf: `key = value` lines, `#` comments,
`!include`/`!include_try` of files or globs relative to the including file. Sections
(`name [arg] { ... }`) are skipped: their settings (namespace details, plugins) do not
change what pydsync does yet. `-o` overrides win over the file.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError, UsageError

MAX_INCLUDE_DEPTH = 20


@dataclass
class Config:
    """Settings by name; values are strings as written (quotes removed)."""

    values: dict[str, str] = field(default_factory=dict)
    path: str | None = None

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    def as_mapping(self) -> Mapping[str, str]:
        return self.values


def load_config(path: str | None, overrides: Iterable[str]) -> Config:
    """Read `path` (None: no file) and apply `-o key=value` overrides on top."""
    config = Config(path=path)
    if path is not None:
        _read_file(path, config.values, depth=0)
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"-o parameter not in key=value format: {item}")
        config.values[key.strip()] = value
    return config


def _read_file(path: str, values: dict[str, str], depth: int) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        raise ConfigError(f"{path}: !include nested too deeply")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"Couldn't read config file {path}: {exc.strerror or exc}") from exc
    section_depth = 0
    for number, raw in enumerate(_joined(lines), start=1):
        line = _strip_comment(raw).strip()
        where = f"{path} line {number}"
        if not line:
            continue
        if line.startswith("!include"):
            if section_depth == 0:
                _include(path, line, values, depth)
            continue
        if line == "}":
            if section_depth == 0:
                raise ConfigError(f"{where}: Unexpected '}}'")
            section_depth -= 1
        elif line.endswith("{"):
            section_depth += 1
        elif section_depth == 0:
            key, eq, value = line.partition("=")
            if not eq:
                raise ConfigError(f"{where}: Expecting '=' in: {line}")
            values[key.strip()] = _unquote(value.strip())
    if section_depth:
        raise ConfigError(f"{path}: Missing '}}'")


def _joined(lines: list[str]) -> list[str]:
    """Join lines ending in a backslash with the next (dovecot.conf continuation)."""
    out: list[str] = []
    pending = ""
    for line in lines:
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def _strip_comment(line: str) -> str:
    """Drop a `#` comment that is not inside double quotes."""
    quoted = False
    for i, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:i]
    return line


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _include(path: str, line: str, values: dict[str, str], depth: int) -> None:
    directive, _, pattern = line.partition(" ")
    pattern = os.path.join(os.path.dirname(path), _unquote(pattern.strip()))
    matches = sorted(glob.glob(pattern))
    if not matches and directive == "!include" and not glob.has_magic(pattern):
        raise ConfigError(f"{path}: !include {pattern}: No such file")
    for match in matches:
        _read_file(match, values, depth + 1)
