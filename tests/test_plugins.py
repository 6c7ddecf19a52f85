"""The plugin manager, the typed facade, the built-in plugin and the hook wiring of
the CLI; meta-tests: every hook is documented in its spec and in pydsync-hooks(7)."""

from __future__ import annotations

import inspect
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

from pydsync_server.cli.hooked import PurgeWatch
from pydsync_server.cli.main import main
from pydsync_server.errors import ConfigError
from pydsync_server.plugins import hookimpl, hookspecs
from pydsync_server.plugins.facade import Hooks
from pydsync_server.plugins.manager import build_plugin_manager
from pydsync_server.protocol.items import Handshake, Item
from pydsync_server.storage.location import UserEnv, default_drivers
from pydsync_server.storage.memory import MemoryStorage

MAN = Path(__file__).resolve().parent.parent / "man" / "pydsync-hooks.7"
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("pydsync_"))


def hooks_with(*plugins: object) -> Hooks:
    pm = build_plugin_manager({}, entry_points=False)
    for plugin in plugins:
        pm.register(plugin)
    pm.check_pending()
    return Hooks(pm)


# -- meta ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_documents_its_params_and_firstresult(name: str) -> None:
    spec = getattr(hookspecs, name)
    doc = inspect.getdoc(spec) or ""
    for param in inspect.signature(spec).parameters:
        assert f":param {param}:" in doc, f"{name}: :param {param}: missing"
    firstresult = spec.pydsync_spec["firstresult"]
    assert ("Not firstresult" not in doc) == firstresult and "firstresult" in doc


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_in_the_man_page(name: str) -> None:
    text = MAN.read_text().replace("\\-", "-")
    params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f".B {name}({params})" in text


def test_every_hook_has_a_facade_method() -> None:
    assert all(callable(getattr(Hooks, n.removeprefix("pydsync_"))) for n in HOOKS)


def test_man_page_renders_without_warnings() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff is not installed (apt-get install groff-base)", pytrace=False)
    proc = subprocess.run(
        [groff, "-man", "-ww", "-z", "-Tutf8", str(MAN)], capture_output=True, text=True
    )
    assert (proc.returncode, proc.stderr) == (0, "")


# -- manager ---------------------------------------------------------------------------


def test_builtins_only() -> None:
    hooks = hooks_with()
    # the built-in registry, nothing more (maildir, memory and the dbox drivers)
    assert set(hooks.storage_drivers()) == set(default_drivers())
    assert {"maildir", "memory", "sdbox"} <= set(default_drivers())
    assert not hooks.has_userdb and not hooks.can_iterate_users
    assert hooks.userdb_lookup("ann", {}) is None


def test_plugins_setting_loads_modules_once() -> None:
    pm = build_plugin_manager({"plugins": "hooks.static, hooks.static hooks.kick"})
    assert pm.get_plugin("hooks.static") is not None and pm.get_plugin("hooks.kick") is not None
    assert Hooks(pm).has_userdb


def test_missing_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Couldn't load plugin no.such.module"):
        build_plugin_manager({"plugins": "no.such.module"})


