"""Plugins: pluggy hook specifications, the built-in plugins and a typed facade.

Plugins mark their functions with `hookimpl`; `manager.build_plugin_manager()` (called
from the CLI's `main()`, never at import time) registers the built-ins, entry points
of the group `pydsync` and the modules named in the `plugins` setting.
"""

from __future__ import annotations

import pluggy

PROJECT = "pydsync"
ENTRY_POINT_GROUP = "pydsync"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["ENTRY_POINT_GROUP", "PROJECT", "hookimpl", "hookspec"]
