"""Shared builders for unit tests: streams, sessions and the shipped policy set."""

from __future__ import annotations

import gc
import os

import pytest

from audiopolicyd.backends.pulse_convert import object_id
from audiopolicyd.model import Stream, StreamKind, freeze
from audiopolicyd.pluginmanager import make_plugin_manager, plugin_settings_schemas
from audiopolicyd.policystore import PolicyStore, shipped_dir

from ..support.fake_backend import fake_ids
from ..support.private_bus import bus_address, private_bus  # noqa: F401 (a fixture for the tests here)


#: This test process as a stream claims it (``extra=VERIFIED``): /proc confirms the claim, so
#: the stream's app is ``exe:<this Python>``, which may be granted (``unverified:`` may not).
VERIFIED = {"application.process.id": str(os.getpid()),
            "application.process.binary": os.path.basename(os.readlink("/proc/self/exe"))}


def make_stream(index: int, kind: StreamKind = StreamKind.SINK_INPUT, *, role: str | None = None,
                app: str | None = None, pid: int | None = None, corked: bool = False,
                volume=(65536, 65536), muted: bool = False, monitor: bool = False,
                extra: dict[str, str] | None = None) -> Stream:
    """A stream with the properties a libpulse client would set, plus ``extra`` ones."""
    p = dict(extra or {})
    if role:
        p["media.role"] = role
    if app:
        p["application.name"] = app
        p.setdefault("application.process.binary", app)
    if pid is not None:
        p["application.process.id"] = str(pid)
    # linked to the device at index 0 of its direction, by the id a backend gives it
    device = object_id("sink" if kind is StreamKind.SINK_INPUT else "source", 0)
    return Stream(kind, index, freeze(p), tuple(volume), muted, corked, device, monitor,
                  **fake_ids(kind, index, p))


@pytest.fixture(scope="session")
def pm():
    return make_plugin_manager(load_entry_points=False)


@pytest.fixture(scope="session")
def policies(pm):
    store = PolicyStore([shipped_dir()], plugin_settings_schemas(pm))
    store.reload()
    return store.current


@pytest.fixture
def collect_garbage():
    """Collect garbage after the test, so that a connection it leaves open fails that test.

    Since Python 3.13 an SQLite connection nobody closed warns (``ResourceWarning``, an error
    under the suite's ``filterwarnings = error``) when it is freed; one held in a reference
    cycle is freed whenever the collector next runs, which would blame an unrelated later test
    (or the end of the session). Modules that open SQLite use it (``pytestmark``); it is not
    autouse because a full collection per test would make the unit suite several times slower.
    """
    yield
    gc.collect()
