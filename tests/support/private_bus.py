"""A private dbus-daemon for unit tests that need a real bus (a pytest fixture).

Nothing is D-Bus-activatable on it (no real notification server, permission store or dconf
starts with the user's data); it listens on a socket under the test's ``tmp_path``.
"""

from __future__ import annotations

import select
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Seconds dbus-daemon gets to print its address (an upper bound, never a speed claim).
START_WAIT = 10.0

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={dir}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def bus_address(tmp_path: Path) -> Iterator[str]:
    """The address of a private dbus-daemon, stopped after the test."""
    assert shutil.which("dbus-daemon"), "dbus-daemon is needed (Debian package dbus)"
    conf = tmp_path / "bus.conf"
    conf.write_text(BUS_CONFIG.format(dir=tmp_path))
    proc = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork",
                             "--print-address"], stdout=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_WAIT)
        address = proc.stdout.readline().decode().strip() if ready else ""
        assert address, "dbus-daemon printed no address"
        yield address
    finally:
        proc.terminate()
        proc.wait(START_WAIT)
        proc.stdout.close()
