"""Mail locations: parse Dovecot's `mail_location` (2.3) or `mail_driver` + `mail_path`
(2.4), expand `~` and `%` variables, and open the matching storage driver.

Grammar: storage-formats.md §0.2 (`DRIVER:PATH[:KEY=VALUE]...[:UTF-8]`, `::` is a
literal colon); 2.4 settings: dovecot-2.4-notes.md §2 (location parameters became
separate settings). Drivers are looked up in a registry the caller may replace.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from ..errors import StorageError, UsageError
from .base import Storage

Clock = Callable[[], float]

# Parameters Dovecot 2.3.19 knows (storage-formats.md §0.2); anything else is an error,
# as it is for Dovecot ("Unknown setting").
KNOWN_PARAMS = frozenset(
    {
        "INBOX", "INDEX", "INDEXPVT", "INDEXCACHE", "CONTROL", "ALT", "ALTNOCHECK", "LAYOUT",
        "SUBSCRIPTIONS", "DIRNAME", "MAILBOXDIR", "VOLATILEDIR", "LISTINDEX", "FULLDIRNAME",
        "BROKENCHAR", "ITERINDEX", "NO-NOSELECT", "NO-FS-VALIDATION",
    }
)  # fmt: skip
# Parameters whose value is a path (`~` expands there too).
PATH_PARAMS = frozenset(
    {"INBOX", "INDEX", "INDEXPVT", "INDEXCACHE", "CONTROL", "ALT", "VOLATILEDIR"}
)
# 2.4 setting -> 2.3 location parameter (dovecot-2.4-notes.md §2).
SETTINGS_24 = {
    "mailbox_list_layout": "LAYOUT",
    "mail_index_path": "INDEX",
    "mail_index_private_path": "INDEXPVT",
    "mail_cache_path": "INDEXCACHE",
    "mail_control_path": "CONTROL",
    "mail_inbox_path": "INBOX",
    "mail_alt_path": "ALT",
    "mail_volatile_path": "VOLATILEDIR",
    "mailbox_subscriptions_filename": "SUBSCRIPTIONS",
    "mailbox_directory_name": "DIRNAME",
    "mailbox_root_directory_name": "MAILBOXDIR",
}
# Mail settings a driver reads (passed along in MailLocation.settings).
DRIVER_SETTINGS = ("mdbox_rotate_size",)
# Where Dovecot's autodetection looks when no location is configured; only the
# formats we can open are tried.
AUTODETECT = (("maildir", "~/Maildir"),)


@dataclass  # not frozen (twice the start-up cost): never changed; unhashable anyway (dicts)
class MailLocation:
    """A parsed, fully expanded location. `params` keys are upper case."""

    driver: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    utf8: bool = False
    settings: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Mail settings the driver reads besides the location (`mdbox_rotate_size`)."""

    def __str__(self) -> str:
        parts = [f"{self.driver}:{self.path.replace(':', '::')}"]
        parts += [f"{k}={v.replace(':', '::')}" if v else k for k, v in self.params.items()]
        return ":".join(parts + (["UTF-8"] if self.utf8 else []))


@dataclass  # not frozen (twice the start-up cost): never changed; unhashable anyway (dicts)
class UserEnv:
    """What `%` variables and `~` expand to."""

    user: str
    home: str | None
    environ: Mapping[str, str] = field(default_factory=dict)


_VAR = re.compile(r"%(?:\{([^}]*)\}|(.))")


# Dovecot 2.4's variable filters, `%{user | username}` (dovecot-2.4-notes.md; the stock
# 2.4 dovecot.conf has `mail_home = /home/%{user | username}`).
_FILTERS: dict[str, Callable[[str], str]] = {
    "username": lambda value: value.partition("@")[0],
    "domain": lambda value: value.partition("@")[2],
    "lower": str.lower,
    "upper": str.upper,
}


def expand_vars(text: str, env: UserEnv) -> str:
    """Expand `%u %n %d %h %%` and `%{user} %{username} %{domain} %{home} %{env:X}`,
    the long forms also with 2.4 filters: `%{user | username | lower}`."""
    local, _, domain = env.user.partition("@")
    short = {"u": env.user, "n": local, "d": domain, "%": "%"}
    long = {"user": env.user, "username": local, "domain": domain}

    def lookup(name: str, table: dict[str, str]) -> str:
        if name in ("h", "home"):
            return _need_home(env, text)
        if name.startswith("env:"):
            return env.environ.get(name[4:], "")
        value = table.get(name)
        if value is None:
            raise UsageError(f"Unknown variable %{name} in: {text}")
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return lookup(match.group(2), short)
        name, *filters = (part.strip() for part in match.group(1).split("|"))
        value = lookup(name, long)
        for filter_name in filters:
            if filter_name not in _FILTERS:
                raise UsageError(f"Unknown variable filter {filter_name} in: {text}")
            value = _FILTERS[filter_name](value)
        return value

    return _VAR.sub(replace, text)


