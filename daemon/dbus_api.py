"""The D-Bus adapter: model <-> D-Bus types, errors -> named D-Bus errors. No logic.

Bus name ``io.github.audiopolicyd.AudioPolicy1``; the Manager lives at
``/io/github/audiopolicyd/AudioPolicy1`` with interface
``io.github.audiopolicyd.AudioPolicy1.Manager``. Errors are
``io.github.audiopolicyd.AudioPolicy1.Error.<Name>``. Every member is documented in
docs/dbus-api.md.

(No ``from __future__ import annotations`` here: dbus-fast reads D-Bus signatures from the
annotations at run time.)
"""

import functools
import logging
from typing import Any, Callable

from dbus_fast import DBusError, Variant
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method, signal

from . import __version__

logger = logging.getLogger(__name__)

BUS_NAME = "io.github.audiopolicyd.AudioPolicy1"
OBJECT_PATH = "/io/github/audiopolicyd/AudioPolicy1"
MANAGER_IFACE = BUS_NAME + ".Manager"
ERROR_PREFIX = BUS_NAME + ".Error."


def error(name: str, message: str) -> DBusError:
    """A named D-Bus error: ``io.github.audiopolicyd.AudioPolicy1.Error.<name>``."""
    return DBusError(ERROR_PREFIX + name, message)


def _guarded(func: Callable) -> Callable:
    """Turn any unexpected exception into a named ``Error.Internal``: never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DBusError:
            raise
        except Exception as exc:
            logger.exception("D-Bus method %s failed", func.__name__)
            raise error("Internal", f"{type(exc).__name__}: {exc}") from None

    return wrapper


def stream_dict(view) -> dict[str, Variant]:
    """A :class:`~audiopolicyd.reconciler.StreamView` as ``a{sv}``.

    Keys: Key s, Kind s, Index u, Application s, Role s, Category s, Rule s, Session s,
    Effect s, Gain d (linear), Muted b, Corked b, Paused b, Volume au (raw, 65536 = 100 %),
    Reasons as.
    """
    s, e = view.stream, view.effect
    return {
        "Key": Variant("s", s.key),
        "Kind": Variant("s", s.kind.value),
        "Index": Variant("u", s.index),
        "Application": Variant("s", s.app_name),
        "Role": Variant("s", s.properties.get("media.role", "")),
        "Category": Variant("s", view.category),
        "Rule": Variant("s", view.rule),
        "Session": Variant("s", view.session),
        "Effect": Variant("s", e.summary),
        "Gain": Variant("d", e.gain),
        "Muted": Variant("b", s.muted),
        "Corked": Variant("b", s.corked),
        "Paused": Variant("b", e.pause),
        "Volume": Variant("au", list(s.volume)),
        "Reasons": Variant("as", [str(r) for r in e.reasons]),
    }


class ManagerInterface(ServiceInterface):
    """``io.github.audiopolicyd.AudioPolicy1.Manager``: the daemon's read side and reload.

    :param daemon: the composition root (:class:`audiopolicyd.app.Daemon`): gives
        ``reconciler``, ``store``, ``status()`` and ``reload()``
    """

    def __init__(self, daemon: Any):
        super().__init__(MANAGER_IFACE)
        self._daemon = daemon

    @method(name="GetStreams")
    @_guarded
    def get_streams(self) -> "aa{sv}":
        return [stream_dict(v) for v in self._daemon.reconciler.views()]

    @method(name="GetStatus")
    @_guarded
    def get_status(self) -> "a{sv}":
        return {k: Variant(sig, v) for k, (sig, v) in self._daemon.status().items()}

    @method(name="Reload")
    @_guarded
    def reload(self) -> "(bas)":
        applied = self._daemon.reload("D-Bus Reload")
        return [applied, self._problems()]

    @dbus_property(access=PropertyAccess.READ, name="Version")
    def version(self) -> "s":
        return __version__

    @dbus_property(access=PropertyAccess.READ, name="PolicyProblems")
    def policy_problems(self) -> "as":
        return self._problems()

    @dbus_property(access=PropertyAccess.READ, name="ServerConnected")
    def server_connected(self) -> "b":
        return self._daemon.reconciler.connected.is_set()

    def _problems(self) -> list[str]:
        return [str(p) for p in self._daemon.store.problems]

    @signal(name="EffectsChanged")
    def effects_changed(self, streams) -> "aa{sv}":
        return streams

    @signal(name="StreamAdded")
    def stream_added(self, stream) -> "a{sv}":
        return stream

    @signal(name="StreamRemoved")
    def stream_removed(self, key) -> "s":
        return key

    @signal(name="PoliciesReloaded")
    def policies_reloaded(self, applied, problems) -> "bas":
        return [applied, problems]

    # -- hooks for the composition root -------------------------------------------------------

    def notify_effects(self, views) -> None:
        self.effects_changed([stream_dict(v) for v in views])

    def notify_streams(self, added, removed) -> None:
        for view in added:
            self.stream_added(stream_dict(view))
        for key in removed:
            self.stream_removed(key)

    def notify_server(self, connected: bool) -> None:
        self.emit_properties_changed({"ServerConnected": connected})

    def notify_reload(self, applied: bool) -> None:
        problems = self._problems()
        self.policies_reloaded(applied, problems)
        self.emit_properties_changed({"PolicyProblems": problems})