def test_unknown_hook_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "badplug.py").write_text(
        "from pydsync_server.plugins import hookimpl\n"
        "@hookimpl\ndef pydsync_no_such_hook():\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="Invalid plugin"):
        build_plugin_manager({"plugins": "badplug"})
    sys.modules.pop("badplug", None)


def test_a_later_plugin_overrides_a_driver() -> None:
    class Drivers:
        @hookimpl
        def pydsync_storage_drivers(self) -> dict[str, object]:
            return {"maildir": "mine", "extra": "x"}

    drivers = hooks_with(Drivers()).storage_drivers()
    assert drivers["maildir"] == "mine" and "memory" in drivers and "extra" in drivers


def test_userdb_iterate_joins_lists_in_plugin_order() -> None:
    class First:
        @hookimpl
        def pydsync_userdb_iterate(self) -> list[str]:
            return ["a", "b"]

    class Second:
        @hookimpl
        def pydsync_userdb_iterate(self) -> list[str]:
            return ["b", "c"]

    assert hooks_with(First(), Second()).userdb_iterate({}) == ["a", "b", "c"]


class SpyStorage(MemoryStorage):
    purged = 0

    def purge(self) -> None:
        self.purged += 1


def test_builtin_purge_calls_storage_purge_unless_a_plugin_did() -> None:
    user, storage = UserEnv("ann", None), SpyStorage()
    hooks_with().purge(storage, user, {}, lambda _line: None)
    assert storage.purged == 1

    class Mine:
        called = False

        @hookimpl
        def pydsync_purge(self) -> bool:
            self.called = True
            return True

    mine = Mine()
    hooks_with(mine).purge(storage, user, {}, lambda _line: None)
    assert mine.called and storage.purged == 1


class ListChannel:
    def __init__(self, items: list[Item]) -> None:
        self.items = items

    peer_minor_version = 5

    def send(self, item: Item) -> None:
        pass

    def recv(self) -> Item:
        return self.items.pop(0)

    def flush(self) -> None:
        pass

    def close(self, *, send_done: bool) -> None:
        pass


def test_purge_watch_takes_the_request_out_of_the_handshake() -> None:
    watch = PurgeWatch(ListChannel([Handshake(hostname="h", purge_remote=True)]))
    item = watch.recv()
    assert isinstance(item, Handshake) and not item.purge_remote and watch.purge_requested
    plain = PurgeWatch(ListChannel([Handshake(hostname="h")]))
    plain.recv()
    assert not plain.purge_requested


# -- the CLI calls the hooks -------------------------------------------------------------

RECORDER = """
import json
from pydsync_server.plugins import hookimpl

def _write(settings, event):
    with open(settings["recorder_path"], "a") as f:
        f.write(json.dumps(event) + "\\n")

@hookimpl
def pydsync_before_sync(command, user, settings):
    _write(settings, ["before", command, user.user])

@hookimpl
def pydsync_after_sync(command, user, settings, result, seconds):
    _write(settings, ["after", command, user.user, int(result.exit_code), result.errors])

@hookimpl
def pydsync_kick(user, settings, log):
    _write(settings, ["kick", user.user])

@hookimpl
def pydsync_purge(storage, user, settings, log):
    _write(settings, ["purge", user.user])
    return True
"""


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "recorder_plugin.py").write_text(RECORDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "events"
    sys.modules.pop("recorder_plugin", None)


def events(path: Path) -> list[list[object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(args: list[str], environ: dict[str, str]) -> tuple[int, str]:
    err = io.StringIO()
    code = main(["-O", *args], stdout=io.BytesIO(), stderr=err, environ=environ)
    return code, err.getvalue()


def test_backup_calls_before_after_kick_and_purge(recorder: Path, tmp_path: Path) -> None:
    env = {"USER": "ann", "HOME": str(tmp_path)}
    args = ["-o", "plugins=recorder_plugin", "-o", f"recorder_path={recorder}"]
    args += ["-o", f"mail_location=maildir:{tmp_path}/src", "backup", "-P"]
    code, err = run([*args, f"maildir:{tmp_path}/dst"], env)
    assert (code, err) == (0, "")
    assert events(recorder) == [
        ["before", "backup", "ann"],
        ["purge", "ann"],
        ["after", "backup", "ann", 0, []],
        ["kick", "ann"],
    ]


def test_failed_session_still_calls_after_sync(recorder: Path, tmp_path: Path) -> None:
    env = {"USER": "ann", "HOME": str(tmp_path)}
    args = ["-o", "plugins=recorder_plugin", "-o", f"recorder_path={recorder}"]
    args += ["-o", "mail_location=nodriver:/x", "backup", f"maildir:{tmp_path}/dst"]
    code, _ = run(args, env)
    assert code == 64
    assert events(recorder) == [
        ["before", "backup", "ann"],
        ["after", "backup", "ann", 64, [events(recorder)[1][4][0]]],
    ]
    assert "nodriver" in str(events(recorder)[1][4][0])


def test_a_plugin_driver_opens_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "driverplug.py").write_text(
        "from pydsync_server.plugins import hookimpl\n"
        "from pydsync_server.storage.memory import MemoryStorage\n"
        "@hookimpl\ndef pydsync_storage_drivers():\n"
        "    return {'scratch': lambda location, clock, hostname: MemoryStorage(clock=clock)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {"USER": "ann", "HOME": str(tmp_path)}
    args = ["-o", "plugins=driverplug", "-o", "mail_location=scratch:/nowhere"]
    code, err = run([*args, "backup", f"maildir:{tmp_path}/dst"], env)
    sys.modules.pop("driverplug", None)
    assert (code, err) == (0, "")
    assert (tmp_path / "dst").is_dir()


def test_pluggy_manager_is_not_module_state() -> None:
    assert not any(isinstance(v, pluggy.PluginManager) for v in vars(hookspecs).values())


def test_entry_point_declarations_are_found_without_importlib_metadata(tmp_path: Path) -> None:
    from pydsync_server.plugins.manager import declares_entry_points

    plain = tmp_path / "site"
    (plain / "other-1.0.dist-info").mkdir(parents=True)
    (plain / "other-1.0.dist-info" / "entry_points.txt").write_text("[console_scripts]\nx = y\n")
    (plain / "broken.egg-info").write_text("an old single-file egg-info")
    assert not declares_entry_points([str(plain), str(tmp_path / "missing")], "pydsync")
    plugin = tmp_path / "plugin-site" / "myplugin-2.0.dist-info"
    plugin.mkdir(parents=True)
    (plugin / "entry_points.txt").write_text("[pydsync]\nmine = myplugin\n")
    assert declares_entry_points([str(plain), str(plugin.parent)], "pydsync")
    zipped = tmp_path / "eggs.zip"
    zipped.write_bytes(b"PK")
    assert declares_entry_points([str(zipped)], "pydsync")  # importlib.metadata decides