def expand_home(path: str, env: UserEnv) -> str:
    """`~` or `~/x` at the start of a path -> the user's home."""
    if path == "~" or path.startswith("~/"):
        return _need_home(env, path) + path[1:]
    return path


def _need_home(env: UserEnv, text: str) -> str:
    if not env.home:
        raise UsageError(f"Home directory not set for user. Can't expand ~/ in: {text}")
    return env.home.rstrip("/") or "/"


def _split_colons(text: str) -> list[str]:
    """Split on `:`, where `::` is a literal colon (Dovecot's escaping)."""
    parts = [""]
    i = 0
    while i < len(text):
        if text.startswith("::", i):
            parts[-1] += ":"
            i += 2
        elif text[i] == ":":
            parts.append("")
            i += 1
        else:
            parts[-1] += text[i]
            i += 1
    return parts


def parse_location(text: str, env: UserEnv) -> MailLocation:
    """Parse a 2.3 `mail_location` value (variables and `~` expanded)."""
    driver, colon, _ = text.partition(":")
    if not colon or not re.fullmatch(r"[A-Za-z0-9_]+", driver):
        raise UsageError(f"Invalid mail_location (expected driver:path): {text}")
    path, *rest = _split_colons(expand_vars(text[len(driver) + 1 :], env))
    params: dict[str, str] = {}
    utf8 = False
    for item in rest:
        key, _, value = item.partition("=")
        key = key.upper()
        if key == "UTF-8":
            utf8 = True
        elif key in KNOWN_PARAMS:
            params[key] = expand_home(value, env) if key in PATH_PARAMS else value
        else:
            raise UsageError(f"Unknown setting: {key} in mail_location {text}")
    return MailLocation(driver.lower(), _absolute(expand_home(path, env)), params, utf8)


def location_from_settings(settings: Mapping[str, str], env: UserEnv) -> MailLocation:
    """The location a config describes: 2.4 `mail_driver` + `mail_path` (+ parameter
    settings) when `mail_driver` is set, else 2.3 `mail_location`, else autodetection.

    2.4 settings win because 2.4 ignores an unknown `-o mail_location` (notes §1).
    """
    home = settings.get("mail_home")
    if home:
        env = UserEnv(env.user, expand_home(expand_vars(home, env), env), env.environ)
    driver = settings.get("mail_driver", "")
    if driver:
        location = _location_24(driver, settings, env)
    elif settings.get("mail_location", ""):
        location = parse_location(settings["mail_location"], env)
    else:
        location = autodetect(env)
    return with_driver_settings(location, settings)


def with_driver_settings(location: MailLocation, settings: Mapping[str, str]) -> MailLocation:
    """The location carrying the mail settings its driver reads (DRIVER_SETTINGS)."""
    wanted = {k: settings[k] for k in DRIVER_SETTINGS if k in settings}
    return replace(location, settings=wanted) if wanted else location


def _location_24(driver: str, settings: Mapping[str, str], env: UserEnv) -> MailLocation:
    path = settings.get("mail_path", "")
    if not path:
        raise UsageError(f"mail_driver={driver} is set but mail_path is not")
    params: dict[str, str] = {}
    for name, key in SETTINGS_24.items():
        value = settings.get(name, "")
        if value:
            value = expand_vars(value, env)
            params[key] = expand_home(value, env) if key in PATH_PARAMS else value
    utf8 = settings.get("mailbox_list_utf8", "no").lower() in ("yes", "y", "1", "true")
    path = _absolute(expand_home(expand_vars(path, env), env))
    return MailLocation(driver.lower(), path, params, utf8)


def autodetect(env: UserEnv) -> MailLocation:
    """Dovecot's guess when no location is set: an existing ~/Maildir."""
    for driver, path in AUTODETECT:
        if env.home and os.path.isdir(expand_home(path, env)):
            return MailLocation(driver, expand_home(path, env))
    raise StorageError(
        f"Mail storage autodetection failed with home={env.home or '(not set)'}: "
        "set mail_location (or mail_driver and mail_path)"
    )


def _absolute(path: str) -> str:
    return os.path.abspath(path) if path else path


# -- drivers ----------------------------------------------------------------------------

DriverFactory = Callable[[MailLocation, Clock, str], Storage]

