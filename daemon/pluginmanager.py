"""Build the plugin manager, and call hooks only for the plugins a policy enables.

There is no global manager; :func:`make_plugin_manager` is called by the composition root
(:mod:`audiopolicyd.app`) and by tools that parse policies offline (``audiopolicyctl policy
check``). Third-party plugins register under the entry-point group ``audiopolicyd.plugins``.

Which plugin is called for what (the rules of :mod:`audiopolicyd.hookspecs`):

* A plugin that declares a settings table (``register_policy_settings``) is **scoped**: a
  policy enables it by naming its table, ``[plugins.<table>]`` (possibly empty), and it is
  called only for the category concerned by a hook (the trigger's, the victim's, ...: each
  hookspec says which) when that category's policy enables it, with that policy's table as
  ``settings``. A scoped plugin no policy names is loaded but never called.
* A plugin that declares no table cannot be named by a policy: it is **global**, called for
  every category with empty ``settings`` (a site-wide classifier, say).
* A plugin declares at most one table: its table is how a policy names it.

A third-party plugin that declares the settings table of a built-in **replaces** it: the
built-in is unregistered (logged by name) and the policies that name the table enable the
third-party plugin instead (:func:`replace_builtins`).

Loading never stops at one bad plugin: entry points are loaded one by one, and after loading
:meth:`PluginManager.check_pending` blocks (by name, logged) any plugin implementing a hook that
does not exist, so a misspelt hook is an error you see rather than code that never runs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from typing import Any, Iterable, Mapping

import pluggy

from . import hookspecs
from .model import freeze
from .policy import Policy, PolicySet

logger = logging.getLogger(__name__)

PROJECT = "audiopolicyd"
ENTRY_POINT_GROUP = "audiopolicyd.plugins"

#: Built-in plugin modules, one behaviour each (see ``plugins/``); the shipped policies
#: enable them.
BUILTIN = ("audiopolicyd.plugins.record", "audiopolicyd.plugins.duck_others",
           "audiopolicyd.plugins.interrupt_spoken_audio", "audiopolicyd.plugins.mix_with_others",
           "audiopolicyd.plugins.ask_microphone_on_activation", "audiopolicyd.plugins.call_route",
           "audiopolicyd.plugins.pause_on_route_disconnect",
           "audiopolicyd.plugins.echo_cancel_for_chat")

#: The settings a global plugin gets.
NO_SETTINGS: Mapping[str, Any] = freeze({})
#: Marks a plugin whose ``register_policy_settings`` raised: it is never called (its table,
#: and so whether a policy enables it, is unknown).
_BROKEN = object()
#: Most (hook, policy) pairs whose enabled implementations are kept.
_MAX_KEPT = 256


class PluginManager(pluggy.PluginManager):
    """pluggy's plugin manager, which also knows each plugin's settings table.

    What plugins declare is read once and kept until a plugin is registered, unregistered or
    blocked.
    """

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self._declared: dict[str, Mapping[str, Mapping[str, Any]] | object] | None = None
        self._impls: dict[str, tuple[tuple[Any, Any], ...]] = {}
        self._enabled: dict[tuple[str, int], tuple[Policy, tuple[tuple[Any, Any], ...]]] = {}

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        self._forget()
        return super().register(plugin, name)

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        self._forget()
        return super().unregister(plugin, name)

    def _forget(self) -> None:
        self._declared = None
        self._impls = {}
        self._enabled = {}

    def declared(self) -> Mapping[str, Mapping[str, Mapping[str, Any]] | object]:
        """Plugin name -> the tables it declares (table -> JSON Schema), for every plugin that
        implements ``register_policy_settings``; a plugin whose implementation raised (logged)
        maps to a marker and is never called."""
        if self._declared is None:
            self._declared = {}
            for impl in reversed(self.hook.register_policy_settings.get_hookimpls()):
                try:
                    tables = impl.function()
                except Exception:
                    logger.exception("plugin %r raised in hook register_policy_settings; it is "
                                     "not called", impl.plugin_name)
                    self._declared[impl.plugin_name] = _BROKEN
                    continue
                self._declared[impl.plugin_name] = dict(tables or {})
        return self._declared

    def implementations(self, hook: str) -> tuple[tuple[Any, Any], ...]:
        """The implementations of ``hook`` in call order (``tryfirst`` first, then the last
        registered first), each with the table that enables it: a table name, None for a global
        plugin, or a marker for a plugin that is never called."""
        found = self._impls.get(hook)
        if found is None:
            declared = self.declared()
            out = []
            for impl in reversed(getattr(self.hook, hook).get_hookimpls()):
                tables = declared.get(impl.plugin_name)
                if tables is _BROKEN:
                    out.append((impl, _BROKEN))
                else:
                    out.append((impl, next(iter(sorted(tables)), None) if tables else None))
            found = self._impls[hook] = tuple(out)
        return found

    def enabled(self, hook: str, policy: Policy) -> tuple[tuple[Any, Mapping[str, Any]], ...]:
        """The implementations of ``hook`` that ``policy`` enables, in call order, each with
        its settings: the policy's table for a scoped plugin, empty ones for a global plugin.
        Kept per policy object (policies are immutable; a reload makes new ones)."""
        key = (hook, id(policy))
        hit = self._enabled.get(key)
        if hit is not None and hit[0] is policy:
            return hit[1]
        out = []
        for impl, table in self.implementations(hook):
            if table is None:
                out.append((impl, NO_SETTINGS))
            elif table is not _BROKEN and table in policy.plugins:
                out.append((impl, policy.plugins[table]))
        if len(self._enabled) >= _MAX_KEPT:
            self._enabled.clear()  # policy sets of past reloads
        self._enabled[key] = (policy, tuple(out))
        return self._enabled[key][1]

    def check_pending(self) -> None:
        """pluggy's check that every implementation has a hookspec, without stopping the
        daemon: each plugin implementing an unknown hook (a misspelt ``decide_interation``)
        is blocked by name and logged, and the others stay."""
        while True:
            try:
                super().check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.get_name(exc.plugin) or repr(exc.plugin)
                logger.error("plugin %r blocked: %s", name, exc)
                self.set_blocked(name)


def make_plugin_manager(load_entry_points: bool = True) -> PluginManager:
    """Create a plugin manager with the hookspecs, the built-ins and installed plugins.

    :param load_entry_points: also load third-party plugins from the ``audiopolicyd.plugins``
        entry-point group; a plugin that fails to import or to register is logged and left out
    :returns: the manager, checked (:meth:`PluginManager.check_pending`): a plugin with an
        unknown hook has been blocked and logged
    """
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN:
        pm.register(importlib.import_module(name), name=name.rsplit(".", 1)[-1])
    if load_entry_points:
        replace_builtins(pm, load_entry_point_plugins(pm))
    pm.check_pending()
    return pm


def replace_builtins(pm: PluginManager, names: Iterable[str]) -> list[str]:
    """Unregister each built-in whose settings table a plugin of ``names`` also declares.

    A third-party plugin replaces a built-in by declaring its table (``[plugins.call_route]``):
    the policies that name the table then enable the third-party plugin, and the built-in is
    never called. Two third-party plugins declaring one table remain an error
    (:func:`plugin_settings_schemas`).

    :param names: the names of the plugins loaded from entry points
    :returns: the names of the built-ins unregistered, each logged with its replacement
    """
    builtins = {name.rsplit(".", 1)[-1] for name in BUILTIN}
    declared = pm.declared()
    owner = {table: name for name in builtins for table in _tables(declared.get(name))}
    replaced = []
    for name in names:
        for table in _tables(declared.get(name)):
            builtin = owner.get(table)
            if builtin is not None and pm.get_plugin(builtin) is not None:
                pm.unregister(name=builtin)
                logger.info("plugin %r replaces the built-in plugin %r ([plugins.%s])", name,
                            builtin, table)
                replaced.append(builtin)
    return replaced


def _tables(declared: Any) -> tuple[str, ...]:
    """The tables of one plugin's :meth:`PluginManager.declared` entry (none when broken)."""
    return tuple(declared) if isinstance(declared, dict) else ()


