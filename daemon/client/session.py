"""An app's audio session: :class:`AudioSession` (AVAudioSession), its events and their
stream. See :mod:`audiopolicyd.client` for the guide."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

from dbus_fast import Message, MessageType, Variant

from ..buswriter import MessageBus
from ..errors import AudioPolicyError, NoSuchSession
from ..names import (
    BUS_DAEMON, BUS_NAME, MANAGER_IFACE, OBJECT_PATH, PROPERTIES_IFACE, SESSION_IFACE,
)
from .bus import add_match, call, connect, plain
from .routes import RouteMethods

logger = logging.getLogger(__name__)

#: Events a session delivers (``on`` and ``events``): the D-Bus signals of the Session
#: interface, ``PropertiesChanged`` and ``SessionLost`` (the daemon left the bus).
EVENTS = (
    "InterruptionBegan",  # {"reason": s, "interrupter": s, "interrupter_category": s}
    "InterruptionEnded",  # {"should_resume": b, "options": [s], "duration_ms": int}
    "DidBecomeActive",  # {"source": "app" | "system", "reason": s}
    "DidBecomeInactive",  # {"source": "app" | "system", "reason": s}
    "SilenceSecondaryAudioHint",  # {"type": "begin" | "end"}
    "MediaServicesWereLost",  # {}
    "MediaServicesWereReset",  # {}
    # {"reason": s (Apple's name), "reason_value": int (Apple's number),
    #  "previous_route": {"inputs": [port], "outputs": [port]}} (see .routes)
    "RouteChanged",
    "PropertiesChanged",  # {property name: new value}
    "SessionLost",  # {"reason": s}: the daemon left the bus; the session is gone
)

Callback = Callable[[dict], Any]

# -- sessions ------------------------------------------------------------------------------------

class AudioSession(RouteMethods):
    """One audio session of this app: AVAudioSession (its route: :class:`RouteMethods`).

    Make one with :meth:`create`; the constructor is internal. ``path`` is the session's object
    path, ``id`` its short id (``s3``, as ``audiopolicyctl sessions`` shows it).
    """

    def __init__(self, bus: MessageBus, path: str, daemon: str, own_bus: bool):
        self.bus = bus
        self.path = path
        self.id = path.rsplit("/", 1)[-1]
        self._daemon = daemon  # the daemon's unique name: signals come from it
        self._own_bus = own_bus
        self._callbacks: dict[str, list[Callback]] = {name: [] for name in EVENTS}
        self._streams: list[_EventStream] = []
        self._tasks: set[asyncio.Task] = set()
        self._rules: list[str] = []
        self.closed = False

    # -- creation and end --------------------------------------------------------------------

    @classmethod
    def create(cls, name: str = "", *, category: str | None = None, mode: str = "default",
               options: Iterable[str] = (), bus_address: str | None = None,
               system: bool = False, bus: MessageBus | None = None) -> "_Creation":
        """Create a session (inactive, in ``soloAmbient`` unless ``category`` is given).

        Use as ``async with AudioSession.create(...) as session:`` (closed at the end of the
        block), or ``session = await AudioSession.create(...)`` and :meth:`close` it.

        :param name: a name for people (``audiopolicyctl sessions`` shows it)
        :param category: optional category, mode and options applied at creation, as by
            :meth:`set_category`
        :param bus_address: D-Bus address; default: the session bus (the system bus with
            ``system``)
        :param bus: an existing connection to use instead (it is not closed by :meth:`close`;
            the session lives as long as that connection)
        :raises DaemonNotRunning: no bus, or no daemon on it
        :raises AudioPolicyError: ``TooManySessions``, or a category error
        """
        return _Creation(cls._create(name, category, mode, list(options), bus_address, system,
                                     bus))

    @classmethod
    async def _create(cls, name: str, category: str | None, mode: str, options: list[str],
                      bus_address: str | None, system: bool,
                      bus: MessageBus | None) -> "AudioSession":
        own = bus is None
        if bus is None:
            bus = await connect(bus_address, system)
        try:
            hints: dict[str, Variant] = {"Name": Variant("s", name)}
            if category is not None:
                hints.update(Category=Variant("s", category), Mode=Variant("s", mode),
                             Options=Variant("as", options))
            reply = await call(bus, OBJECT_PATH, MANAGER_IFACE, "CreateSession", "a{sv}",
                               [hints])
            session = cls(bus, reply.body[0], reply.sender, own)
            await session._subscribe()
            return session
        except BaseException:
            if own:
                bus.disconnect()
            raise

    async def _subscribe(self) -> None:
        self.bus.add_message_handler(self._on_message)
        self._rules = [f"type='signal',sender='{BUS_NAME}',path='{self.path}'",
                       f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
                       f"arg0='{BUS_NAME}'"]
        for rule in self._rules:
            await add_match(self.bus, rule)

    async def close(self) -> None:
        """Remove the session (deactivating it; the sessions it interrupted are told they may
        resume) and close the connection if :meth:`create` opened it. Idempotent; never
        raises when the daemon or the bus is already gone."""
        lost = self.closed  # the daemon left: nothing to Close, but our bus to disconnect
        if not self.closed:
            self._end()
        try:
            if self.bus.connected and not lost:
                await call(self.bus, self.path, SESSION_IFACE, "Close")
            if self.bus.connected and not self._own_bus:
                for rule in self._rules:
                    await self.bus.call(Message(**BUS_DAEMON, member="RemoveMatch", signature="s",
                                                body=[rule]))
        except (AudioPolicyError, EOFError, OSError) as exc:
            logger.debug("closing %s: %s", self.path, exc)
        finally:
            if self._own_bus and self.bus.connected:
                self.bus.disconnect()

    def _end(self) -> None:
        self.closed = True
        # not while dbus-fast iterates its handlers (we may be called from one)
        asyncio.get_running_loop().call_soon(self.bus.remove_message_handler, self._on_message)
        for stream in list(self._streams):
            stream._finish()

    async def __aenter__(self) -> "AudioSession":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- AVAudioSession ------------------------------------------------------------------------

    async def set_category(self, category: str, mode: str = "default",
                           options: Iterable[str] = ()) -> None:
        """Declare what the app's audio is for: AVAudioSession.setCategory(_:mode:options:).

        Changing the category of an active session takes effect at once.

        :param category: ``ambient``, ``soloAmbient``, ``playback``, ``record``,
            ``playAndRecord``, ``multiRoute`` or ``audioProcessing``
        :param mode: ``default``, ``voiceChat``, ``videoChat``, ``gameChat``, ``spokenAudio``,
            ``moviePlayback``, ``measurement``, ``videoRecording``, ``voicePrompt``; one the
            category does not take becomes ``default`` (read it back with :meth:`mode`)
        :param options: category options: ``mixWithOthers``, ``duckOthers``,
            ``interruptSpokenAudioAndMixWithOthers``, ``allowBluetooth``,
            ``allowBluetoothA2DP``, ``allowAirPlay``, ``defaultToSpeaker``,
            ``overrideMutedMicrophoneInterruption``
        :raises UnknownCategory: (also) when no policy defines the category
        :raises UnknownMode:
        :raises UnknownOption:
        :raises IncompatibleCategoryOption: the category's policy does not take an option
        """
        await self._call("SetCategory", "ssas", [category, mode, list(options)])

    async def set_active(self, active: bool, options: Iterable[str] = ()) -> str:
        """Activate or deactivate: AVAudioSession.setActive(_:options:), plus Android's
        delayed focus grant.

        Activating a non-mixable session interrupts the other non-mixable sessions (they get
        ``InterruptionBegan``); ``duckOthers`` ducks them instead, ``mixWithOthers`` leaves
        them alone.

        :param active: True to activate, False to deactivate
        :param options: ``notifyOthersOnDeactivation`` (on deactivation: the sessions this one
            interrupted get ``InterruptionEnded`` with ``should_resume`` true), ``delayIfBusy``
            (on activation: wait instead of failing while a higher-priority session is active)
        :returns: ``"active"``, ``"delayed"`` (with ``delayIfBusy``; ``DidBecomeActive``
            follows when it activates, see :meth:`wait_until_active`) or ``"inactive"``
        :raises InsufficientPriority: a higher-priority session is active
        :raises CannotInterruptOthers: the same, for a mixable session
        :raises UnknownOption:
        """
        reply = await self._call("SetActive", "bas", [bool(active), list(options)])
        return reply.body[0]

    async def wait_until_active(self, timeout: float | None = None) -> None:
        """Wait until the session is active (after ``set_active`` returned ``"delayed"``).

        Race-free: it listens before it reads the ``Active`` property.

        :param timeout: seconds; None waits for ever
        :raises asyncio.TimeoutError: at the timeout
        :raises NoSuchSession: the session was closed or lost meanwhile
        """
        with self.events() as events:
            if await self.active():
                return

            async def until_active() -> None:
                async for name, info in events:
                    if name == "DidBecomeActive" or (
                            name == "PropertiesChanged" and info.get("Active") is True):
                        return
                raise NoSuchSession(f"session {self.id} ended before it became active")

            await asyncio.wait_for(until_active(), timeout)

    # -- properties (each one a round trip to the daemon) -------------------------------------

    async def category(self) -> str:
        """AVAudioSession.category."""
        return await self.get("Category")

    async def mode(self) -> str:
        """AVAudioSession.mode (``default`` when the mode asked for does not suit the
        category)."""
        return await self.get("Mode")

    async def options(self) -> list[str]:
        """AVAudioSession.categoryOptions, sorted."""
        return await self.get("Options")

    async def active(self) -> bool:
        """Whether the session is active (AVAudioSession has no getter; iOS apps track it)."""
        return await self.get("Active")

    async def state(self) -> str:
        """``active``, ``delayed`` (waiting after ``delayIfBusy``), ``interrupted`` or
        ``inactive``."""
        return await self.get("State")

    async def name(self) -> str:
        """The name given at creation."""
        return await self.get("Name")

    async def owner(self) -> str:
        """The D-Bus unique name of the owning connection (this one)."""
        return await self.get("Owner")

    async def process_id(self) -> int:
        """The owner's pid as the bus reports it (0 when unknown)."""
        return await self.get("ProcessID")

    async def app_id(self) -> str:
        """The app key the daemon identified: ``flatpak:<id>``, ``app:<id>``, ``exe:<path>``
        or ``pid:<n>``."""
        return await self.get("AppID")

    async def other_audio_playing(self) -> bool:
        """AVAudioSession.isOtherAudioPlaying: another app has an active session."""
        return await self.get("OtherAudioPlaying")

    async def secondary_audio_should_be_silenced_hint(self) -> bool:
        """AVAudioSession.secondaryAudioShouldBeSilencedHint: another app's non-mixable
        (primary) audio is playing; silence your secondary audio (game soundtracks)."""
        return await self.get("SecondaryAudioShouldBeSilencedHint")

    async def get(self, prop: str) -> Any:
        """One property of the Session interface by its D-Bus name, as a plain value."""
        reply = await call(self.bus, self.path, PROPERTIES_IFACE, "Get", "ss",
                           [SESSION_IFACE, prop])
        return plain(reply.body[0])

    async def properties(self) -> dict[str, Any]:
        """Every property at once: ``{D-Bus name: plain value}``."""
        reply = await call(self.bus, self.path, PROPERTIES_IFACE, "GetAll", "s", [SESSION_IFACE])
        return plain(reply.body[0])

    # -- events ----------------------------------------------------------------------------------

    def on(self, event: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(info)`` on every ``event`` (one of :data:`EVENTS`).

        ``info`` is a plain dict: AVAudioSession's notification userInfo, with D-Bus key names
        (``InterruptionEnded``: ``should_resume`` bool, ``options`` list, ``duration_ms`` int;
        see :data:`EVENTS`). A coroutine function is run as a task. Exceptions in callbacks are
        logged, not raised.

        :returns: a function that unsubscribes the callback
        :raises ValueError: for a name not in :data:`EVENTS`
        """
        if event not in self._callbacks:
            raise ValueError(f"unknown event {event!r} (one of: {', '.join(EVENTS)})")
        self._callbacks[event].append(callback)
        return lambda: self._callbacks[event].remove(callback) \
            if callback in self._callbacks[event] else None

    def events(self) -> "_EventStream":
        """Every event from now on, as ``(name, info)`` (see :meth:`on`), for ``async for``.

        It buffers from the moment it is called, so call it before the action whose events
        you want; use it as a context manager (``with session.events() as events:``) or
        :meth:`_EventStream.close` it to stop buffering. Iteration ends when the session is
        closed or lost.
        """
        stream = _EventStream(self)
        self._streams.append(stream)
        return stream

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if (msg.member == "NameOwnerChanged" and msg.interface == "org.freedesktop.DBus"
                and msg.body and msg.body[0] == BUS_NAME and msg.body[1] == self._daemon):
            self._dispatch("SessionLost", {"reason": "audiopolicyd left the bus"})
            self._end()
            return
        if msg.path != self.path or msg.sender != self._daemon:
            return
        if msg.interface == PROPERTIES_IFACE and msg.member == "PropertiesChanged":
            if msg.body[0] == SESSION_IFACE:
                self._dispatch("PropertiesChanged", plain(msg.body[1]))
        elif msg.interface == SESSION_IFACE and msg.member in self._callbacks:
            if msg.member == "SilenceSecondaryAudioHint":
                info = {"type": msg.body[0]}
            else:
                info = plain(msg.body[0]) if msg.body else {}
            self._dispatch(msg.member, info)

    def _dispatch(self, event: str, info: dict) -> None:
        for stream in self._streams:
            stream.queue.put_nowait((event, dict(info)))
        for callback in list(self._callbacks[event]):
            try:
                result = callback(dict(info))
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)
            except Exception:
                logger.exception("%s callback failed", event)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("event callback failed", exc_info=task.exception())

    async def _call(self, member: str, signature: str, body: list) -> Message:
        if self.closed:
            raise NoSuchSession(f"session {self.id} is closed")
        return await call(self.bus, self.path, SESSION_IFACE, member, signature, body)

    def __repr__(self) -> str:
        return f"<AudioSession {self.path}{' closed' if self.closed else ''}>"


class _Creation:
    """What :meth:`AudioSession.create` returns: awaitable, or an async context manager."""

    def __init__(self, coro: Awaitable[AudioSession]):
        self._coro = coro
        self._session: AudioSession | None = None

    def __await__(self):
        return self._coro.__await__()

    async def __aenter__(self) -> AudioSession:
        self._session = await self._coro
        return self._session

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()


class _EventStream:
    """``(name, info)`` events of a session for ``async for``; see
    :meth:`AudioSession.events`."""

    _END = ("", {})

    def __init__(self, session: AudioSession):
        self.session = session
        self.queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
        self._done = False

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self.queue.put_nowait(self._END)

    def close(self) -> None:
        """Stop buffering; iteration ends after the events already buffered."""
        if self in self.session._streams:
            self.session._streams.remove(self)
        self._finish()

    def __enter__(self) -> "_EventStream":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[tuple[str, dict]]:
        return self

    async def __anext__(self) -> tuple[str, dict]:
        item = await self.queue.get()
        if item is self._END:
            self.queue.put_nowait(item)  # stays ended
            raise StopAsyncIteration
        return item


