"""Fixtures for the integration tests: a private bus, each real server, a tone.

A missing program fails the tests (never skips them): these tests are the
proof that the daemon works on real servers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.audio import make_tone
from tests.support.bus import PrivateBus
from tests.support.daemon import DaemonProcess
from tests.support.processes import log_tail, missing_binaries
from tests.support.servers import SERVERS, AudioServer

logger = logging.getLogger(__name__)

#: Debian package of each required program, for the failure message.
PACKAGES = {
    "dbus-daemon": "dbus", "pulseaudio": "pulseaudio", "pipewire": "pipewire",
    "wireplumber": "wireplumber", "pipewire-pulse": "pipewire-pulse",
    "paplay": "pulseaudio-utils", "pactl": "pulseaudio-utils", "mpv": "mpv",
    "playerctl": "playerctl", "sox": "sox", "parecord": "pulseaudio-utils",
    "busctl": "systemd", "dbus-send": "dbus-bin", "gdbus": "libglib2.0-bin",
    "gsettings": "libglib2.0-bin", "mount": "mount", "pw-record": "pipewire-bin",
    "pw-play": "pipewire-bin", "bwrap": "bubblewrap",
}

MISSING = missing_binaries()


@pytest.fixture(autouse=True)
def _required_binaries() -> None:
    """Fail every integration test when a needed program is missing."""
    if MISSING:
        packages = sorted({PACKAGES.get(name, name) for name in MISSING})
        pytest.fail(f"integration tests need {', '.join(MISSING)} on PATH; "
                    f"install: apt-get install {' '.join(packages)} mpv-mpris",
                    pytrace=False)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """Attach the server log tails to the report of a failed test."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    server = funcargs.get("server")
    if report.failed and isinstance(server, AudioServer):
        report.sections.append((f"{server.name} logs", server.log_tails()))
        report.sections.append(("client logs", log_tail(server.dir / "clients.log")))
    daemon = funcargs.get("daemon")
    if report.failed and isinstance(daemon, DaemonProcess):
        report.sections.append(("audiopolicyd log", daemon.log_tail(200)))
    return report


@pytest.fixture
def bus() -> Iterator[PrivateBus]:
    """A private D-Bus session bus on which nothing is D-Bus-activatable (the system's
    services, such as xdg-permission-store or dconf, would run with the real user's data)."""
    with PrivateBus(service_dirs=[]) as private_bus:
        yield private_bus


@pytest.fixture(params=["pulseaudio", "pipewire"])
def server(request: pytest.FixtureRequest, bus: PrivateBus,
           ) -> Iterator[AudioServer]:
    """A started private audio server on ``bus``, stopped after the test."""
    instance = SERVERS[request.param](bus)
    try:
        instance.start()
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="session")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60 s, 440 Hz stereo wav file."""
    return make_tone(tmp_path_factory.mktemp("audio") / "tone.wav")


@pytest.fixture
def daemon(server: AudioServer, tmp_path: Path) -> Iterator[DaemonProcess]:
    """The real ``audiopolicyd`` on ``server``, started and connected.

    Private ``XDG_STATE_HOME`` and ``XDG_CONFIG_HOME`` under ``tmp_path`` (kept
    across ``daemon.restart()``); its log is added to the report of a failed test.
    Every daemon process it started is stopped after the test.
    """
    instance = DaemonProcess(server, tmp_path / "daemon")
    try:
        instance.start()
        yield instance
    finally:
        instance.close()