# Parameters that change nothing a driver reads or writes here.
IGNORED_PARAMS = frozenset(
    {"VOLATILEDIR", "LISTINDEX", "ITERINDEX", "NO-FS-VALIDATION", "ALTNOCHECK", "INDEXCACHE"}
)
MAILDIR_PARAMS = frozenset({"LAYOUT", "INDEX", "CONTROL"}) | IGNORED_PARAMS
MAILDIR_LAYOUTS = {"maildir++": "maildir++", "fs": "fs"}


def _check_params(location: MailLocation, supported: frozenset[str]) -> None:
    unsupported = sorted(set(location.params) - supported)
    if unsupported:
        raise UsageError(
            f"{location.driver}: location parameter(s) not supported: {', '.join(unsupported)}"
        )


def _open_maildir(location: MailLocation, clock: Clock, hostname: str) -> Storage:
    from .maildir import MaildirStorage

    _check_params(location, MAILDIR_PARAMS)
    layout = location.params.get("LAYOUT", "maildir++").lower()
    if layout not in MAILDIR_LAYOUTS:
        raise UsageError(f"maildir: unsupported LAYOUT={layout} (use maildir++ or fs)")
    index = location.params.get("INDEX") or None
    return MaildirStorage(
        location.path,
        layout=MAILDIR_LAYOUTS[layout],
        utf8_names=location.utf8,
        control_dir=location.params.get("CONTROL") or None,
        index_dir=None if index == "MEMORY" else index,
        clock=clock,
        hostname=hostname,
    )


SDBOX_PARAMS = frozenset({"ALT"}) | IGNORED_PARAMS


def _open_sdbox(location: MailLocation, clock: Clock, hostname: str) -> Storage:
    """sdbox (storage-formats.md §4): LAYOUT=fs only, the default directory names."""
    from .sdbox import SdboxStorage

    _check_params(location, SDBOX_PARAMS | {"LAYOUT"})
    if location.params.get("LAYOUT", "fs").lower() != "fs":
        raise UsageError("sdbox: only LAYOUT=fs is supported")
    return SdboxStorage(
        location.path,
        alt_root=location.params.get("ALT") or None,
        utf8_names=location.utf8,
        clock=clock,
        hostname=hostname,
    )


def parse_size(text: str) -> int:
    """A Dovecot size setting: `10M`, `512 k`, `1G`, `2048` (bytes; B/k/M/G/T, 1024-based)."""
    match = re.fullmatch(r"\s*(\d+)\s*([bkmgt]?)b?\s*", text.lower())
    if match is None:
        raise UsageError(f"Invalid size: {text!r}")
    unit: int = 1024 ** "bkmgt".index(match.group(2) or "b")
    return int(match.group(1)) * unit


def _open_mdbox(location: MailLocation, clock: Clock, hostname: str) -> Storage:
    """mdbox (storage-formats.md §3): LAYOUT=fs, ALT=, `mdbox_rotate_size`."""
    from .mdbox import MdboxStorage
    from .mdbox_files import DEFAULT_ROTATE_SIZE

    _check_params(location, SDBOX_PARAMS | {"LAYOUT"})
    if location.params.get("LAYOUT", "fs").lower() != "fs":
        raise UsageError("mdbox: only LAYOUT=fs is supported")
    rotate = location.settings.get("mdbox_rotate_size", "")
    return MdboxStorage(
        location.path,
        alt_root=location.params.get("ALT") or None,
        rotate_size=parse_size(rotate) if rotate else DEFAULT_ROTATE_SIZE,
        utf8_names=location.utf8,
        clock=clock,
        hostname=hostname,
    )


def _open_memory(location: MailLocation, clock: Clock, hostname: str) -> Storage:
    """An empty in-memory store: for tests only (nothing survives the process)."""
    from .memory import MemoryStorage

    _check_params(location, frozenset())
    return MemoryStorage(clock=clock)


def default_drivers() -> dict[str, DriverFactory]:
    """The drivers `open_storage` knows unless given others."""
    return {
        "maildir": _open_maildir,
        "mdbox": _open_mdbox,
        "memory": _open_memory,
        "sdbox": _open_sdbox,
    }


def open_storage(
    location: MailLocation,
    *,
    clock: Clock,
    hostname: str,
    drivers: Mapping[str, DriverFactory] | None = None,
) -> Storage:
    """Open the store a location points at. Unknown driver: UsageError (exit 64)."""
    registry = default_drivers() if drivers is None else drivers
    factory = registry.get(location.driver)
    if factory is None:
        known = ", ".join(sorted(registry))
        raise UsageError(f"Unknown mail storage driver {location.driver} (known: {known})")
    return factory(location, clock, hostname)
