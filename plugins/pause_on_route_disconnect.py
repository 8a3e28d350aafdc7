"""pause_on_route_disconnect: Apple's ``prefersInterruptionOnRouteDisconnect``.

When the device a playing stream of the category is on goes away (headphones unplugged, a USB
or Bluetooth headset gone), the stream is muted at once and its player paused through MPRIS,
so the music does not go on out of the speakers; a session gets ``RouteChanged``
``oldDeviceUnavailable`` and ``InterruptionBegan`` with reason ``routeDisconnected``. A
stream without a player stays muted until the user unmutes it or plays it again.

Enabled by a ``[plugins.pause_on_route_disconnect]`` table in a category's policy; it reacts
to that category's route changes. The policy's ``[route] interrupt_on_disconnect = false``
turns it off (Apple's default is true). The shipped ``playback`` policy enables it.

Settings: none (the table is empty).

Example::

    [plugins.pause_on_route_disconnect]
"""

from __future__ import annotations

import logging

from audiopolicyd import hookimpl
from audiopolicyd.route import RouteReaction

from ._session_option import settings_hook

logger = logging.getLogger(__name__)

TABLE = "pause_on_route_disconnect"
#: The reason a session's ``InterruptionBegan`` carries.
REASON = "routeDisconnected"

register_policy_settings = settings_hook(TABLE)


@hookimpl
def react_to_route_change(change, streams, policy):
    if not policy.route.interrupt_on_disconnect or not change.gone:
        return None
    return tuple(RouteReaction(stream=s.key, mute=True, pause=True,
                               reason=f"{REASON}: its device {s.device} went "
                                      f"({change.reason.name})")
                 for s in streams if s.playing and s.device in change.gone)
