"""dovecot.conf syntax (cli/config_parser.py), unknown-name warnings, -c/-O/-o/-i/-k,
and `pydsync config -n` against real `doveconf -n` (Dovecot 2.3.19 or 2.4)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from dovecot import dovecot_version
from dovecot_config import config_text, is_24

from pydsync_server.cli.config import (
    child_environment,
    config_path,
    instance_config,
    load_config,
)
from pydsync_server.cli.main import main
from pydsync_server.errors import ConfigError

MAN = Path(__file__).resolve().parent.parent / "man"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def warnings(path: str, overrides: list[str] | None = None) -> list[str]:
    found: list[str] = []
    load_config(path, overrides or [], warn=found.append)
    return found


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = main(args, stdout=out, stderr=err, environ={"USER": "jane", "HOME": "/nonexistent"})
    return code, out.getvalue().decode(), err.getvalue()


def test_values_quotes_comments_continuation_and_variables(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "c.conf",
        "mail_plugins = quota\n"
        "mail_plugins = $mail_plugins acl   # a comment\n"
        'mail_location = "maildir:~/M # not a comment"\n'
        "dsync_features = 'empty-header-workaround'\n"
        "dsync_remote_cmd = ssh \\\n  %{host} doveadm\n"
        "base_dir = /b\nmail_home = $base_dir/h $base_dir\n",
    )
    values = load_config(conf, []).values
    assert values["mail_plugins"] == "quota acl"
    assert values["mail_location"] == "maildir:~/M # not a comment"
    assert values["dsync_features"] == "empty-header-workaround"
    assert values["dsync_remote_cmd"] == "ssh   %{host} doveadm"
    assert values["mail_home"] == "$base_dir/h /b"  # whole words only


def test_file_value_read_for_used_settings_only(tmp_path: Path) -> None:
    write(tmp_path / "secret", "s3cret\n")
    conf = write(tmp_path / "c.conf", "doveadm_password = <secret\nssl_cert = </no/such\n")
    values = load_config(conf, []).values
    assert values["doveadm_password"] == "s3cret"
    assert values["ssl_cert"] == "</no/such"


def test_includes_are_relative_and_globbed(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    write(tmp_path / "conf.d" / "10-a.conf", "mail_uid = a\n")
    write(tmp_path / "conf.d" / "20-b.conf", "mail_uid = b\nplugin {\n  quota = x\n}\n")
    conf = write(
        tmp_path / "c.conf",
        "!include conf.d/*.conf\n!include_try nothing/*.conf\n!include_try missing.conf\n",
    )
    config = load_config(conf, [])
    assert config.values["mail_uid"] == "b"
    assert config.as_mapping()["plugin/quota"] == "x"


def test_sections_namespaces_filters_and_overrides(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "c.conf",
        "namespace inbox {\n  inbox = yes\n  prefix = INBOX/\n  separator = /\n"
        '  mailbox "Sent Messages" {\n    special_use = \\Sent\n  }\n}\n'
        "protocol doveadm {\n  mail_uid = doveadm-uid\n}\nprotocol imap {\n  mail_gid = g\n}\n"
        "service doveadm {\n  inet_listener {\n    port = 2\n  }\n}\n"
        "passdb {\n  driver = static\n}\nuserdb {\n  driver = static\n}\n",
    )
    config = load_config(conf, ["namespace/inbox/prefix=Mail/", "mail_gid=o"])
    assert config.values == {"mail_uid": "doveadm-uid", "mail_gid": "o"}
    inbox = config.inbox_namespace()
    assert inbox is not None and inbox["prefix"] == "Mail/" and inbox["separator"] == "/"
    assert config.as_mapping()["namespace/inbox/separator"] == "/"
    assert [s.kind for s in config.tree.sections()][-2:] == ["passdb", "userdb"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("mail_uid = 1\n}\n", 2, "Unexpected '}'"),
        ("a = 1\nnamespace x {\n  prefix = y\n", 2, "Missing '}'"),
        ("\n\nno equals sign\n", 3, "Expecting '='"),
        ("!include nothing.conf\n", 1, "No matches"),
        ("!frobnicate x\n", 1, "Unknown command"),
        ("doveadm_password = <no/such/file\n", 1, "Can't read"),
    ],
)
def test_syntax_errors_name_file_and_line_and_exit_78(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    conf = write(tmp_path / "c.conf", text)
    with pytest.raises(ConfigError, match=f"line {line}: {message}"):
        load_config(conf, [])
    code, _, err = run(["-c", conf, "config"])
    assert code == 78 and err.startswith(f"Error: {conf} line {line}: {message}")


def test_unknown_settings_warn_with_place(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "c.conf",
        "mail_uid = 1\nfrobnicate = 2\nnamespace i {\n  prefx = 3\n}\n"
        "plugin {\n  anything = 4\n}\nwidget {\n}\nprotocol imap {\n  bogus = 5\n}\n",
    )
    assert warnings(conf) == [
        f"Warning: Unknown setting: frobnicate ({conf}:2)",
        f"Warning: Unknown setting: namespace/prefx ({conf}:4)",
        f"Warning: Unknown section: widget ({conf}:9)",
        f"Warning: Unknown setting: bogus ({conf}:12)",
    ]
    code, _, err = run(["-c", conf, "config", "-n"])
    assert code == 0 and err.count("Warning: Unknown") == 4


@pytest.mark.parametrize("version", [(2, 3, 19), (2, 4, 1)])
def test_harness_configs_parse_cleanly(tmp_path: Path, version: tuple[int, int, int]) -> None:
    conf = write(tmp_path / "dovecot.conf", config_text(version, attributes=True))
    assert warnings(conf) == []


def test_minus_o_wins_and_minus_capital_o_reads_nothing(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.conf", "mail_uid = file\n")
    code, out, _ = run(["-c", conf, "-o", "mail_uid=option", "config", "mail_uid"])
    assert (code, out) == (0, "mail_uid = option\n")
    code, out, _ = run(["-O", "-c", conf, "config", "mail_uid"])
    assert (code, out) == (0, "mail_uid = \n")


def test_default_paths_and_instances(tmp_path: Path) -> None:
    first, second = tmp_path / "first.conf", write(tmp_path / "second.conf", "")
    assert config_path(None, no_config=False, instance=None, candidates=[str(first), second]) == (
        second
    )
    assert config_path("x", no_config=True, instance=None, candidates=[second]) is None
    assert config_path(None, no_config=False, instance=None, candidates=[str(first)]) is None
    base = tmp_path / "run"
    base.mkdir()
    (base / "dovecot.conf").symlink_to(second)
    instances = write(tmp_path / "instances", f"1700000000\tmain\t{base}\t\n")
    assert instance_config("main", instances) == second
    with pytest.raises(ConfigError, match="Unknown instance name: other"):
        instance_config("other", instances)


def test_child_environment_is_clean_unless_keep() -> None:
    env = {"PATH": "/bin", "HOME": "/h", "TZ": "UTC", "SECRET": "x", "LANG": "C"}
    assert child_environment(env, {}, keep=False) == {"PATH": "/bin", "HOME": "/h", "TZ": "UTC"}
    settings = {"import_environment": "LANG FOO=bar"}
    assert child_environment(env, settings, keep=False) == {
        "PATH": "/bin",
        "HOME": "/h",
        "LANG": "C",
        "FOO": "bar",
    }
    assert child_environment(env, {}, keep=True) == env


def test_unknown_setting_on_command_line(tmp_path: Path) -> None:
    code, _, err = run(["-O", "config", "no_such_setting"])
    assert code == 78 and "Unknown setting: no_such_setting" in err


def test_dovecot_config_version_printed_first(tmp_path: Path) -> None:
    # 2.4 requires it as the first setting, and doveconf 2.4 -n prints it first.
    conf = write(tmp_path / "c.conf", "dovecot_config_version = 2.4.0\ndoveadm_port = 1\n")
    code, out, _ = run(["-c", conf, "config", "-n"])
    assert code == 0
    assert out.splitlines()[1:] == ["dovecot_config_version = 2.4.0", "doveadm_port = 1"]


def test_secrets_hidden_without_minus_p(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.conf", "doveadm_password = pw\n")
    assert run(["-c", conf, "config", "-n", "doveadm_password"])[1] == (
        "doveadm_password = # hidden, use -P to show it\n"
    )
    assert run(["-c", conf, "config", "-P", "doveadm_password"])[1] == "doveadm_password = pw\n"


DOVECONF_SAMPLE = """\
mail_location = maildir:~/Maildir
mail_uid = vmail
first_valid_uid = 0
dsync_features =
namespace inbox {
  inbox = yes
  separator = /
  mailbox "Sent Messages" {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
  }
}
namespace shared {
  prefix = "shared/ "
  type = shared
}
plugin {
  quota = maildir
  foo_bar = "x y"
}
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
service doveadm {
  inet_listener {
    port = 12345
  }
}
mail_attribute_dict = "file:%h/attrs # x"
"""


# The same kinds of entries in 2.4 syntax (2.4 refuses the sample above, exit 89: it wants
# dovecot_config_version first, and has no mail_location or plugin section; notes §1).
DOVECONF_SAMPLE_24 = """\
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
mail_driver = maildir
mail_path = "~/Mail dir # not a comment"   # a comment
mail_uid = vmail
first_valid_uid = 0
first_valid_gid = 0 \t
dsync_features =
doveadm_password = secret
namespace inbox {
  inbox = yes
  separator = /
  mailbox "Sent Messages" {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
  }
}
namespace shared {
  prefix = "shared/ "
  type = shared
}
protocol imap {
  mail_plugins = quota imap_quota
}
service doveadm {
  inet_listener doveadm {
    port = 12345
  }
}
mail_attribute {
  dict file {
    path = "%{home}/attrs # x"
  }
}
"""


def _body(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def _entries(text: str) -> list[tuple[str, str, str]]:
    """(enclosing sections, key, unquoted value) of every setting line of a -n listing."""
    out: list[tuple[str, str, str]] = []
    stack: list[str] = []
    for line in _body(text):
        item = line.strip()
        if item.endswith("{"):
            stack.append(item[:-1].strip())
        elif item == "}":
            stack.pop()
        else:
            key, _, value = item.partition(" =")
            value = value.removeprefix(" ")
            if len(value) > 1 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            out.append(("/".join(stack), key, value))
    return sorted(out)


def test_config_minus_n_matches_doveconf(tmp_path: Path) -> None:
    doveconf = shutil.which("doveconf")
    if doveconf is None:
        pytest.fail("doveconf is not installed (apt-get install dovecot-core)", pytrace=False)
    v24 = is_24(dovecot_version())
    conf = write(tmp_path / "c.conf", DOVECONF_SAMPLE_24 if v24 else DOVECONF_SAMPLE)
    real = subprocess.run(
        [doveconf, "-n", "-c", conf], capture_output=True, text=True, timeout=30, check=True
    )
    code, ours, err = run(["-c", conf, "config", "-n"])
    assert code == 0 and err == ""
    if not v24:
        assert _body(ours) == _body(real.stdout)
        return

    # pydsync prints doveconf 2.3's layout. 2.4 lists the root settings first (as here) and
    # the sections after them in file order, quotes values holding a backslash, and no
    # longer prints a namespace's empty location and prefix: compare the settings read.
    def roots(text: str) -> list[str]:
        return [line for line in _body(text) if " = " in line and not line.startswith(" ")]

    assert roots(ours) == roots(real.stdout)
    always_23 = {("location", ""), ("prefix", "")}
    read = [e for e in _entries(ours) if not (e[0].startswith("namespace") and e[1:] in always_23)]
    assert read == _entries(real.stdout)


def test_man_page_documents_every_setting_and_renders() -> None:
    from pydsync_server.cli.config_settings import KNOWN

    text = (MAN / "pydsync.conf.5").read_text()
    missing = [k for k in KNOWN if k.replace("_", "\\_") not in text and k not in text]
    assert missing == []
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff is not installed (apt-get install groff-base)", pytrace=False)
    proc = subprocess.run(
        [groff, "-man", "-ww", "-z", "-Tutf8", str(MAN / "pydsync.conf.5")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
