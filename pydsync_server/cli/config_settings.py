"""The one table of settings pydsync knows: defaults (Dovecot 2.3.19's `doveconf -d`),
what each does here, and the keys of the sections it interprets.

Settings pydsync reads are `USED`; `ACCEPTED` are common Dovecot settings (the ones the
test harness and Debian's stock dovecot.conf write) that parse without a warning and do
nothing here. man/pydsync.conf.5 documents both lists; tests/test_config.py checks it.
"""

from __future__ import annotations

from typing import NamedTuple

from ..storage.location import SETTINGS_24


class Known(NamedTuple):
    """One setting: its default as doveconf prints it, and whether -P is needed to show it.

    Table rows are NamedTuples, not dataclasses: a tenth of the class-creation cost,
    which every run pays at start-up."""

    default: str
    secret: bool = False


DEFAULT_REMOTE_CMD = "ssh -l%{login} %{host} doveadm dsync-server -u%u -U"

USED: dict[str, Known] = {
    "mail_location": Known(""),
    "mail_driver": Known(""),
    "mail_path": Known(""),
    "mail_home": Known(""),
    "mail_uid": Known(""),
    "mail_gid": Known(""),
    "mailbox_list_utf8": Known("no"),
    "dsync_remote_cmd": Known(DEFAULT_REMOTE_CMD),
    "dsync_alt_char": Known("_"),
    "dsync_hashed_headers": Known("Date Message-ID"),
    "dsync_commit_msgs_interval": Known("100"),
    "dsync_features": Known(""),
    "doveadm_port": Known("0"),
    "doveadm_password": Known("", secret=True),
    "doveadm_username": Known("doveadm"),
    "base_dir": Known("/run/dovecot"),
    "mail_plugins": Known(""),
    "import_environment": Known("TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID LISTEN_FDS NOTIFY_SOCKET"),
    "instance_name": Known("dovecot"),
    "state_dir": Known("/var/lib/dovecot"),
} | {name: Known("") for name in SETTINGS_24}

ACCEPTED: dict[str, Known] = {
    "dovecot_config_version": Known(""),
    "dovecot_storage_version": Known(""),
    "first_valid_uid": Known("500"),
    "last_valid_uid": Known("0"),
    "first_valid_gid": Known("1"),
    "last_valid_gid": Known("0"),
    "mail_privileged_group": Known(""),
    "mail_access_groups": Known(""),
    "mail_attribute_dict": Known(""),
    "mdbox_rotate_size": Known("10M"),
    "mailbox_list_index": Known("yes"),
    "mailbox_list_index_prefix": Known(""),
    "mailbox_list_drop_noselect": Known(""),
    "mailbox_list_iter_from_index_dir": Known(""),
    "mail_fsync": Known("optimized"),
    "mail_debug": Known("no"),
    "mail_nfs_storage": Known("no"),
    "mail_nfs_index": Known("no"),
    "mmap_disable": Known("no"),
    "lock_method": Known("fcntl"),
    "mail_max_userip_connections": Known("10"),
    "sieve_enabled": Known(""),
    "protocols": Known(""),
    "listen": Known("*, ::"),
    "hostname": Known(""),
    "postmaster_address": Known("postmaster@%{if;%d;ne;;%d;%{hostname}}"),
    "recipient_delimiter": Known("+"),
    "lda_mailbox_autocreate": Known("no"),
    "login_greeting": Known("Dovecot (Debian) ready."),
    "auth_mechanisms": Known("plain"),
    "auth_username_format": Known("%Lu"),
    "auth_debug": Known("no"),
    "disable_plaintext_auth": Known("yes"),
    "log_path": Known("syslog"),
    "info_log_path": Known(""),
    "debug_log_path": Known(""),
    "syslog_facility": Known("mail"),
    "verbose_proctitle": Known("no"),
    "ssl": Known("yes"),
    "ssl_cert": Known(""),
    "ssl_key": Known("", secret=True),
    "ssl_dh": Known("", secret=True),
    "ssl_client_ca_dir": Known(""),
    "ssl_min_protocol": Known("TLSv1.2"),
}

KNOWN: dict[str, Known] = USED | ACCEPTED

# Keys of `namespace NAME { ... }` (2.3's namespace settings) and their defaults.
NAMESPACE_KEYS: dict[str, str] = {
    "type": "private",
    "separator": "",
    "prefix": "",
    "location": "",
    "inbox": "no",
    "hidden": "no",
    "list": "yes",
    "subscriptions": "yes",
    "ignore_on_failure": "no",
    "disabled": "no",
    "order": "0",
    "alias_for": "",
}
# doveconf -n shows these for every namespace, even unset (seen with 2.3.19).
NAMESPACE_ALWAYS = ("location", "prefix")
MAILBOX_KEYS: dict[str, str] = {
    "auto": "no",
    "special_use": "",
    "autoexpunge": "0",
    "autoexpunge_max_mails": "0",
    "comment": "",
    "driver": "",
}

# Filters: their settings are ordinary settings that apply only in a context; pydsync
# applies `protocol doveadm { }` (it is doveadm) and ignores the others.
FILTERS = frozenset({"protocol", "local", "remote"})
# Sections kept and printed but not interpreted (their keys are never checked).
OPAQUE = frozenset(
    {"plugin", "service", "userdb", "passdb", "dict", "mail_attribute", "auth_policy"}
)
# Sections that may appear several times without a name and stay separate.
LISTS = frozenset({"userdb", "passdb"})


def default(key: str) -> str:
    known = KNOWN.get(key)
    return known.default if known is not None else ""


def is_secret(key: str) -> bool:
    known = KNOWN.get(key)
    return known is not None and known.secret
