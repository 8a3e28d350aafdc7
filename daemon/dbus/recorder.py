"""``io.github.audiopolicyd.AudioPolicy1.Recorder``: one recording (``Manager.Record``), one
object each, at ``.../recorder/<control_id>``.

Only the connection that started the recording may call its methods: the recorders
(:meth:`audiopolicyd.recorder.recorders.Recorders.get`) decide that when the dispatcher
resolves the object a call is for (``NotOwner``, ``NoSuchSession``). Its properties and
``StatusChanged`` are anyone's to read, as a session's are.

(No ``from __future__ import annotations`` here: dbus-fast reads D-Bus signatures from the
annotations at run time.)
"""

import logging

from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, signal

from ..errors import InvalidArgument
from ..limits import IDENTIFIER_CHARS, check_text
from ..names import RECORDER_IFACE
from .convert import plain_dict
from .service import caller_method

logger = logging.getLogger(__name__)


class RecorderInterface(ServiceInterface):
    """``io.github.audiopolicyd.AudioPolicy1.Recorder``.

    :param recording: the :class:`~audiopolicyd.recorder.recorders.Recording` (None only to
        introspect)
    """

    def __init__(self, recording=None):
        super().__init__(RECORDER_IFACE)
        self.recording = recording
        if recording is not None:
            recording.job.listeners.append(self._status)

    @caller_method("Stop")
    def stop(self, caller):
        self.recording.job.stop("Stop()")

    @caller_method("Pause")
    def pause(self, caller, behavior: "s"):
        check_text("Pause behavior", behavior, IDENTIFIER_CHARS)
        try:
            self.recording.job.pause(behavior)
        except ValueError as exc:
            raise InvalidArgument(f"Pause: {exc}") from None

    @caller_method("Resume")
    def resume(self, caller):
        try:
            self.recording.job.resume()
        except ValueError as exc:
            raise InvalidArgument(f"Resume: {exc}") from None

    @dbus_property(access=PropertyAccess.READ, name="State")
    def state(self) -> "s":
        return self.recording.job.state.value

    @dbus_property(access=PropertyAccess.READ, name="URL")
    def url(self) -> "s":
        return self.recording.job.url

    @dbus_property(access=PropertyAccess.READ, name="Result")
    def result(self) -> "s":
        return self.recording.job.result

    @dbus_property(access=PropertyAccess.READ, name="Duration")
    def duration(self) -> "d":
        return float(self.recording.job.duration)

    @dbus_property(access=PropertyAccess.READ, name="Size")
    def size(self) -> "t":
        return int(self.recording.job.size)

    @dbus_property(access=PropertyAccess.READ, name="Level")
    def level(self) -> "d":
        return max(-120.0, float(self.recording.job.level_dbfs))

    @signal(name="StatusChanged")
    def status_changed(self, payload) -> "a{sv}":
        return payload

    def _status(self, payload: dict) -> None:
        """A state reached: ``StatusChanged`` with SWML's payload, then the properties."""
        job = self.recording.job
        self.status_changed(plain_dict(payload))
        self.emit_properties_changed({"State": job.state.value, "Result": job.result,
                                      "Duration": float(job.duration),
                                      "Size": int(job.size)})
