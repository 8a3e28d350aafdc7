"""``audiopolicyctl policy simulate`` says what the running daemon does, in the same words.

The same streams play on a real server under the real daemon and go through the simulation of
a scenario written from what the server reports of them (their property lists); every
stream's category, rule, policy file, effect and reasons (``explain``) must be equal, the
session ids in the reasons aside (a simulated session is named by the scenario).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.support.clients import play
from tests.support.daemon import DaemonProcess
from tests.support.servers import AudioServer
from tests.support.streams import ducked, wait_stream, wait_volume

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

#: The order the streams start in, with their roles (None: an app no rule names, soloAmbient).
PLAYED = (("game", "game"), ("browser", None), ("call", "phone"))
#: What the explanations are compared on.
COMPARED = ("Kind", "Category", "ChosenBy", "Policy", "Effect", "Reasons")


def comparable(explained: dict, sessions: dict[str, str]) -> dict:
    """An explanation with each session id replaced by the name of the stream it holds."""
    out = {k: explained[k] for k in COMPARED}
    reasons = []
    for reason in out["Reasons"]:
        for sid, name in sessions.items():
            reason = reason.replace(f"session {sid} ", f"session <{name}> ")
        reasons.append(reason)
    out["Reasons"] = reasons
    return out


def test_simulation_matches_the_live_daemon(server: AudioServer, daemon: DaemonProcess,
                                            tone: Path, tmp_path: Path) -> None:
    procs = {}
    for name, role in PLAYED:
        procs[name] = play(server, tone, role=role, props={"application.name": name})
        wait_stream(server, procs[name])
    wait_volume(server, procs["game"], ducked(65536, 0.2))
    wait_volume(server, procs["browser"], ducked(65536, 0.2))

    live: dict[str, dict] = {}
    properties: dict[str, dict[str, str]] = {}
    for name, proc in procs.items():
        info = wait_stream(server, proc)
        key = f"sink-input:{info.index}"
        done = daemon.ctl("explain", key, "--json")
        assert done.returncode == 0, done.stderr
        live[name] = json.loads(done.stdout)
        properties[name] = {k: v for k, v in info.proplist.items()
                            if k.startswith(("application.", "media.role"))}
    scenario = {"schema": 1, "activate": [name for name, _ in PLAYED],
                "streams": {name: {"properties": props} for name, props in properties.items()}}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    done = daemon.ctl("policy", "simulate", "--json", str(path))
    assert done.returncode == 0, done.stderr
    simulated = {s["Target"]: s for s in json.loads(done.stdout)["streams"]}

    live_sessions = {live[n]["Session"]: n for n in live}
    simulated_sessions = {simulated[n]["Session"]: n for n in simulated}
    for name in procs:
        assert comparable(simulated[name], simulated_sessions) == \
            comparable(live[name], live_sessions), name
    assert live["game"]["Effect"] == "duck 0.20" and live["call"]["Effect"] == "none"
