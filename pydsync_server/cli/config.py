"""Settings from a Dovecot-style config file (`-c`, `-i`, the default paths) and
`-o key=value` overrides, as one `Config`.

The syntax is dovecot.conf's (config_parser.py); unknown names warn (config_check.py).
`-o` wins over the file; `-o plugin/KEY=V` and `-o namespace/NAME/KEY=V` reach into
sections, as doveadm's `-o` does. `protocol doveadm { }` applies (pydsync is doveadm).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError, UsageError
from .config_check import check
from .config_parser import Section, parse_file
from .config_settings import USED, default

# Looked for in order when neither -c, -i nor -O is given: pydsync's own file, then
# Dovecot's (so a host's dovecot.conf is used as doveadm would use it).
DOVECOT_CONFIG = "/etc/dovecot/dovecot.conf"
DEFAULT_PATHS: tuple[str, ...] = ("/etc/pydsync/pydsync.conf", DOVECOT_CONFIG)
# Names the file to read instead of searching DEFAULT_PATHS; empty = no file (as -O).
# For wrappers and test suites that must not pick up the host's dovecot.conf.
CONFIG_ENV = "PYDSYNC_CONFIG"
# Dovecot's list of running instances (`doveadm instance list`); its state_dir is built in.
INSTANCES_PATH = "/var/lib/dovecot/instances"
# Kept in a command destination's environment besides `import_environment` (without -k).
# What a command destination needs beyond `import_environment`: to find the command,
# the user, the ssh agent of the admin who runs it, and (for a pydsync there) the
# config file choice.
CHILD_ENV_KEEP = ("PATH", "HOME", "USER", "SSH_AUTH_SOCK", "PYTHONPATH", CONFIG_ENV)


@dataclass
class Config:
    """`values`: plain settings (file, `protocol doveadm`, then `-o`); `tree`: everything
    as written, sections included."""

    values: dict[str, str] = field(default_factory=dict)
    path: str | None = None
    tree: Section = field(default_factory=lambda: Section("", ""))
    overrides: dict[str, str] = field(default_factory=dict)  # plain `-o` settings

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    def as_mapping(self) -> Mapping[str, str]:
        """Plain settings plus `plugin/KEY` and `namespace/NAME/KEY` entries."""
        flat: dict[str, str] = {}
        for section in self.tree.sections("plugin"):
            flat |= {f"plugin/{k}": v for k, v in section.settings().items()}
        for section in self.tree.sections("namespace"):
            flat |= {f"namespace/{section.name}/{k}": v for k, v in section.settings().items()}
        return flat | self.values

    def inbox_namespace(self) -> dict[str, str] | None:
        """The settings of the namespace with `inbox = yes` (None: no such namespace)."""
        merged: dict[str, dict[str, str]] = {}
        for section in self.tree.sections("namespace"):
            merged.setdefault(section.name, {}).update(section.settings())
        for settings in merged.values():
            if settings.get("inbox", "no").lower() in ("yes", "y", "1", "true"):
                return settings
        return None


def load_config(
    path: str | None,
    overrides: Iterable[str],
    *,
    warn: Callable[[str], object] | None = None,
) -> Config:
    """Read `path` (None: no file), warn about unknown names, apply `-o` on top."""
    tree = parse_file(path, USED) if path is not None else Section("", "")
    if warn is not None:
        check(tree, warn)
    values = tree.settings()
    for section in tree.sections("protocol"):
        if section.name == "doveadm":
            values |= section.settings()
    plain: dict[str, str] = {}
    for item in overrides:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"-o parameter not in key=value format: {item}")
        if "/" in key:
            _override_section(tree, key, value)
        else:
            plain[key] = value
    return Config(values | plain, path, tree, plain)


def _override_section(tree: Section, key: str, value: str) -> None:
    parts = key.split("/")
    if len(parts) == 2:
        tree.child(parts[0], "").set(parts[1], value)
    elif len(parts) == 3:
        tree.child(parts[0], parts[1]).set(parts[2], value)
    else:
        raise UsageError(f"-o {key}: expected SECTION/KEY or SECTION/NAME/KEY")


def config_path(
    option: str | None,
    *,
    no_config: bool,
    instance: str | None,
    environ: Mapping[str, str] | None = None,
    candidates: Iterable[str] | None = None,
    instances: str = INSTANCES_PATH,
) -> str | None:
    """Which file to read: none with -O, `-c`, else `-i`'s instance, else $PYDSYNC_CONFIG
    (empty: none), else the first readable default path, else none."""
    if no_config:
        return None
    if option is not None:
        return option
    if instance is not None:
        return instance_config(instance, instances)
    if environ is not None and CONFIG_ENV in environ:
        return environ[CONFIG_ENV] or None
    for candidate in DEFAULT_PATHS if candidates is None else candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.R_OK):
            return candidate
    return None


def instance_config(name: str, instances: str = INSTANCES_PATH) -> str:
    """`-i NAME`: the dovecot.conf of the named instance in Dovecot's instance list
    (`LAST_USED<TAB>NAME<TAB>BASE_DIR[<TAB>CONFIG]`, tab-escaped), found through the
    BASE_DIR/dovecot.conf symlink Dovecot keeps, else the recorded CONFIG path."""
    try:
        with open(instances, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    except OSError as exc:
        raise ConfigError(f"Couldn't read {instances}: {exc.strerror or exc}") from exc
    for line in lines:
        fields = [_tab_unescape(f) for f in line.split("\t")]
        if len(fields) >= 3 and fields[1] == name:
            link = os.path.join(fields[2], "dovecot.conf")
            if os.path.islink(link):
                return os.path.join(os.path.dirname(link), os.readlink(link))
            if len(fields) >= 4 and fields[3]:
                return fields[3]
            return link
    raise ConfigError(f"Unknown instance name: {name}")


def _tab_unescape(text: str) -> str:
    """Dovecot's tab-escaping: \\x01 followed by 1, t, r, n or 0."""
    table = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n", "0": "\0"}
    out, i = [], 0
    while i < len(text):
        if text[i] == "\x01" and i + 1 < len(text):
            out.append(table.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def child_environment(
    environ: Mapping[str, str], settings: Mapping[str, str], *, keep: bool
) -> dict[str, str]:
    """The environment for a command destination: all of it with `-k`; else, as Dovecot
    cleans its environment, only `import_environment` (NAME or NAME=VALUE words) plus
    PATH, HOME and USER (pydsync keeps PATH to find the command; Dovecot 2.3 drops it)."""
    if keep:
        return dict(environ)
    spec = settings.get("import_environment", default("import_environment"))
    out = {name: environ[name] for name in CHILD_ENV_KEEP if name in environ}
    for word in spec.split():
        name, eq, value = word.partition("=")
        if eq:
            out[name] = value
        elif name in environ:
            out[name] = environ[name]
    return out
