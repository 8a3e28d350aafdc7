"""echo_cancel_for_chat: echo cancellation for a call in a chat mode.

A session of the category in mode ``voiceChat``, ``videoChat`` or ``gameChat`` gets echo
cancellation while it is active (``module-echo-cancel`` on PulseAudio; pipewire-pulse maps it
to PipeWire's echo canceller), its capture and playback routed through it; it is removed when
the call ends. As AVAudioSession, whose chat modes turn on the voice-processing I/O unit.
``measurement`` never gets processing (the daemon does not even ask the plugins).

Enabled by an ``[plugins.echo_cancel_for_chat]`` table in a category's policy; it proposes
processing for that category's sessions. The shipped ``playAndRecord`` policy enables it.

Settings: none (the table is empty).

Example::

    [plugins.echo_cancel_for_chat]
"""

from __future__ import annotations

import logging

from audiopolicyd import hookimpl
from audiopolicyd.route import ECHO_CANCEL

from ._session_option import settings_hook

logger = logging.getLogger(__name__)

TABLE = "echo_cancel_for_chat"
#: Apple's modes for two-way voice and video.
CHAT_MODES = ("voiceChat", "videoChat", "gameChat")

register_policy_settings = settings_hook(TABLE)


@hookimpl
def propose_processing(session):
    return (ECHO_CANCEL,) if session.mode in CHAT_MODES else None
