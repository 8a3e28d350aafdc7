"""Streams owned by a server module are infrastructure (issue 8, D12), on a real PulseAudio.

A mic ``module-loopback`` or a ``module-echo-cancel`` records the microphone and plays into a
sink for as long as it is loaded. Classified like an app's, its recording formed a permanent
``record`` session that silenced every output on the machine, and a call ducked the module's
playback stream. By default they neither act nor are acted on; a ``[[classify]]`` rule with a
``module`` key opts a module in.

Only the modules the server had when the daemon first connected to it are infrastructure for
the microphone gate (issue 9): a test loads its module before the daemon starts, as the
server's own configuration would, or grants ``module:<name>`` the microphone.

PulseAudio only: it names the owner module of a stream. pipewire-pulse implements its modules
differently (see the microphone issue).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import play
from tests.support.daemon import DaemonProcess
from tests.support.processes import wait_for
from tests.support.servers import AudioServer, pulse
from tests.support.streams import (
    ducked, end_client, raw_volumes, set_user_volume, sink_inputs, source_outputs, stream_of,
    wait_muted, wait_volume,
)

from audiopolicyd.policystore import shipped_dir

logger = logging.getLogger(__name__)

pytestmark = [pytest.mark.integration,
              pytest.mark.parametrize("server", ["pulseaudio"], indirect=True)]

#: Module arguments: both record the test mic and play into the speaker.
MODULES = {
    "module-loopback": "source=mic sink=speaker latency_msec=20",
    "module-echo-cancel": "source_master=mic sink_master=speaker aec_method=null "
                          "source_name=ec_source sink_name=ec_sink",
}


class LoadedModule:
    """A module loaded on the server, with its own streams (found by ``owner_module``)."""

    def __init__(self, server: AudioServer, name: str) -> None:
        self.server, self.name = server, name
        with pulse(server) as p:
            self.index = p.module_load(name, MODULES[name])
        logger.info("%s loaded as module %d", name, self.index)

    def playback(self) -> list:
        return [s for s in sink_inputs(self.server) if s.owner_module == self.index]

    def recording(self) -> list:
        return [s for s in source_outputs(self.server) if s.owner_module == self.index]

    def keys(self) -> set[str]:
        """The daemon's keys of the module's streams (once both exist)."""
        streams = wait_for(lambda: (self.playback(), self.recording()), 10,
                           f"{self.name}'s playback and recording streams",
                           until=lambda s: s[0] and s[1])
        return ({f"sink-input:{s.index}" for s in streams[0]}
                | {f"source-output:{s.index}" for s in streams[1]})

    def unload(self) -> None:
        with pulse(self.server) as p:
            p.module_unload(self.index)


@pytest.fixture
def loaded(server: AudioServer) -> Iterator[list[LoadedModule]]:
    """Modules a test loads; each is unloaded after it."""
    modules: list[LoadedModule] = []
    yield modules
    for module in modules:
        if any(m.index == module.index for m in _module_list(server)):
            module.unload()


def _module_list(server: AudioServer) -> list:
    with pulse(server) as p:
        return p.module_list()


@pytest.fixture
def configured(server: AudioServer, module_name: str,
               loaded: list[LoadedModule]) -> LoadedModule:
    """The test's module, loaded as part of the server's configuration: a test requests it
    before ``daemon``, so it is loaded before the daemon first connects."""
    module = LoadedModule(server, module_name)
    loaded.append(module)
    return module


def daemon_views(daemon: DaemonProcess, keys: set[str]) -> dict[str, dict]:
    """The daemon's view of the streams ``keys``, once it lists them all."""
    return wait_for(lambda: {v["Key"]: v for v in daemon.streams() if v["Key"] in keys}, 10,
                    f"the daemon to list {sorted(keys)}", until=lambda vs: set(vs) == keys)


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_a_module_that_records_the_mic_neither_acts_nor_is_acted_on(
        server: AudioServer, configured: LoadedModule, daemon: DaemonProcess, tone: Path,
        module_name: str) -> None:
    module = configured  # loaded before the daemon started (the argument order says so)
    views = daemon_views(daemon, module.keys())
    assert not any(s.mute for s in module.recording())  # infrastructure: not gated
    music = play(server, tone, role="music")
    game = play(server, tone, role="game")
    set_user_volume(server, game, 40000)
    wait_muted(server, music, False)
    # The module's recording formed no session: nothing silenced the music.
    assert daemon.stream_view(stream_of(server, music).index)["Effect"] == "none"
    wait_muted(server, music, False)
    wait_volume(server, game, 40000)
    for key, view in views.items():
        assert view["Category"] == "", (key, view)
        assert view["Rule"] == f"{module_name}: server module (no [[classify]] rule names it)"
        assert view["Effect"] == "none" and view["Session"] == "", (key, view)

    # A call acts on the apps (the music is interrupted, the game ducked), not on the module.
    playback = {s.index: (raw_volumes(s), s.mute) for s in module.playback()}
    phone = play(server, tone, role="phone")
    wait_muted(server, music, True)
    wait_volume(server, game, ducked(40000, 0.2))
    assert {s.index: (raw_volumes(s), s.mute) for s in module.playback()} == playback
    assert all(v["Effect"] == "none" for v in daemon_views(daemon, module.keys()).values())
    assert not any(s.mute for s in module.recording())
    end_client(server, phone)
    wait_muted(server, music, False)
    wait_volume(server, game, 40000)
    daemon.assert_running()


def test_a_policy_opts_a_module_in_by_name(server: AudioServer, daemon: DaemonProcess,
                                           tone: Path, loaded: list[LoadedModule]) -> None:
    # The user's record.toml: a mic loopback records like an app.
    policy = daemon.policy_dir / "record.toml"
    shipped = (shipped_dir() / "record.toml").read_text()
    rule = f"record.toml: classify[{shipped.count('[[classify]]')}]"
    policy.write_text(shipped + '\n[[classify]]\nmodule = ["module-loopback"]\n'
                      'direction = ["record"]\n')
    wait_for(daemon.status, 10, "the user's record.toml to be in force",
             until=lambda s: str(policy) in s["PolicyFiles"] and s["PolicyProblems"] == [])
    music = play(server, tone, role="music")
    wait_muted(server, music, False)

    # loaded at run time: gated as module:module-loopback, which the user grants
    done = daemon.ctl("grant", "module:module-loopback")
    assert done.returncode == 0, done.stderr
    module = LoadedModule(server, "module-loopback")
    loaded.append(module)
    keys = module.keys()
    (rec_key,) = [k for k in keys if k.startswith("source-output:")]
    (play_key,) = [k for k in keys if k.startswith("sink-input:")]
    views = wait_for(lambda: daemon_views(daemon, keys), 10, "the loopback classified",
                     until=lambda vs: vs[rec_key]["Category"] == "record")
    assert views[rec_key]["Rule"] == f"{policy.parent}/{rule}", views[rec_key]
    assert views[play_key]["Category"] == ""  # the rule names direction record only
    wait_muted(server, music, True)  # the opted-in recording silences output, as parecord's
    wait_for(module.recording, 10, "the granted loopback's recording unmuted",
             until=lambda outs: outs and not any(s.mute for s in outs))

    module.unload()
    wait_muted(server, music, False)
    end_client(server, music)
    daemon.assert_running()
