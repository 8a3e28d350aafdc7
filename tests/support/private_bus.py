"""A private dbus-daemon for unit tests that need a real bus (a pytest fixture).

Nothing is D-Bus-activatable on it (no real notification server, permission store or dconf
starts with the user's data); it is :class:`~.bus.PrivateBus`, the bus of the integration
tests, in its own temporary directory.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator

import pytest

from .bus import PrivateBus

logger = logging.getLogger(__name__)

#: Seconds dbus-daemon gets to print its address (an upper bound, never a speed claim).
START_WAIT = 10.0


@pytest.fixture
def private_bus() -> Iterator[PrivateBus]:
    """A private dbus-daemon (its process is ``.proc``), stopped after the test."""
    assert shutil.which("dbus-daemon"), "dbus-daemon is needed (Debian package dbus)"
    bus = PrivateBus(service_dirs=[])
    try:
        bus.start(START_WAIT)
        yield bus
    finally:
        bus.close()


@pytest.fixture
def bus_address(private_bus: PrivateBus) -> str:
    """The address of a private dbus-daemon, stopped after the test."""
    return private_bus.address
