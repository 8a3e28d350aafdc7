"""The daemon's recordings around their jobs (recorder/recorders.py) on a scripted server
(:mod:`tests.support.fake_backend`), with the real runtime, sessions and routes wired as app.py
wires them: the bounds, the caller's microphone permission, each recording's session, the
caller leaving the bus, the crash markers and their repair, a bad file descriptor. The
recordings on real servers: tests/integration/test_recorder.py."""

from __future__ import annotations

import asyncio
import json
import math
import os
import stat
import struct
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import soundfile

from audiopolicyd.errors import InvalidArgument, NotAllowed, TooManySessions
from audiopolicyd.identity import Identity, caller_app
from audiopolicyd.microphone.access import MicrophoneAccess
from audiopolicyd.microphone.stores import Decision
from audiopolicyd.recorder.job import BLOCK_MS, RATE, State
from audiopolicyd.recorder.params import parse
from audiopolicyd.recorder.recorders import (
    KEEP_ENDED, MAX_PER_CLIENT, MAX_RECORDINGS, Recorders,
)

from .test_runtime import server, start, until  # noqa: F401 (fixtures)
from .test_runtime_session_routes import Wired

pytestmark = pytest.mark.usefixtures("collect_garbage")

BLOCK = RATE * BLOCK_MS // 1000
#: The fake server's default source, and its default sink (whose monitor ``listen`` records).
MIC, SPEAKER = "mic", "speaker"
#: Every caller is this process running one program: one app, whatever its connection.
IDENTITY = Identity(pid=os.getpid(), uid=os.getuid(), exe="/usr/bin/rec")
APP = caller_app(IDENTITY).app_id


def block(value: int) -> bytes:
    """One block of the capture, every sample *value*."""
    return np.full(BLOCK, value, dtype="<i2").tobytes()


def dbfs(value: int) -> float:
    """The level of a block of *value* (:attr:`RecordJob.level_dbfs`)."""
    return 20 * math.log10(abs(value) / 32768)


async def ended(recording):
    """Stop a recording (``Stop()``) and wait for its end, what Recorders does at the end
    included (its task's callbacks run before this wait's)."""
    recording.job.stop()
    await asyncio.wait([recording.task])


