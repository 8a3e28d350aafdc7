"""The desktop's global microphone switch: ``org.gnome.desktop.privacy disable-microphone``.

GNOME Settings' "Microphone Access" toggle writes this GSettings key (dconf backend). The
daemon reads it with the ``gsettings`` tool (which honours the schema's default and whatever
backend the desktop uses) at start and again whenever dconf announces a write under
``/org/gnome/desktop/privacy/`` (``ca.desrt.dconf.Writer.Notify`` on the session bus). Where
``gsettings`` or the schema is missing, the switch is absent and never disables anything.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from typing import Callable

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

logger = logging.getLogger(__name__)

SCHEMA, KEY = "org.gnome.desktop.privacy", "disable-microphone"
#: The dconf path of the key, and the prefix whose writes make us read it again.
DCONF_DIR = "/org/gnome/desktop/privacy/"
#: dconf's change signal (sent by ``dconf-service`` for every write).
DCONF_IFACE, DCONF_SIGNAL = "ca.desrt.dconf.Writer", "Notify"
#: How long one ``gsettings get`` may take, in seconds.
READ_TIMEOUT = 5.0


async def read_switch() -> bool | None:
    """``disable-microphone`` now: True (microphone disabled), False, or None when the
    ``gsettings`` tool or the schema is missing or the read failed."""
    tool = shutil.which("gsettings")
    if tool is None:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            tool, "get", SCHEMA, KEY, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), READ_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as exc:
        logger.warning("cannot read %s %s: %s", SCHEMA, KEY, exc)
        return None
    value = out.decode(errors="replace").strip()
    if proc.returncode != 0 or value not in ("true", "false"):
        logger.debug("%s %s unavailable: %s", SCHEMA, KEY, err.decode(errors="replace").strip())
        return None
    return value == "true"


def _touches_key(prefix: str, changes: list[str]) -> bool:
    paths = [prefix + c for c in changes] or [prefix]
    return any(DCONF_DIR.startswith(p) or p.startswith(DCONF_DIR) for p in paths)


class MicrophoneSwitch:
    """Follows the global switch and reports it to ``on_change(disabled: bool)``.

    :param bus: a connected session-bus connection
    :param on_change: called with the new value whenever it changes (and once after
        :meth:`start` when the microphone is disabled)
    """

    def __init__(self, bus: MessageBus, on_change: Callable[[bool], None]):
        self.bus = bus
        self.on_change = on_change
        #: None while the switch is absent.
        self.disabled: bool | None = None
        self._rule = (f"type='signal',interface='{DCONF_IFACE}',member='{DCONF_SIGNAL}'")
        self._task: asyncio.Task | None = None
        self._again = False  # a write came while a read was running: read once more

    async def start(self) -> None:
        """Subscribe to dconf's writes, then read the key."""
        self.bus.add_message_handler(self._on_message)
        await self.bus.call(Message(destination="org.freedesktop.DBus",
                                    path="/org/freedesktop/DBus",
                                    interface="org.freedesktop.DBus", member="AddMatch",
                                    signature="s", body=[self._rule]))
        await self._read()
        logger.info("desktop microphone switch (%s %s): %s", SCHEMA, KEY,
                    {None: "absent", True: "microphone disabled",
                     False: "microphone enabled"}[self.disabled])

    def close(self) -> None:
        self.bus.remove_message_handler(self._on_message)
        if self._task is not None:
            self._task.cancel()

    async def _read(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            value = await read_switch()
            if value != self.disabled:
                self.disabled = value
                self.on_change(bool(value))

    def _on_message(self, msg: Message) -> None:
        # Anyone may send this signal: it only makes us read the key again.
        if (msg.message_type == MessageType.SIGNAL and msg.interface == DCONF_IFACE
                and msg.member == DCONF_SIGNAL and msg.signature == "sass"
                and _touches_key(msg.body[0], msg.body[1])):
            if self._task is None or self._task.done():
                self._task = asyncio.ensure_future(self._read())
            else:
                self._again = True
