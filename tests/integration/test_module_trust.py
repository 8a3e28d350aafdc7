"""Which modules the microphone gate trusts (issue 9, item 2), on real servers.

The modules the server had when the daemon first connected to it are infrastructure: they keep
working, also across a daemon restart (the journal keeps the list per server instance, by its
cookie). A module loaded while the daemon was down, at the index of an unloaded trusted one, or
before the daemon reconnected to a restarted server, is gated as ``module:<name>``. What an app
hears is measured in its recording (``parecord``).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest

from tests.support.audio import (
    RAW_FRAME_BYTES, RAW_RATE, assert_silenced_from_start, peak, wait_recorded,
)
from tests.support.daemon import DaemonProcess
from tests.support.microphone import (
    LOOPBACK, PACAT, ctl_ok, load, recorded_for, start_recording, unload, wait_module_muted,
    wait_pending,
)
from tests.support.servers import AudioServer

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration


def test_the_servers_own_modules_stay_audible_and_later_ones_are_gated(
        server: AudioServer, tmp_path: Path) -> None:
    # a loopback of the server's configuration: loaded before the daemon first connects
    load(server, "module-null-sink", "sink_name=trap")
    configured = load(server, "module-loopback", "source=mic sink=trap latency_msec=20")
    with DaemonProcess(server, tmp_path / "daemon") as daemon:
        daemon.start()
        ctl_ok(daemon, "grant", PACAT)  # whoever records trap.monitor records the mic
        take = tmp_path / "trap.raw"
        start_recording(server, take, device="trap.monitor")
        wait_recorded(take, audible=True)
        wait_module_muted(server, configured, False)

        # loaded while the daemon is down: not trusted when it comes back; the configured
        # one still is (the journal kept the list of this server instance)
        daemon.stop()
        load(server, "module-null-sink", "sink_name=trap2")
        later = load(server, "module-loopback", "source=mic sink=trap2 latency_msec=20")
        daemon.start()
        wait_module_muted(server, later, True)
        take2 = tmp_path / "trap2.raw"
        start_recording(server, take2, device="trap2.monitor")
        wait_recorded(take2, audible=False)
        wait_recorded(take, audible=True)
        wait_module_muted(server, configured, False)
        assert wait_pending(daemon, LOOPBACK)[LOOPBACK]["Silenced"] is True

        # a module loaded at the index of an unloaded trusted one (pipewire-pulse reuses
        # indices) is not trusted either
        unload(server, configured)
        again = load(server, "module-loopback", "source=mic sink=trap latency_msec=20")
        logger.info("reloaded at #%d (the configured one was #%d)", again, configured)
        wait_module_muted(server, again, True)
        take3 = tmp_path / "again.raw"
        start_recording(server, take3, device="trap.monitor")
        recorded_for(take3, 1.0)
        assert_silenced_from_start(server, take3)
        daemon.assert_running()


def test_a_module_loaded_before_the_daemon_reconnects_to_a_restarted_server_is_gated(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    # Any PulseAudio client may make the server exit (pactl exit), and the first client to
    # connect starts the next one: here the daemon is stopped (SIGSTOP) while the server
    # restarts and a client loads a loopback before the daemon can reconnect.
    ctl_ok(daemon, "grant", PACAT)  # the listener is granted: only the module's gate is left
    daemon.signal(signal.SIGSTOP)
    try:
        server.restart()
        load(server, "module-null-sink", "sink_name=trap")
        attack = load(server, "module-loopback", "source=mic sink=trap latency_msec=20")
    finally:
        daemon.signal(signal.SIGCONT)
    daemon.wait_connected()
    wait_module_muted(server, attack, True)
    assert f"not in the previous instance, not trusted: module-loopback #{attack}" \
        in daemon.log_text()
    take = tmp_path / "trap.raw"
    start_recording(server, take, device="trap.monitor")
    # what the loopback had queued before the daemon came back may still play out: from the
    # first silent stretch on, silence
    start = wait_recorded(take, audible=False)
    recorded_for(take, 1.0 + start / RAW_FRAME_BYTES / RAW_RATE)
    assert peak(take, start) == 0
    assert wait_pending(daemon, LOOPBACK)[LOOPBACK]["Silenced"] is True
    daemon.assert_running()