def path_of(recording) -> Path:
    return Path(unquote(urlparse(recording.job.url).path))


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def killed_wav(path: Path, frames: int) -> np.ndarray:
    """A mono WAV as a kill leaves it: its data written, its header's sizes those of an empty
    file (as written at open), half a frame at the end. Returns the samples written."""
    samples = (np.arange(frames) % 2000 - 1000).astype(np.int16)
    soundfile.write(path, samples, RATE, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    data_at = raw.index(b"data") + 8
    raw[4:8] = struct.pack("<I", data_at - 8)
    raw[data_at - 4:data_at] = struct.pack("<I", 0)
    path.write_bytes(bytes(raw) + b"\x01")
    return samples


class Rig:
    """A :class:`Recorders` on a started runtime, its sessions, routes and microphone access
    as app.py builds them; what it dropped in :attr:`dropped`."""

    def __init__(self, fake, wired: Wired, access: MicrophoneAccess, tmp_path: Path):
        self.server = fake
        self.wired = wired
        self.sessions = wired.sessions
        self.access = access
        self.directory = tmp_path / "recordings"
        self.state_dir = tmp_path / "state"
        self.markers = self.state_dir / "recordings"
        runtime = wired.daemon.reconciler
        self.recorders = Recorders(wired.daemon.backend, self.sessions, access,
                                   lambda: runtime.devices, wired.routes,
                                   directory=self.directory, state_dir=self.state_dir)
        self.dropped: list = []
        self.recorders.on_dropped.append(self.dropped.append)

    async def record(self, owner: str = ":1.5", fd: int | None = None, **params):
        return await self.recorders.record(owner, IDENTITY, parse(params), fd)

    async def recording(self, owner: str = ":1.5", **params):
        """A recording under way (in ``recording``, its capture open)."""
        recording = await self.record(owner, **params)
        await until(lambda: recording.job.state is State.RECORDING, "the recording to start")
        return recording

    async def feed(self, recording, device: str, blocks: int) -> None:
        """Hand the capture of *device* *blocks* blocks (the last one louder) and wait until
        *recording* has taken them all (its level is the last block's)."""
        self.server.feed(device, *[block(1000)] * (blocks - 1), block(2000))
        await until(lambda: recording.job.level_dbfs == pytest.approx(dbfs(2000)),
                    "the last block taken")


@pytest.fixture
async def rig(server, start, policies, pm, tmp_path):  # noqa: F811 (fixtures)
    """``await rig(microphone=False)``: a :class:`Rig`; with *microphone*, the runtime has a
    permission broker (decisions in memory, every app undetermined)."""
    rigs: list[Rig] = []

    async def make(microphone: bool = False) -> Rig:
        daemon = await start(microphone=microphone)
        wired = Wired(daemon, policies, pm)
        access = MicrophoneAccess(daemon.reconciler.microphone)
        wired.sessions.on_app_activated.append(access.activated)
        wired.sessions.listeners.append(access.session_event)
        rigs.append(Rig(server, wired, access, tmp_path))
        return rigs[-1]

    yield make
    for made in rigs:
        await made.recorders.close()


# -- bounds --------------------------------------------------------------------------------------

async def test_a_connection_past_max_per_client_gets_too_many_sessions(rig):
    r = await rig()
    for _ in range(MAX_PER_CLIENT):
        await r.recording(":1.5")
    with pytest.raises(TooManySessions):
        await r.record(":1.5")
    assert len(r.recorders.recordings) == MAX_PER_CLIENT
    assert sum(s.owner == ":1.5" for s in r.sessions.sessions.values()) == MAX_PER_CLIENT
    await r.recording(":1.6")  # another connection still records


async def test_past_max_recordings_in_all_gets_too_many_sessions(rig):
    r = await rig()
    owners = [f":1.{10 + i}" for i in range(MAX_RECORDINGS // MAX_PER_CLIENT)]
    for owner in owners:
        for _ in range(MAX_PER_CLIENT):
            await r.recording(owner)
    assert len(r.recorders.recordings) == MAX_RECORDINGS
    with pytest.raises(TooManySessions):
        await r.record(":1.99")
    assert not any(s.owner == ":1.99" for s in r.sessions.sessions.values())


async def test_an_ended_recording_frees_its_slot(rig):
    r = await rig()
    first, *_ = [await r.recording() for _ in range(MAX_PER_CLIENT)]
    await ended(first)
    assert first.job.state is State.FINISHED
    again = await r.recording()
    assert again.job.state is State.RECORDING
    assert first.control_id in r.recorders.recordings  # kept, ended, for its properties


async def test_at_most_keep_ended_ended_recordings_are_kept_the_oldest_dropped_first(rig):
    r = await rig()
    made = []
    for _ in range(KEEP_ENDED + 2):
        made.append(await r.recording())
        await ended(made[-1])
    assert r.dropped == made[:2]
    assert list(r.recorders.recordings.values()) == made[2:]


# -- permission ----------------------------------------------------------------------------------

async def test_a_denied_app_gets_not_allowed_for_speak_and_nothing_is_created(rig):
    r = await rig(microphone=True)
    await r.access.broker.decide(APP, Decision.DENIED, "test")
    created = []
    r.recorders.on_created.append(created.append)
    with pytest.raises(NotAllowed):
        await r.record(direction="speak")
    assert not r.recorders.recordings and not created
    assert not r.sessions.sessions
    assert not r.directory.exists() or not any(r.directory.iterdir())
    assert not r.markers.exists() or not any(r.markers.iterdir())


async def test_an_encoder_that_cannot_open_leaves_no_file_and_no_session(rig, monkeypatch):
    from audiopolicyd.recorder import encode

    def refuse(target, *args):
        Path(target).write_bytes(b"RIFF")  # it created the file, then failed
        raise OSError(28, "No space left on device")

    r = await rig()
    monkeypatch.setattr(encode, "open_writer", refuse)
    with pytest.raises(OSError, match="No space left"):
        await r.record(direction="listen")
    assert not r.recorders.recordings and not r.sessions.sessions
    assert r.directory.is_dir() and not any(r.directory.iterdir())


async def test_a_denied_app_gets_not_allowed_for_stereo(rig):
    r = await rig(microphone=True)
    await r.access.broker.decide(APP, Decision.DENIED, "test")
    with pytest.raises(NotAllowed):
        await r.record(stereo=True)
    assert not r.recorders.recordings and not r.sessions.sessions


@pytest.mark.parametrize("direction,decision,device", [
    ("listen", Decision.DENIED, SPEAKER),  # a listen recording needs no permission
    ("speak", Decision.GRANTED, MIC),
])
async def test_a_listen_recording_or_a_granted_app_records(rig, direction, decision, device):
    r = await rig(microphone=True)
    await r.access.broker.decide(APP, decision, "test")
    recording = await r.recording(direction=direction)
    await r.feed(recording, device, 5)
    assert recording.job.state is State.RECORDING


async def test_an_undetermined_app_waits_in_starting_and_a_denial_ends_it_as_error(rig):
    r = await rig(microphone=True)
    recording = await r.record(direction="speak")
    await until(lambda: APP in r.access.broker.requests, "the app asked for")
    assert recording.job.state is State.STARTING
    assert not recording.session.active
    await r.access.broker.decide(APP, Decision.DENIED, "test")
    await recording.job.done.wait()
    assert recording.job.state is State.ERROR and "denied" in recording.job.error


async def test_a_caller_that_leaves_while_its_app_waits_for_the_user_gets_no_input(rig):
    r = await rig(microphone=True)
    recording = await r.record(direction="speak")
    await until(lambda: APP in r.access.broker.requests, "the app asked for")
    r.recorders.peer_gone(recording.owner)
    await recording.job.done.wait()
    assert recording.job.state is State.NO_INPUT and recording.job.result == "failed"


# -- sessions ------------------------------------------------------------------------------------

async def test_a_speak_recording_has_a_record_session_active_while_it_records(rig):
    r = await rig()
    recording = await r.recording(direction="speak")
    session = recording.session
    assert r.sessions.get(session.id, ":1.5") is session
    assert session.category == "record"
    assert session.active
    assert session.name == "rec (recorder)"


@pytest.mark.parametrize("params", [{"direction": "listen"}, {"stereo": True}],
                         ids=["listen", "stereo"])
async def test_listen_and_stereo_have_a_play_and_record_session_mixing_with_others(rig, params):
    r = await rig()
    recording = await r.recording(**params)
    session = recording.session
    assert session.category == "playAndRecord"
    assert session.options == {"mixWithOthers"}
    assert session.active


async def test_the_session_is_removed_when_the_recording_ends(rig):
    r = await rig()
    recording = await r.recording()
    session = recording.session
    await ended(recording)
    assert session.id not in r.sessions.sessions
    assert (session.id, "Removed", {}) in r.wired.events


# -- the caller leaving --------------------------------------------------------------------------

async def test_the_caller_leaving_stops_its_recordings_with_a_valid_file(rig):
    r = await rig()
    recording = await r.recording(":1.5")
    other = await r.recording(":1.6", direction="listen")  # the fake's captures of a device
    await r.feed(recording, MIC, 30)  # share its blocks: one capture of the mic
    r.recorders.peer_gone(":1.5")
    await recording.job.done.wait()
    assert recording.job.state is State.FINISHED and recording.job.result == "success"
    data, rate = soundfile.read(path_of(recording), dtype="int16")
    assert rate == RATE and len(data) == 30 * BLOCK
    assert other.job.state is State.RECORDING  # another connection's goes on


async def test_the_caller_leaving_drops_its_recordings(rig):
    r = await rig()
    done = await r.recording(":1.5")
    await ended(done)
    running = await r.recording(":1.5")
    kept = await r.recording(":1.6")
    await ended(kept)
    r.recorders.peer_gone(":1.5")
    assert r.dropped == [done]  # ended: dropped at once
    await until(lambda: running in r.dropped, "the running one dropped once ended")
    assert list(r.recorders.recordings.values()) == [kept]
    assert running.session.id not in r.sessions.sessions


# -- crash markers -------------------------------------------------------------------------------

async def test_a_recording_under_way_has_a_marker_removed_at_its_end(rig):
    r = await rig()
    recording = await r.recording()
    marker = r.markers / f"{recording.control_id}.json"
    entry = json.loads(marker.read_text())
    assert entry["format"] == "wav"
    assert Path(entry["path"]).resolve() == path_of(recording).resolve()
    await ended(recording)
    assert not marker.exists()


async def test_recover_repairs_a_wav_a_kill_cut_and_removes_its_marker(rig, tmp_path):
    r = await rig()
    r.markers.mkdir(parents=True)
    path = tmp_path / "cut.wav"
    samples = killed_wav(path, RATE // 2)
    marker = r.markers / "0123abcd.json"
    marker.write_text(json.dumps({"path": str(path), "format": "wav"}))
    again = Recorders(r.wired.daemon.backend, r.sessions, r.access, lambda: {},
                      directory=r.directory, state_dir=r.state_dir)
    again.recover()
    data, rate = soundfile.read(path, dtype="int16")
    assert rate == RATE and np.array_equal(data, samples)
    assert not marker.exists()


async def test_recover_removes_a_marker_whose_file_is_gone(rig, tmp_path):
    r = await rig()
    r.markers.mkdir(parents=True)
    marker = r.markers / "0123abcd.json"
    marker.write_text(json.dumps({"path": str(tmp_path / "gone.wav"), "format": "wav"}))
    r.recorders.recover()  # never raises
    assert not marker.exists()


# -- the caller's file ---------------------------------------------------------------------------

async def test_a_pipe_is_invalid_and_closed(rig):
    r = await rig()
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(InvalidArgument, match="regular file"):
            await r.record(fd=write_end)
        assert closed(write_end)
    finally:
        os.close(read_end)
    assert not r.recorders.recordings and not r.sessions.sessions


async def test_a_read_only_file_is_invalid_and_closed(rig, tmp_path):
    r = await rig()
    (tmp_path / "out.wav").touch()
    fd = os.open(tmp_path / "out.wav", os.O_RDONLY)
    with pytest.raises(InvalidArgument, match="O_RDWR"):
        await r.record(fd=fd)
    assert closed(fd)
    assert not r.recorders.recordings and not r.sessions.sessions


async def test_the_callers_file_is_recorded_into_and_closed_at_the_end(rig, tmp_path):
    r = await rig()
    path = tmp_path / "mine.wav"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    recording = await r.recording(fd=fd)
    assert path_of(recording) == path.resolve()
    await r.feed(recording, MIC, 10)
    await ended(recording)
    assert closed(fd)
    assert stat.S_ISREG(os.stat(path).st_mode)
    data, _ = soundfile.read(path, dtype="int16")
    assert len(data) == 10 * BLOCK
