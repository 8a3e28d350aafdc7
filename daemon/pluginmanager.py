"""Build the plugin manager: the built-in plugins, then third-party ones from entry points.

There is no global manager; :func:`make_plugin_manager` is called by the composition root
(:mod:`audiopolicyd.app`) and by tools that parse policies offline (``audiopolicyctl policy
check``). Third-party plugins register under the entry-point group ``audiopolicyd.plugins``.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Mapping

import pluggy

from . import hookspecs

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "audiopolicyd.plugins"

#: Built-in plugin modules, one behaviour each (see ``plugins/``).
BUILTIN = ("audiopolicyd.plugins.record",)


def make_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """Create a plugin manager with the hookspecs, the built-ins and installed plugins.

    :param load_entry_points: also load third-party plugins from the ``audiopolicyd.plugins``
        entry-point group; a plugin that fails to import is logged and left out
    """
    pm = pluggy.PluginManager("audiopolicyd")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN:
        pm.register(importlib.import_module(name), name=name.rsplit(".", 1)[-1])
    if load_entry_points:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception:
            logger.exception("a third-party plugin in %r failed to load; continuing without it",
                             ENTRY_POINT_GROUP)
    return pm


def call_hook(pm: pluggy.PluginManager, name: str, **kwargs: Any) -> Any:
    """Call hook ``name`` so that a raising implementation is logged and skipped.

    Implementations run in pluggy's order (last registered first). For a ``firstresult`` hook
    the first non-None result is returned (None if there is none); otherwise the list of
    non-None results.
    """
    caller = getattr(pm.hook, name)
    firstresult = bool(caller.spec and caller.spec.opts.get("firstresult"))
    results = []
    for impl in reversed(caller.get_hookimpls()):
        try:
            result = impl.function(*(kwargs[arg] for arg in impl.argnames))
        except Exception:
            logger.exception("plugin %r raised in hook %s; skipped for this call",
                             impl.plugin_name, name)
            continue
        if result is not None:
            if firstresult:
                return result
            results.append(result)
    return None if firstresult else results


def plugin_settings_schemas(pm: pluggy.PluginManager) -> Mapping[str, Mapping[str, Any]]:
    """Merge every plugin's :func:`~audiopolicyd.hookspecs.register_policy_settings`.

    :raises ValueError: when two plugins declare the same settings table
    """
    merged: dict[str, Mapping[str, Any]] = {}
    for declared in call_hook(pm, "register_policy_settings"):
        for table, schema in declared.items():
            if table in merged:
                raise ValueError(f"plugin settings table {table!r} is declared twice")
            merged[table] = schema
    return merged
