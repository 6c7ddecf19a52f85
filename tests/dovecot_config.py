"""Dovecot 2.3 / 2.4 differences for the test harness: config text and doveadm arguments.

Source: /work/shared/spec/dovecot-2.4-notes.md §1 (config), §2 and §6 (command lines).
"""

from __future__ import annotations

import re

DEFAULT_LOCATION = "maildir:~/Maildir"

_CONFIG_COMMON = """\
mail_uid = vmail
mail_gid = vmail
first_valid_uid = 0
first_valid_gid = 0
namespace inbox {
  inbox = yes
  separator = /
}
"""
# 2.4 requires dovecot_config_version first, the storage version, an explicit driver and
# a mail_home (2.3 took ~ from HOME by itself) - notes §1.
_CONFIG_24_HEAD = """\
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
mail_driver = maildir
mail_path = ~/Maildir
mail_home = %{env:HOME}
"""
_ATTRIBUTES_23 = "mail_attribute_dict = file:%h/dovecot-attributes\n"
_ATTRIBUTES_24 = "mail_attribute {\n  dict file {\n    path = %{home}/dovecot-attributes\n  }\n}\n"
# 2.4 settings for the 2.3 location parameters (notes §2: appended to mail_path they would be
# taken literally); names checked against the 2.4.1 libdovecot-storage.
_LOCATION_PARAMS_24 = {
    "LAYOUT": "mailbox_list_layout",
    "INDEX": "mail_index_path",
    "CONTROL": "mail_control_path",
    "INBOX": "mail_inbox_path",
    "ALT": "mail_alt_path",
    "VOLATILEDIR": "mail_volatile_path",
    "DIRNAME": "mailbox_directory_name",
    "MAILBOXDIR": "mailbox_root_directory_name",
    "SUBSCRIPTIONS": "mailbox_subscriptions_filename",
    "LISTINDEX": "mailbox_list_index_prefix",
}
_LOCATION_FLAGS_24 = {
    "UTF-8": "mailbox_list_utf8",
    "NO-NOSELECT": "mailbox_list_drop_noselect",
    "ITERINDEX": "mailbox_list_iter_from_index_dir",
}
# doveadm commands that are not mail commands and so take no --no-userdb-lookup.
_NON_MAIL_COMMANDS = frozenset({"dump", "pw", "help", "log", "stop", "reload", "who", "kick"})


def parse_version(text: str) -> tuple[int, int, int]:
    """``2.3.19.1 (9b53102964)`` -> (2, 3, 19); ``2.4.1-4 (7d8c0e5759)`` -> (2, 4, 1)."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    if match is None:
        raise ValueError(f"unrecognised Dovecot version: {text!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def is_24(version: tuple[int, int, int]) -> bool:
    return version[:2] >= (2, 4)


def config_text(version: tuple[int, int, int], *, attributes: bool = False) -> str:
    """The daemonless test config for this Dovecot version (notes §1 / fixtures min.conf)."""
    if is_24(version):
        text = _CONFIG_24_HEAD + _CONFIG_COMMON
        return text + (_ATTRIBUTES_24 if attributes else "")
    text = f"mail_location = {DEFAULT_LOCATION}\n" + _CONFIG_COMMON
    return text + (_ATTRIBUTES_23 if attributes else "")


def location_options(version: tuple[int, int, int], location: str) -> list[str]:
    """Global ``-o`` options selecting a mail location (notes §2, §6.4)."""
    if not is_24(version):
        return ["-o", f"mail_location={location}"]
    driver, _, rest = location.partition(":")
    path, *params = rest.split(":")
    opts = ["-o", f"mail_driver={driver}", "-o", f"mail_path={path}"]
    for param in params:
        key, eq, value = param.partition("=")
        if eq and key in _LOCATION_PARAMS_24:
            opts += ["-o", f"{_LOCATION_PARAMS_24[key]}={value}"]
        elif not eq and key in _LOCATION_FLAGS_24:
            opts += ["-o", f"{_LOCATION_FLAGS_24[key]}=yes"]
        else:
            raise ValueError(f"location parameter {param!r} has no 2.4 translation here")
    # Keeps Pigeonhole's ~/sieve/ out of the homes; unknown -o names are ignored (§3).
    return opts + ["-o", "sieve_enabled=no"]


def _command_index(args: list[str]) -> int:
    """Index of the doveadm command name in args, skipping global options."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in ("-f", "-o", "-c", "-i") else 1
    return i


def with_userdb_option(version: tuple[int, int, int], args: list[str]) -> list[str]:
    """Add ``--no-userdb-lookup`` where 2.4 needs it; 2.3 rejects it (notes §2, §6.3)."""
    i = _command_index(args)
    if not is_24(version) or i >= len(args) or args[i] in _NON_MAIL_COMMANDS:
        return list(args)
    if args[i] in ("sync", "backup", "dsync-server"):
        # sync/backup stop option parsing at the destination: put it right after the name.
        return [*args[: i + 1], "--no-userdb-lookup", *args[i + 1 :]]
    return [*args, "--no-userdb-lookup"]
