"""The audio server backends, and the one place that chooses among them (:func:`choose`).

``audiopolicyd --backend NAME``: :data:`NAMES` lists the choices. ``auto`` picks the best
backend for the server found; today that is always ``pulse`` (the PulseAudio protocol, which
PulseAudio and PipeWire's pipewire-pulse both speak). A native PipeWire backend will join here
and say in its :attr:`~audiopolicyd.backends.base.Backend.capabilities` what it lacks.
"""

from __future__ import annotations

import logging

from .base import Backend

logger = logging.getLogger(__name__)

#: The names ``--backend`` accepts, ``auto`` first.
NAMES = ("auto", "pulse")


class UnknownBackend(ValueError):
    """``--backend`` named no backend this daemon has (:data:`NAMES`)."""


def choose(name: str = "auto", server: str | None = None) -> Backend:
    """The backend called *name*, not connected yet.

    :param name: one of :data:`NAMES`
    :param server: the server address (``unix:/run/user/1000/pulse/native``), None for the
        backend's default lookup (``$PULSE_SERVER``, then libpulse's default)
    :raises UnknownBackend: for any other name (the message lists the valid ones)
    """
    if name not in NAMES:
        raise UnknownBackend(f"unknown backend {name!r:.40}; choose one of {', '.join(NAMES)}")
    # imported here: choosing must not load libpulse for a backend that is not chosen
    from .pulse import PulseBackend

    backend = PulseBackend(server)
    logger.debug("backend %s: %s", name, type(backend).__name__)
    return backend
