"""mail_location (2.3) and mail_driver/mail_path (2.4) parsing, expansion, driver registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydsync_server.errors import ExitCode, StorageError, UsageError
from pydsync_server.storage.location import (
    MailLocation,
    UserEnv,
    expand_vars,
    location_from_settings,
    open_storage,
    parse_location,
)
from pydsync_server.storage.maildir import MaildirStorage
from pydsync_server.storage.memory import MemoryStorage

ENV = UserEnv("jane@example.org", "/home/jane", {"MAILROOT": "/srv/mail"})


def test_driver_and_home_path() -> None:
    loc = parse_location("maildir:~/Maildir", ENV)
    assert loc == MailLocation("maildir", "/home/jane/Maildir")


def test_parameters_utf8_and_upper_casing() -> None:
    loc = parse_location("Maildir:~/M:layout=fs:INDEX=~/idx:CONTROL=/c:UTF-8", ENV)
    assert loc.driver == "maildir"
    assert loc.params == {"LAYOUT": "fs", "INDEX": "/home/jane/idx", "CONTROL": "/c"}
    assert loc.utf8


def test_double_colon_is_a_literal_colon() -> None:
    assert parse_location("maildir:/a::b:LAYOUT=fs", ENV).path == "/a:b"


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("%u", "jane@example.org"),
        ("%n", "jane"),
        ("%d", "example.org"),
        ("%h", "/home/jane"),
        ("%{user}/%{username}/%{domain}/%{home}", "jane@example.org/jane/example.org//home/jane"),
        ("%{env:MAILROOT}/%n", "/srv/mail/jane"),
        ("100%%", "100%"),
        # Dovecot 2.4 filters (the stock 2.4 dovecot.conf: /home/%{user | username}).
        ("/home/%{user | username}", "/home/jane"),
        ("%{user|domain}/%{user | username | upper}", "example.org/JANE"),
        ("%{env:MAILROOT | upper}", "/SRV/MAIL"),
    ],
)
def test_variables(text: str, expanded: str) -> None:
    assert expand_vars(text, ENV) == expanded


def test_variables_in_location() -> None:
    loc = parse_location("maildir:/var/vmail/%d/%n:INDEX=/idx/%u", ENV)
    assert loc.path == "/var/vmail/example.org/jane"
    assert loc.params["INDEX"] == "/idx/jane@example.org"


@pytest.mark.parametrize(
    "text",
    [
        "maildir",
        "/home/x/Maildir",
        "maildir:~/M:BOGUS=1",
        "maildir:%X",
        "mail dir:/x",
        "maildir:/x/%{user | nosuchfilter}",
    ],
)
def test_invalid_locations(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_location(text, ENV)
    assert info.value.exit_code == ExitCode.USAGE


def test_tilde_without_home_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="Home directory not set"):
        parse_location("maildir:~/Maildir", UserEnv("jane", None))


def test_relative_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_location("maildir:rel", ENV).path == str(tmp_path / "rel")


def test_24_settings_win_and_map_to_parameters() -> None:
    settings = {
        "mail_location": "maildir:/ignored",
        "mail_driver": "maildir",
        "mail_path": "~/Maildir",
        "mailbox_list_layout": "fs",
        "mail_index_path": "%h/idx",
        "mailbox_list_utf8": "yes",
    }
    loc = location_from_settings(settings, ENV)
    assert loc == MailLocation(
        "maildir", "/home/jane/Maildir", {"LAYOUT": "fs", "INDEX": "/home/jane/idx"}, True
    )


def test_24_mail_home_gives_tilde() -> None:
    settings = {"mail_driver": "maildir", "mail_path": "~/M", "mail_home": "/srv/%n"}
    assert location_from_settings(settings, ENV).path == "/srv/jane/M"


def test_24_driver_without_path() -> None:
    with pytest.raises(UsageError, match="mail_path"):
        location_from_settings({"mail_driver": "maildir"}, ENV)


def test_autodetect_finds_maildir(tmp_path: Path) -> None:
    (tmp_path / "Maildir").mkdir()
    env = UserEnv("jane", str(tmp_path))
    assert location_from_settings({}, env) == MailLocation("maildir", f"{tmp_path}/Maildir")


def test_autodetect_failure_is_a_tempfail(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="autodetection failed") as info:
        location_from_settings({}, UserEnv("jane", str(tmp_path)))
    assert info.value.exit_code == ExitCode.TEMPFAIL


def test_str_round_trips() -> None:
    loc = parse_location("maildir:/a::b:LAYOUT=fs:UTF-8", ENV)
    assert parse_location(str(loc), ENV) == loc


def test_open_maildir_and_memory(tmp_path: Path) -> None:
    maildir = open_storage(
        parse_location(f"maildir:{tmp_path}/M:LAYOUT=fs", ENV), clock=lambda: 1.0, hostname="h"
    )
    assert isinstance(maildir, MaildirStorage)
    assert maildir.names.layout == "fs"
    memory = open_storage(MailLocation("memory", ""), clock=lambda: 1.0, hostname="h")
    assert isinstance(memory, MemoryStorage)


def test_unknown_driver_and_unsupported_parameter(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Unknown mail storage driver mbox"):
        open_storage(MailLocation("mbox", str(tmp_path)), clock=lambda: 1.0, hostname="h")
    with pytest.raises(UsageError, match="INBOX"):
        location = MailLocation("maildir", str(tmp_path), {"INBOX": "/x"})
        open_storage(location, clock=lambda: 1.0, hostname="h")


def test_custom_driver_registry() -> None:
    store = MemoryStorage()
    opened = open_storage(
        MailLocation("shared", "/x"),
        clock=lambda: 1.0,
        hostname="h",
        drivers={"shared": lambda location, clock, hostname: store},
    )
    assert opened is store
