"""Build the plugin manager for one run: the hook specifications, the built-in
plugins, the `pydsync` entry points, then the modules the `plugins` setting names.

Called from the CLI's `main()` and passed down; there is no module-level manager.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import pluggy

from ..errors import ConfigError
from . import ENTRY_POINT_GROUP, PROJECT, builtin, hookspecs
from .userdb import split_list

PLUGINS_SETTING = "plugins"


def build_plugin_manager(
    settings: Mapping[str, str], *, entry_points: bool = True
) -> pluggy.PluginManager:
    """A manager with every plugin of this run registered and checked.

    `entry_points=False` skips installed `pydsync` entry points (tests use it for a
    manager that depends only on what they give). A module that does not import, or
    a hook implementation no spec knows, is a configuration error (exit 78).
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="pydsync.builtin")
    if entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for name in split_list(settings.get(PLUGINS_SETTING, "")):
        if pm.get_plugin(name) is None:
            pm.register(_import(name), name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"Invalid plugin: {exc}") from exc
    return pm


def _import(name: str) -> object:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"Couldn't load plugin {name}: {exc}") from exc
