"""A session's route, for :class:`~audiopolicyd.client.session.AudioSession`: Apple's
``currentRoute``, ``availableInputs``, ``setPreferredInput(_:)`` and
``overrideOutputAudioPort(_:)`` (the ``RouteChanged`` event is delivered like the others).

A port is a plain dict, Apple's ``AVAudioSessionPortDescription``: ``{"port_type": str``
(Apple's port type: ``usbAudio``, ``headphones``, ``builtInSpeaker``...), ``"port_name": str``
(the device's description), ``"uid": str}`` (the device's name, ``/`` and its active port's
name; stable while the device keeps its name, so an app may store it). A route is
``{"inputs": [port], "outputs": [port]}``.
"""

from __future__ import annotations

import logging
logger = logging.getLogger(__name__)


class RouteMethods:
    """The route calls of a session (a base of
    :class:`~audiopolicyd.client.session.AudioSession`, whose ``get`` and ``_call`` they
    use)."""

    async def current_route(self) -> dict[str, list[dict[str, str]]]:
        """AVAudioSession.currentRoute: where the session's audio goes now.

        :returns: ``{"inputs": [port], "outputs": [port]}`` (see the module docstring); empty
            lists before the daemon has decided the session's route, and for a direction the
            category does not use (no inputs for ``playback``)
        """
        return await self.get("CurrentRoute")

    async def available_inputs(self) -> list[dict[str, str]]:
        """AVAudioSession.availableInputs: the input ports present that the session's category
        could use (none for a category that does not record; Bluetooth HFP inputs only with
        ``allowBluetooth`` in a category that offers it)."""
        return await self.get("AvailableInputs")

    async def set_preferred_input(self, uid: str | None) -> None:
        """AVAudioSession.setPreferredInput(_:): record from that input (the daemon moves the
        session's recordings to it); None or '' clears the preference.

        The preference is kept when the port goes away (it is not used meanwhile) and used
        again when it comes back.

        :param uid: the ``uid`` of a port of :meth:`available_inputs`
        :raises InputUnavailable: no port of that uid is available to the session now
        :raises InvalidArgument: longer than 1024 characters
        """
        await self._call("SetPreferredInput", "s", [uid or ""])

    async def override_output_audio_port(self, port: str) -> None:
        """AVAudioSession.overrideOutputAudioPort(_:): ``"speaker"`` plays (and records)
        through the built-in speaker (and microphone) whatever is plugged in, ``"none"`` ends
        that. The daemon moves the session's streams, and ``RouteChanged`` (reason
        ``override``) follows. The override ends with ``"none"``, a change of category, or
        the session.

        :param port: ``"speaker"`` or ``"none"``
        :raises IncompatibleCategoryOption: the category is not ``playAndRecord``
        :raises UnknownPortOverride: another value
        """
        await self._call("OverrideOutputAudioPort", "s", [port])
