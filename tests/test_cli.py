"""The command line: option parsing, settings, destinations, exit codes, end-to-end runs.

Output compared with the real doveadm lives in test_cli_doveadm.py.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from pydsync_server.brain.settings import SyncMode
from pydsync_server.cli.config import Config, load_config
from pydsync_server.cli.context import Context
from pydsync_server.cli.destination import (
    CommandDestination,
    LocalDestination,
    TcpDestination,
    classify,
    remote_cmd,
)
from pydsync_server.cli.main import main
from pydsync_server.cli.options import BACKUP_OPTIONS, FETCH_OPTIONS, SYNC_OPTIONS, getopt
from pydsync_server.cli.sync_options import build_settings, parse_date, parse_size
from pydsync_server.errors import ConfigError, DsyncError, UsageError
from pydsync_server.sample import materialise
from pydsync_server.storage.location import UserEnv

USER = UserEnv("jane", "/home/jane")


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    environ = {"USER": "jane", "HOME": "/nonexistent"} if env is None else env
    code = main(args, stdout=out, stderr=err, environ=environ)
    return code, out.getvalue(), err.getvalue()


# -- getopt ------------------------------------------------------------------------------


def test_options_stop_at_the_destination() -> None:
    args = ["-R", "-s", "", "ssh", "-p", "22", "host", "doveadm", "-c", "x"]
    parsed, operands = getopt("backup", args, BACKUP_OPTIONS, permute=False)
    assert parsed.flag("reverse") and parsed.value("state") == ""
    assert operands == ["ssh", "-p", "22", "host", "doveadm", "-c", "x"]


def test_clustered_attached_and_repeated_options() -> None:
    args = ["-fR1sSTATE", "-x", "Trash", "-xSpam", "--no-userdb-lookup", "--", "-dest"]
    parsed, operands = getopt("sync", args, SYNC_OPTIONS, permute=False)
    assert parsed.flag("full") and parsed.flag("reverse") and parsed.flag("oneway")
    assert parsed.value("state") == "STATE"
    assert parsed.values("exclude") == ["Trash", "Spam"]
    assert parsed.flag("no_userdb_lookup")
    assert operands == ["-dest"]


def test_inspection_commands_permute() -> None:
    parsed, operands = getopt(
        "fetch", ["uid", "-f", "tab", "all", "-u", "bob"], FETCH_OPTIONS, permute=True
    )
    assert parsed.value("formatter") == "tab" and parsed.value("user") == "bob"
    assert operands == ["uid", "all"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backup", "-Z", "maildir:/x"], "backup: invalid option -- 'Z'"),
        (["backup", "-s"], "backup: option requires an argument -- 's'"),
        (["backup", "--bogus", "x"], "backup: unrecognized option '--bogus'"),
        (["backup"], "backup: destination missing"),
        (["sync", "-R"], "sync: destination missing"),
        (["bogus"], "pydsync: Unknown command 'bogus'"),
        ([], "pydsync: No command given"),
        (["-Q", "backup"], "pydsync: invalid option -- 'Q'"),
        (["mailbox", "status", "all"], "mailbox status: fields and a mailbox are needed"),
        (["fetch", "uid"], "fetch: fields and a search query are needed"),
        (["dsync-server", "-E", "extra"], "Unexpected parameter: extra"),
    ],
)
def test_usage_errors_exit_64(args: list[str], message: str) -> None:
    code, out, err = run(args)
    assert code == 64
    assert out == b""
    assert err.splitlines()[0].endswith(message)


def test_usage_line_follows_a_getopt_error() -> None:
    _, _, err = run(["backup", "-Z", "x"])
    assert err.splitlines()[1].startswith("usage: pydsync backup [-RfPUNdEvA] [-l <secs>]")


@pytest.mark.parametrize(
    "command",
    [["dsync-server"], ["backup", "maildir:/x"], ["mailbox", "list"], ["fetch", "uid", "all"]],
)
def test_missing_user_exits_64(command: list[str]) -> None:
    code, out, err = run(["-o", "mail_location=memory:", *command], env={})
    assert (code, out) == (64, b"")
    assert err == "Error: USER environment is missing and -u option not used\n"


def test_u_option_replaces_user() -> None:
    code, out, _ = run(["-o", "mail_location=memory:", "fetch", "-u", "bob", "user", "all"], env={})
    assert (code, out) == (0, b"")


def test_unknown_driver_exits_64() -> None:
    code, _, err = run(["-o", "mail_location=nosuch:/x", "mailbox", "list"])
    assert code == 64
    assert err.startswith("Error: Unknown mail storage driver nosuch")


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        ([], ["Error: e"]),
        (["-v"], ["Info: i", "Error: e"]),
        (["-D"], ["Debug: d", "Info: i", "Error: e"]),
    ],
)
def test_log_levels(flags: list[str], shown: list[str]) -> None:
    err = io.StringIO()
    ctx = Context(Config(), {}, io.BytesIO(), err, debug="-D" in flags, verbose="-v" in flags)
    log = ctx.log_for("dsync(jane)")
    for line in ("Debug: d", "Info: i", "Error: e"):
        log(line)
    assert err.getvalue() == "".join(f"dsync(jane): {line}\n" for line in shown)


def test_version() -> None:
    code, out, _ = run(["--version"])
    assert code == 0 and out.startswith(b"pydsync ")


# -- config ------------------------------------------------------------------------------


def test_config_file_sections_includes_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-mail.conf").write_text("mail_location = maildir:~/Inc\n")
    (tmp_path / "dovecot.conf").write_text(
        "# comment\nmail_uid = vmail  # trailing comment\n"
        "namespace inbox {\n  separator = /\n  mailbox Trash {\n    special_use = \\Trash\n"
        '  }\n}\n!include conf.d/*.conf\ndsync_remote_cmd = "ssh %{host} x # y"\n'
    )
    config = load_config(str(tmp_path / "dovecot.conf"), ["mail_uid=other", "extra=a=b"])
    assert config.values == {
        "mail_uid": "other",
        "mail_location": "maildir:~/Inc",
        "dsync_remote_cmd": "ssh %{host} x # y",
        "extra": "a=b",
    }


@pytest.mark.parametrize("text", ["}\n", "a {\n", "no equals sign\n"])
def test_broken_config_exits_78(tmp_path: Path, text: str) -> None:
    (tmp_path / "c.conf").write_text(text)
    with pytest.raises(ConfigError):
        load_config(str(tmp_path / "c.conf"), [])
    code, _, _ = run(["-c", str(tmp_path / "c.conf"), "mailbox", "list"])
    assert code == 78


def test_bad_override_and_missing_file() -> None:
    with pytest.raises(UsageError):
        load_config(None, ["novalue"])
    assert run(["-c", "/nonexistent.conf", "mailbox", "list"])[0] == 78


def test_config_location_used_and_minus_o_ignores_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    materialise(home)
    (tmp_path / "c.conf").write_text(f"mail_location = maildir:{home}/Maildir\n")
    env = {"USER": "jane", "HOME": str(tmp_path)}
    code, out, _ = run(["-c", str(tmp_path / "c.conf"), "mailbox", "list", "Work"], env)
    assert (code, out) == (0, b"Work\n")
    code, _, err = run(["-O", "-c", str(tmp_path / "c.conf"), "mailbox", "list"], env)
    assert code == 75 and "autodetection failed" in err


# -- destinations and settings ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        (["ssh", "host", "doveadm"], ["ssh", "host", "doveadm", "dsync-server"]),
        (["ssh", "host", "dsync-server"], ["ssh", "host", "dsync-server"]),
        (["ssh host doveadm"], ["ssh", "host", "doveadm", "dsync-server"]),
        (["/usr/bin/pydsync"], ["/usr/bin/pydsync", "dsync-server"]),
        (["bob@mail"], ["ssh", "mail", "doveadm", "dsync-server", "-ubob", "-U"]),
        (["mail"], ["ssh", "mail", "doveadm", "dsync-server", "-U"]),
        (["remote:me@mail"], ["ssh", "-lme", "mail", "doveadm", "dsync-server", "-ujane", "-U"]),
    ],
)
def test_command_destinations(args: list[str], argv: list[str]) -> None:
    dest = classify(args, user=USER, user_given=False, settings={})
    assert dest == CommandDestination(argv)


def test_bare_host_uses_the_u_user_and_legacy_word() -> None:
    dest = classify(["mail"], user=USER, user_given=True, settings={})
    assert isinstance(dest, CommandDestination) and "-ujane" in dest.argv
    legacy = classify(["ssh", "h", "dsync"], user=USER, user_given=False, settings={}, legacy=True)
    assert legacy == CommandDestination(["ssh", "h", "dsync", "server"])


def test_scheme_destinations() -> None:
    prefix = classify(["remoteprefix:mail"], user=USER, user_given=False, settings={})
    assert isinstance(prefix, CommandDestination) and prefix.prefix_user == "jane"
    tcp = classify(["tcps:mail:4000"], user=USER, user_given=False, settings={})
    assert tcp == TcpDestination("mail", 4000, True)
    local = classify(["maildir:~/Backup:LAYOUT=fs"], user=USER, user_given=False, settings={})
    assert isinstance(local, LocalDestination)
    assert local.location.path == "/home/jane/Backup" and local.location.params["LAYOUT"] == "fs"


def test_remote_cmd_setting_and_dropped_words() -> None:
    settings = {"dsync_remote_cmd": "ssh -p22 -l%{login} %{host} pydsync dsync-server -u%u"}
    assert remote_cmd(settings, host="h", login="", user="") == [
        "ssh",
        "-p22",
        "h",
        "pydsync",
        "dsync-server",
    ]
    with pytest.raises(UsageError):
        remote_cmd({"dsync_remote_cmd": "ssh %{bogus}"}, host="h", login="", user="")


@pytest.mark.parametrize(
    ("command", "flags", "mode"),
    [
        ("backup", [], SyncMode.BACKUP),
        ("backup", ["-R"], SyncMode.BACKUP_REVERSE),
        ("sync", [], SyncMode.TWOWAY),
        ("sync", ["-R"], SyncMode.TWOWAY),
        ("sync", ["-1"], SyncMode.ONEWAY),
        ("sync", ["-1", "-R"], SyncMode.ONEWAY_REVERSE),
    ],
)
def test_sync_modes(command: str, flags: list[str], mode: SyncMode) -> None:
    table = SYNC_OPTIONS if command == "sync" else BACKUP_OPTIONS
    parsed, _ = getopt(command, flags, table, permute=False)
    settings = build_settings(parsed, command, {}, hostname="h", now=0, debug=False)
    assert settings.mode is mode


def test_every_option_reaches_the_settings() -> None:
    args = [
        "-f",
        "-P",
        "-N",
        "-s",
        "S",
        "-m",
        "INBOX",
        "-g",
        "A" * 32,
        "-n",
        "",
        "-x",
        "T*",
        "-x",
        "\\Junk",
        "-a",
        "All",
        "-l",
        "30",
        "-t",
        "1700000000",
        "-e",
        "2024-01-01",
        "-O",
        "-\\Seen",
        "-I",
        "10M",
    ]
    parsed, _ = getopt("sync", args, SYNC_OPTIONS, permute=False)
    config = {
        "dsync_hashed_headers": "Date,Message-ID X-Id",
        "dsync_alt_char": "+",
        "dsync_commit_msgs_interval": "7",
        "dsync_features": "empty-header-workaround",
    }
    s = build_settings(parsed, "sync", config, hostname="h", now=0, debug=True)
    assert (s.full_sync, s.purge_remote, s.visible_namespaces, s.debug) == (True,) * 4
    assert (s.state, s.mailbox, s.mailbox_guid) == ("S", "INBOX", "a" * 32)
    assert s.namespace_prefixes == ("",) and s.exclude == ("T*", "\\Junk")
    assert (s.virtual_all_box, s.lock_timeout, s.since) == ("All", 30, 1700000000)
    assert s.until == parse_date("2024-01-01", "-e", 0) and s.until > s.since
    assert (s.only_flag, s.max_size) == ("-\\Seen", 10 * 1024 * 1024)
    assert s.hashed_headers == ("Date", "Message-ID", "X-Id")
    assert (s.alt_char, s.commit_msgs_interval, s.empty_hdr_workaround) == ("+", 7, True)


def test_date_and_size_forms() -> None:
    assert parse_date("30d", "-t", 1_000_000) == 1_000_000 - 30 * 86400
    assert parse_date("2 weeks", "-t", 2_000_000) == 2_000_000 - 14 * 86400
    assert parse_date("1-Jan-2024", "-t", 0) == parse_date("2024-01-01", "-t", 0)
    assert parse_size("512") == 512 and parse_size("2k") == 2048 and parse_size("1GB") == 1 << 30
    with pytest.raises(DsyncError):
        parse_date("garbage", "-t", 0)


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (["-t", "garbage"], 75, "Invalid -t parameter: garbage"),
        (["-t", "2024-01-02", "-e", "2024-01-01"], 75, "start date is later than end date"),
        (["-O", "\\Bogus"], 75, "Invalid system flag given for -O parameter: '\\Bogus'"),
        (["-I", "10X"], 75, "Invalid -I parameter '10X'"),
        (["-g", "zz"], 75, "Invalid -g parameter: zz"),
        (["-N"], 75, "-N parameter requires syncing with remote host"),
        (["-T", "soon"], 64, "Invalid -T parameter: soon"),
        (["-d"], 64, "Don't give mail location with -d parameter"),
    ],
)
def test_invalid_values(tmp_path: Path, flags: list[str], code: int, message: str) -> None:
    args = ["-o", "mail_location=memory:", "backup", *flags, f"maildir:{tmp_path}/d"]
    got, out, err = run(args)
    assert (got, out) == (code, b"")
    assert err.startswith(f"Error: {message}")


def test_mail_replica_without_userdb_exits_68() -> None:
    code, _, err = run(["-o", "mail_location=memory:", "backup", "-d"])
    assert code == 68 and "mail_replica" in err


def test_tcp_destination_without_port_is_refused() -> None:
    code, _, err = run(["-o", "mail_location=memory:", "backup", "tcp:mail"])
    assert code == 64 and "doveadm_port" in err


def test_same_directory_is_refused(tmp_path: Path) -> None:
    code, _, err = run(
        ["-o", f"mail_location=maildir:{tmp_path}/M", "backup", f"maildir:{tmp_path}/M"]
    )
    assert code == 75 and "points to same directory" in err


# -- end to end --------------------------------------------------------------------------


def _fetch_all(env: dict[str, str], location: str) -> bytes:
    code, out, err = run(
        [
            "-o",
            f"mail_location={location}",
            "-f",
            "tab",
            "fetch",
            "mailbox uid guid flags text",
            "all",
        ],
        env,
    )
    assert code == 0, err
    return out


def test_local_backup_prints_state_and_copies(tmp_path: Path) -> None:
    materialise(tmp_path)
    env = {"USER": "jane", "HOME": str(tmp_path)}
    code, out, err = run(["backup", "-s", "", "maildir:~/Backup"], env)
    assert (code, err) == (0, "")
    assert out.endswith(b"\n") and out.count(b"\n") == 1 and len(out) > 10
    source = _fetch_all(env, "maildir:~/Maildir")
    assert source.count(b"\n") > 5
    assert _fetch_all(env, "maildir:~/Backup") == source
    code, again, _ = run(["backup", "-s", out.decode().strip(), "maildir:~/Backup"], env)
    assert code == 0 and again.endswith(b"\n")


def test_p_overrides_the_source_storage_only(tmp_path: Path) -> None:
    materialise(tmp_path)
    (tmp_path / "Maildir").rename(tmp_path / "Elsewhere")
    env = {"USER": "jane", "HOME": str(tmp_path)}
    code, _, err = run(["backup", "-p", "mail_location=maildir:~/Elsewhere", "maildir:~/Copy"], env)
    assert code == 0, err
    assert _fetch_all(env, "maildir:~/Copy") == _fetch_all(env, "maildir:~/Elsewhere")
    code, _, err = run(["backup", "-p", "no-equals-sign", "maildir:~/Copy"], env)
    assert code == 64 and "setting=value" in err


def test_command_destination_runs_our_dsync_server(tmp_path: Path) -> None:
    materialise(tmp_path)
    env = {"USER": "jane", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYDSYNC_CONFIG": ""}
    server = f"{sys.executable} -m pydsync_server -o mail_location=maildir:~/Copy"
    code, out, err = run(["sync", server], env)
    assert (code, out) == (0, b""), err
    assert _fetch_all(env, "maildir:~/Copy") == _fetch_all(env, "maildir:~/Maildir")


def test_dsync_server_writes_only_protocol_to_stdout(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pydsync_server",
            "-o",
            "mail_location=memory:",
            "dsync-server",
            "dsync-server",
        ],
        input=b"",
        capture_output=True,
        timeout=60,
        env={"USER": "jane", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYDSYNC_CONFIG": ""},
    )
    assert proc.stdout.startswith(b"VERSION\tdsync\t3\t5\n")
    assert proc.returncode == 75  # EOF before the master's handshake
    assert b"Traceback" not in proc.stderr
