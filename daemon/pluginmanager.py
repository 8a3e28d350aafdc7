"""Build the plugin manager: the built-in plugins, then third-party ones from entry points.

There is no global manager; :func:`make_plugin_manager` is called by the composition root
(:mod:`audiopolicyd.app`) and by tools that parse policies offline (``audiopolicyctl policy
check``). Third-party plugins register under the entry-point group ``audiopolicyd.plugins``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
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
        load_entry_point_plugins(pm)
    return pm


def load_entry_point_plugins(pm: pluggy.PluginManager, group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Register every plugin of entry-point ``group``, each on its own.

    A plugin that fails to import or to register (a hook implementation that does not match
    its spec) is logged with its name and left out; the others load. A name already taken
    (a built-in's) is skipped with a warning. Unlike pluggy's ``load_setuptools_entrypoints``,
    which stops at the first failure.

    :returns: the names of the plugins registered
    """
    loaded = []
    for ep in importlib.metadata.entry_points(group=group):
        source = ep.dist.name if ep.dist is not None else "an unknown distribution"
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            logger.warning("plugin %r (%s) of %s not loaded: the name is taken", ep.name,
                           ep.value, source)
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception:
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)  # pluggy registers the name before checking hooks
            logger.exception("plugin %r (%s) of %s failed to load; continuing without it",
                             ep.name, ep.value, source)
            continue
        logger.info("plugin %r (%s) of %s loaded", ep.name, ep.value, source)
        loaded.append(ep.name)
    return loaded


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
