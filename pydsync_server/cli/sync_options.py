"""`sync`/`backup` options -> `SyncSettings` (dsync-algorithm.md §0.2).

Values are checked the way doveadm checks them: a bad `-t`/`-e`/`-I`/`-O`/`-g` is
fatal (exit 75, doveadm's wording), a bad number for `-T`/`-l` is a usage error.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from ..brain.filters import valid_flag_filter
from ..brain.settings import SyncMode, SyncSettings
from ..errors import DsyncError, UsageError
from .options import Parsed

_INTERVAL_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_date(text: str, option: str, now: float) -> int:
    """-t/-e: UNIX time, `YYYY-MM-DD` or IMAP `d-Mon-yyyy` (local midnight), or an
    interval (`30d`, `2 weeks`) meaning that long before now."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    for fmt in ("%Y-%m-%d", "%d-%b-%Y"):
        try:
            return int(time.mktime(time.strptime(text, fmt)))
        except ValueError:
            pass
    match = re.fullmatch(r"(\d+)\s*([A-Za-z]+)", text)
    if match and match.group(2).lower() in _INTERVAL_UNITS:
        return int(now) - int(match.group(1)) * _INTERVAL_UNITS[match.group(2).lower()]
    raise DsyncError(f"Invalid {option} parameter: {text}")


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([bkmgtBKMGT]?)[bB]?", text.strip())
    if not match:
        raise DsyncError(f"Invalid -I parameter '{text}': Invalid size: {text}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_uint(text: str | None, option: str, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit():
        raise UsageError(f"Invalid {option} parameter: {text}")
    return int(text)


def _mode(parsed: Parsed, command: str) -> SyncMode:
    reverse = parsed.flag("reverse")
    if command == "backup":
        return SyncMode.BACKUP_REVERSE if reverse else SyncMode.BACKUP
    if parsed.flag("oneway"):
        return SyncMode.ONEWAY_REVERSE if reverse else SyncMode.ONEWAY
    return SyncMode.TWOWAY  # `sync -R` without -1 has no effect (§0.2)


def _guid(text: str | None) -> str | None:
    if text is None or text == "":
        return text
    if not re.fullmatch(r"[0-9a-fA-F]{32}", text) or int(text, 16) == 0:
        raise DsyncError(f"Invalid -g parameter: {text}")
    return text.lower()


def _only_flag(text: str | None) -> str | None:
    if text is not None and not valid_flag_filter(text):
        raise DsyncError(f"Invalid system flag given for -O parameter: '{text}'")
    return text


def hashed_headers(config: Mapping[str, str]) -> tuple[str, ...]:
    raw = config.get("dsync_hashed_headers", "Date Message-ID")
    names = tuple(n for n in re.split(r"[ ,]+", raw) if n)
    if not names:
        raise UsageError("dsync_hashed_headers must not be empty")
    return names


def build_settings(
    parsed: Parsed,
    command: str,
    config: Mapping[str, str],
    *,
    hostname: str,
    now: float,
    debug: bool,
) -> SyncSettings:
    since = parse_date(v, "-t", now) if (v := parsed.value("since")) is not None else 0
    until = parse_date(v, "-e", now) if (v := parsed.value("until")) is not None else 0
    if since and until and since > until:
        raise DsyncError("start date is later than end date")
    max_size = parse_size(v) if (v := parsed.value("max_size")) is not None else 0
    namespaces = parsed.values("namespace")
    features = config.get("dsync_features", "").split()
    return SyncSettings(
        mode=_mode(parsed, command),
        hostname=hostname,
        full_sync=parsed.flag("full"),
        state=parsed.value("state"),
        mailbox=parsed.value("mailbox"),
        mailbox_guid=_guid(parsed.value("mailbox_guid")),
        namespace_prefixes=tuple(namespaces) if namespaces else None,
        visible_namespaces=parsed.flag("visible_namespaces"),
        exclude=tuple(parsed.values("exclude")),
        virtual_all_box=parsed.value("virtual_all_box"),
        lock_timeout=parse_uint(parsed.value("lock_timeout"), "-l", 0),
        purge_remote=parsed.flag("purge_remote"),
        since=since,
        until=until,
        max_size=max_size,
        only_flag=_only_flag(parsed.value("only_flag")),
        debug=debug,
        hashed_headers=hashed_headers(config),
        alt_char=config.get("dsync_alt_char", "_")[:1] or "_",
        commit_msgs_interval=parse_uint(
            config.get("dsync_commit_msgs_interval") or None, "dsync_commit_msgs_interval", 100
        ),
        empty_hdr_workaround="empty-header-workaround" in features,
    )