def load_entry_point_plugins(pm: pluggy.PluginManager, group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Register every plugin of entry-point ``group``, each on its own.

    A plugin that fails to import or to register (a hook implementation that does not match
    its spec) is logged with its name and left out; the others load. A name already taken
    (a built-in's) or blocked is skipped with a warning. Unlike pluggy's
    ``load_setuptools_entrypoints``, which stops at the first failure.

    :returns: the names of the plugins registered
    """
    loaded = []
    for ep in importlib.metadata.entry_points(group=group):
        source = ep.dist.name if ep.dist is not None else "an unknown distribution"
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            logger.warning("plugin %r (%s) of %s not loaded: the name is taken or blocked",
                           ep.name, ep.value, source)
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


def _run(impl: Any, hook: str, kwargs: Mapping[str, Any]) -> Any:
    """One implementation, called with the arguments it takes; a raise is logged, None."""
    try:
        return impl.function(*(kwargs[arg] for arg in impl.argnames))
    except Exception:
        logger.exception("plugin %r raised in hook %s; skipped for this call",
                         impl.plugin_name, hook)
        return None


def call_hook(pm: pluggy.PluginManager, name: str, **kwargs: Any) -> Any:
    """Call hook ``name`` on every plugin, so that a raising implementation is logged and
    skipped (for hooks that concern no category: ``register_policy_settings``).

    Implementations run in pluggy's order (last registered first). For a ``firstresult`` hook
    the first non-None result is returned (None if there is none); otherwise the list of
    non-None results.
    """
    return _collect(pm, name, ((impl, kwargs)
                               for impl in reversed(getattr(pm.hook, name).get_hookimpls())))


def _collect(pm: pluggy.PluginManager, name: str,
             calls: Iterable[tuple[Any, Mapping[str, Any]]]) -> Any:
    """Run ``(implementation, arguments)`` pairs in order: the first non-None result of a
    ``firstresult`` hook, else the list of non-None results."""
    caller = getattr(pm.hook, name)
    firstresult = bool(caller.spec and caller.spec.opts.get("firstresult"))
    results = []
    for impl, kwargs in calls:
        result = _run(impl, name, kwargs)
        if result is not None:
            if firstresult:
                return result
            results.append(result)
    return None if firstresult else results


def call_for(pm: PluginManager, name: str, policy: Policy, /, **kwargs: Any) -> Any:
    """Call hook ``name`` on the plugins ``policy`` enables, each with its own ``settings``.

    Global plugins (no table) are called too, with empty settings. A raising implementation
    is logged and skipped. Order and results as :func:`call_hook`.

    :param policy: the policy of the category concerned (which one: see the hookspec)
    """
    enabled = pm.enabled(name, policy)
    if not enabled:  # the common case, on the decision's hot path: no generator, no dicts
        return _collect(pm, name, ())
    return _collect(pm, name, ((impl, {**kwargs, "settings": settings})
                               for impl, settings in enabled))


def classify_with_plugins(pm: PluginManager, stream: Any,
                          policies: PolicySet) -> tuple[str, str] | None:
    """The first non-None answer of ``classify_stream``, from the plugins some policy enables.

    A scoped plugin gets ``settings_by_category`` (each category whose policy names its table
    -> that table) and may put the stream only in one of those categories: another answer is
    ignored with a warning (the ``[[classify]]`` rules decide). A global plugin gets an empty
    mapping and may answer any category (the caller checks it exists and takes the stream's
    direction).
    """
    for impl, table in pm.implementations("classify_stream"):
        if table is _BROKEN:
            continue
        by_category = {} if table is None else {
            c: p.plugins[table] for c, p in policies.policies.items() if table in p.plugins}
        if table is not None and not by_category:
            continue  # no policy names it
        result = _run(impl, "classify_stream", {"stream": stream, "policies": policies,
                                                "settings_by_category": freeze(by_category)})
        if result is None:
            continue
        if table is not None and result[0] not in by_category:
            logger.warning("plugin %r classified %s as %r, whose policy does not enable it "
                           "([plugins.%s]); ignored", impl.plugin_name, stream.key, result[0],
                           table)
            return None
        return result
    return None


def unenabled_options(pm: PluginManager, policies: PolicySet) -> list[str]:
    """Options a policy lets sessions take that no plugin it enables acts on.

    Each plugin names its options (:func:`~audiopolicyd.hookspecs.register_session_options`)
    and is enabled by its table; an option of a policy's ``options`` that only plugins the
    policy does not enable act on is accepted and does nothing for that category.

    :returns: one line per such option and policy, ``file: options: <option> does nothing:
        ...``, sorted; empty when every such option has an enabled plugin
    """
    acting: dict[str, set[str | None]] = {}
    declared = pm.declared()
    for impl in pm.hook.register_session_options.get_hookimpls():
        try:
            options = impl.function() or ()
        except Exception:
            logger.exception("plugin %r raised in hook register_session_options; its options "
                             "are not checked", impl.plugin_name)
            continue
        tables = declared.get(impl.plugin_name)
        table = None if tables is _BROKEN or not tables else next(iter(sorted(tables)))
        for option in options:
            acting.setdefault(option, set()).add(table)
    out = []
    for policy in policies.policies.values():
        for option in sorted(policy.options & set(acting)):
            tables = acting[option]
            if None in tables or tables & set(policy.plugins):
                continue
            names = " or ".join(f"[plugins.{t}]" for t in sorted(t for t in tables if t))
            out.append(f"{policy.file}: options: {option} does nothing: the policy names no "
                       f"{names} table, which enables the plugin that acts on it")
    return sorted(out)


def plugin_settings_schemas(pm: PluginManager) -> Mapping[str, Mapping[str, Any]]:
    """Merge every plugin's :func:`~audiopolicyd.hookspecs.register_policy_settings`.

    :raises ValueError: when two plugins declare the same settings table, or one plugin
        declares several (a plugin's table is how a policy enables it)
    """
    merged: dict[str, Mapping[str, Any]] = {}
    for plugin, tables in pm.declared().items():
        if tables is _BROKEN:
            continue
        if len(tables) > 1:
            raise ValueError(f"plugin {plugin!r} declares several settings tables "
                             f"({', '.join(sorted(tables))}); a plugin has one")
        for table, schema in tables.items():
            if table in merged:
                raise ValueError(f"plugin settings table {table!r} is declared twice")
            merged[table] = schema
    return merged
