"""`pydsync config [-a] [-n] [-P] [SETTING...]`: the settings in `doveconf -n` layout.

As doveconf 2.3.19 prints them: root settings and sections sorted by name (sections of
one name merged, passdb/userdb kept apart), filters (`protocol`, `local`, `remote`)
last in reverse order, a value quoted when it holds `#` or edge spaces, secrets hidden
without -P. With -n only what differs from the default; `location` and `prefix` of a
namespace always, as doveconf does. `$setting` words are printed expanded.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import __version__
from ..errors import ConfigError
from .config import Config
from .config_parser import Section, Setting
from .config_settings import (
    FILTERS,
    KNOWN,
    LISTS,
    MAILBOX_KEYS,
    NAMESPACE_ALWAYS,
    NAMESPACE_KEYS,
    is_secret,
)
from .context import Context
from .options import Parsed

HIDDEN = "# hidden, use -P to show it"


def show_config(ctx: Context, parsed: Parsed, operands: list[str]) -> int:
    lines = render(
        ctx.config,
        changed_only=parsed.flag("non_default"),
        secrets=parsed.flag("show_secrets"),
        names=operands,
    )
    ctx.stdout.write("".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))
    return 0


def render(config: Config, *, changed_only: bool, secrets: bool, names: list[str]) -> list[str]:
    """The output lines: a `#` header, then settings and blocks."""
    root = _merged(config.tree, config.tree.settings() | config.overrides)
    if not changed_only:
        for key, known in KNOWN.items():
            root.setdefault(key, known.default)
    body = list(_root_lines(root, changed_only, secrets, names))
    if names:
        return body
    header = [f"# pydsync {__version__}: {config.path or '(no config file)'}"]
    return header + body + filter_lines(config, changed_only=changed_only, secrets=secrets)


def _merged(tree: Section, values: dict[str, str]) -> dict[str, str | Section]:
    """Root entries by printed name: plain settings and merged sections."""
    out: dict[str, str | Section] = dict(values)
    for section in tree.sections():
        if section.kind in FILTERS:
            continue
        title = _title(section)
        if section.kind in LISTS:
            title = f"{title}\0{len(out)}"  # never merged
        existing = out.get(title)
        if isinstance(existing, Section):
            existing.entries += section.entries
        else:
            out[title] = Section(section.kind, section.name, list(section.entries))
    return out


def _root_lines(
    root: dict[str, str | Section], changed_only: bool, secrets: bool, names: list[str]
) -> Iterator[str]:
    wanted, missing = set(names), set(names)
    for title in sorted(root, key=_root_order):
        item = root[title]
        shown = title.split("\0")[0]
        if wanted and shown not in wanted and shown.split(" ")[0] not in wanted:
            continue
        missing -= {shown, shown.split(" ")[0]}
        if isinstance(item, Section):
            yield from _block(item, changed_only, secrets, "")
        elif not changed_only or item != _default(title):
            yield _line(title, item, secrets)
    if missing:
        raise ConfigError(f"Unknown setting: {sorted(missing)[0]}")


def _root_order(title: str) -> tuple[bool, str]:
    """By name; dovecot_config_version first, where 2.4 requires and doveconf prints it."""
    name = title.split("\0")[0]
    return name != "dovecot_config_version", name


def _filters(tree: Section) -> list[Section]:
    return [s for s in reversed(list(tree.sections())) if s.kind in FILTERS]


def _block(section: Section, changed_only: bool, secrets: bool, indent: str) -> list[str]:
    """`title {` lines `}`; with -n nothing for a section with nothing to show."""
    inner = list(_inner(section, changed_only, secrets, indent))
    if changed_only and not inner:
        return []
    return [f"{indent}{_title(section)} {{", *inner, f"{indent}}}"]


def _inner(section: Section, changed_only: bool, secrets: bool, indent: str) -> Iterator[str]:
    keys = _section_keys(section.kind)
    always = NAMESPACE_ALWAYS if section.kind == "namespace" else ()
    entries: dict[str, str | Section] = dict(keys) if not changed_only else {}
    entries |= {k: keys[k] for k in always}
    for entry in section.entries:
        if isinstance(entry, Setting):
            entries[entry.key] = entry.value
        else:
            entries[_title(entry)] = entry
    for title in sorted(entries, key=lambda t: t.replace('"', "")):
        item = entries[title]
        if isinstance(item, Section):
            yield from _block(item, changed_only, secrets, indent + "  ")
        elif not changed_only or item != keys.get(title) or title in always:
            yield indent + "  " + _line(title, item, secrets)


def _section_keys(kind: str) -> dict[str, str]:
    return {"namespace": NAMESPACE_KEYS, "mailbox": MAILBOX_KEYS}.get(kind, {})


def _title(section: Section) -> str:
    if not section.name:
        return section.kind
    name = section.name
    return f'{section.kind} "{name}"' if " " in name or not name else f"{section.kind} {name}"


def _default(key: str) -> str:
    known = KNOWN.get(key)
    return known.default if known is not None else ""


def _line(key: str, value: str, secrets: bool) -> str:
    if value and is_secret(key) and not secrets:
        return f"{key} = {HIDDEN}"
    return f"{key} = {_quoted(value)}"


def _quoted(value: str) -> str:
    if "#" in value or value != value.strip():
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def filter_lines(config: Config, *, changed_only: bool, secrets: bool) -> list[str]:
    """The filter blocks (`protocol`, `local`, `remote`) doveconf prints last."""
    out: list[str] = []
    for section in _filters(config.tree):
        out += _block(section, changed_only, secrets, "")
    return out
