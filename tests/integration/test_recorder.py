"""The recorder (SWML's ``record`` verb) on real servers, through the real CLI
(``audiopolicyctl record``) and the daemon's D-Bus API.

The microphone is ``voice``, a pipe source whose content the test controls (silence, and what
:func:`~tests.support.servers.speak_into` hands it: espeak-ng speech, sox DTMF tones), made
the server's default source. What was recorded is measured in the file the daemon wrote.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.support.audio import espeak
from tests.support.daemon import AUDIOPOLICYCTL, DaemonProcess
from tests.support.microphone import ctl_ok
from tests.support.processes import LineReader, stop_process, wait_for
from tests.support.servers import AudioServer, add_microphone, pulse, speak_into

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

RATE = 48000
#: The app the daemon knows ``audiopolicyctl`` by (a Python console script: the interpreter).
CTL_APP = "exe:" + os.path.realpath(sys.executable)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 3 s of espeak-ng speech, 48 kHz mono int16, peak -6 dBFS."""
    return espeak("Hello, please leave a message after the beep.", RATE, 16384)


def stereo_bytes(mono: np.ndarray) -> bytes:
    return np.column_stack((mono, mono)).astype("<i2").tobytes()


def dtmf(key: str, seconds: float = 0.25) -> np.ndarray:
    """A key's tone made by sox (two sines, -6 dBFS each... mixed), 48 kHz mono int16."""
    rows, cols = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
    keys = ("123A", "456B", "789C", "*0#D")
    row = next(i for i, r in enumerate(keys) if key in r)
    col = keys[row].index(key)
    out = subprocess.run(["sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed",
                          "-t", "raw", "-", "synth", str(seconds), "sine", str(rows[row]),
                          "sine", str(cols[col]), "remix", "-", "vol", "0.5"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(out, dtype="<i2")


@pytest.fixture
def voice(server: AudioServer, daemon: DaemonProcess) -> str:
    """The scripted microphone ``voice``, the default source; the CLI's app granted."""
    name = add_microphone(server, "voice", scripted=True)
    with pulse(server) as p:
        p.source_default_set(name)
    ctl_ok(daemon, "grant", CTL_APP)
    return name


def start_record(daemon: DaemonProcess, *args: str) -> tuple[subprocess.Popen, LineReader]:
    """``audiopolicyctl record --json ARGS`` running; its stdout's lines."""
    proc = subprocess.Popen([*AUDIOPOLICYCTL, "record", "--json", *args], env=daemon.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, LineReader(proc.stdout)


def statuses(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith('{"event_type"')]


def wait_recording(reader: LineReader) -> None:
    wait_for(lambda: any('"state": "recording"' in line for line in reader.lines), 20,
             "the recording to start")


def finish(proc: subprocess.Popen, reader: LineReader, timeout: float = 30) -> tuple[int, dict]:
    """The CLI's exit code and its closing JSON line."""
    code = proc.wait(timeout)
    reader.join(5)
    closing = json.loads(reader.lines[-1])
    return code, closing


def test_speech_then_silence_finishes_by_the_silence_rule_and_the_file_holds_it(
        server: AudioServer, daemon: DaemonProcess, voice: str, speech: np.ndarray,
        tmp_path: Path) -> None:
    out = tmp_path / "message.wav"
    proc, reader = start_record(daemon, "--end-silence-timeout", "1.5", "--initial-timeout",
                                "10", str(out))
    try:
        wait_recording(reader)
        speak_into(server, voice, stereo_bytes(speech))
        code, closing = finish(proc, reader)
    finally:
        stop_process(proc)
    assert code == 0, proc.stderr.read()
    assert closing == {"record_url": out.resolve().as_uri(), "record_result": "success"}
    states = [s["params"]["state"] for s in statuses(reader.lines)]
    assert states == ["recording", "finished"]
    data, rate = soundfile.read(out, dtype="int16")
    assert rate == RATE
    loud = np.flatnonzero(np.abs(data) > 1000)
    assert len(loud), "the speech is not in the file"
    # the speech is there whole (its length, to a few blocks: a loaded machine's feeder may
    # lose one), and 1.5 s of silence after it ended the recording (the silence rule, not
    # max_length)
    spoken = np.flatnonzero(np.abs(speech) > 1000)
    assert abs((loud[-1] - loud[0]) - (spoken[-1] - spoken[0])) / RATE < 0.06
    assert 1.0 <= (len(data) - loud[-1]) / RATE <= 1.7
    final = statuses(reader.lines)[-1]["params"]
    assert final["size"] == out.stat().st_size and abs(final["duration"] - len(data) / RATE) \
        < 0.02


def run_record(daemon: DaemonProcess, *args: str, timeout: float = 30) -> tuple[int, list[dict],
                                                                               dict, str]:
    """``audiopolicyctl record --json ARGS`` to its end: exit code, statuses, closing line,
    stderr."""
    done = subprocess.run([*AUDIOPOLICYCTL, "record", "--json", *args], env=daemon.env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    lines = done.stdout.splitlines()
    closing = json.loads(lines[-1]) if lines else {}
    return done.returncode, statuses(lines), closing, done.stderr


def test_no_speech_within_initial_timeout_is_no_input(
        daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    out = tmp_path / "nothing.wav"
    code, states, closing, err = run_record(daemon, "--initial-timeout", "1", str(out))
    assert code == 1, err
    assert closing["record_result"] == "failed"
    assert [s["params"]["state"] for s in states] == ["recording", "no_input"]
    final = states[-1]["params"]
    assert final["size"] == out.stat().st_size and {"start_time", "end_time"} <= set(final)
    data, _ = soundfile.read(out, dtype="int16")
    assert abs(len(data) / RATE - 1.0) <= 0.02 and not np.any(data)  # digital silence kept


def test_a_terminator_digit_ends_it_and_its_tone_is_not_in_the_file(
        server: AudioServer, daemon: DaemonProcess, voice: str, speech: np.ndarray,
        tmp_path: Path) -> None:
    out = tmp_path / "hash.wav"
    proc, reader = start_record(daemon, "--terminators", "#", "--end-silence-timeout", "0",
                                str(out))
    try:
        wait_recording(reader)
        pause = np.zeros(RATE // 5, dtype=np.int16)
        speak_into(server, voice, stereo_bytes(np.concatenate((speech, pause, dtmf("#"),
                                                                pause))))
        code, closing = finish(proc, reader)
    finally:
        stop_process(proc)
    assert code == 0 and closing["record_result"] == "success"
    data, _ = soundfile.read(out, dtype="int16")
    loud = np.flatnonzero(np.abs(data) > 1000)
    # the file ends with the 200 ms pause after the speech: the tone (and what followed) is
    # cut where the tone began, to a few ms
    tail = (len(data) - loud[-1]) / RATE
    expected = (len(speech) - np.flatnonzero(np.abs(speech) > 1000)[-1]) / RATE + 0.2
    assert abs(tail - expected) <= 0.015, (tail, expected)
    assert not np.any(data[-int(0.15 * RATE):])


def test_max_length_ends_it_and_each_format_opens_with_its_duration(
        daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    for fmt in ("wav", "mp3", "mp4"):
        out = tmp_path / f"long.{fmt}"
        code, states, closing, err = run_record(daemon, "--max-length", "1.5",
                                                "--initial-timeout", "0", str(out))
        assert code == 0, err
        assert states[-1]["params"]["record"]["audio"]["format"] == fmt
        if fmt == "mp4":
            import av
            with av.open(str(out)) as container:
                stream = container.streams.audio[0]
                frames = sum(f.samples for f in container.decode(stream))
                duration = frames / stream.rate
        else:
            duration = soundfile.info(out).duration
        assert abs(duration - 1.5) <= 0.1, (fmt, duration)


def test_a_denied_app_cannot_record(daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    ctl_ok(daemon, "deny", CTL_APP)
    code, states, _, err = run_record(daemon, str(tmp_path / "no.wav"))
    assert code == 2 and "NotAllowed" in err and states == []
    # listening needs no microphone
    code, states, _, err = run_record(daemon, "--direction", "listen", "--initial-timeout",
                                      "0.5", str(tmp_path / "yes.wav"))
    assert code == 1 and states[-1]["params"]["state"] == "no_input", err


def test_the_microphone_going_away_ends_it_as_error_with_a_valid_file(
        server: AudioServer, daemon: DaemonProcess, voice: str, speech: np.ndarray,
        tmp_path: Path) -> None:
    out = tmp_path / "cut.wav"
    proc, reader = start_record(daemon, "--initial-timeout", "0", str(out))
    try:
        wait_recording(reader)
        speak_into(server, voice, stereo_bytes(speech))
        wait_for(lambda: out.stat().st_size > RATE * 2, 10, "a second recorded")
        with pulse(server) as p:
            module = next(s.owner_module for s in p.source_list() if s.name == voice)
            p.module_unload(module)
        code, closing = finish(proc, reader)
    finally:
        stop_process(proc)
    assert code == 1 and closing["record_result"] == "failed"
    assert statuses(reader.lines)[-1]["params"]["state"] == "error"
    data, _ = soundfile.read(out, dtype="int16")
    assert len(data) >= RATE and np.any(np.abs(data) > 1000)
    daemon.assert_running()


def call_output(daemon: DaemonProcess) -> str:
    """The sink ``playAndRecord`` (a ``listen`` or stereo recording's session) is routed to,
    as ``audiopolicyctl routes`` shows it (a null sink's uid is its name)."""
    done = daemon.ctl("routes", "--json")
    assert done.returncode == 0, done.stderr
    row = next(r for r in json.loads(done.stdout)["Categories"]
               if r["Category"] == "playAndRecord")
    assert row["Output"], row
    return row["Output"].split("/")[0]


def tone_level(audio: np.ndarray, freq: float, rate: int = RATE) -> float:
    """The amplitude of *freq* in *audio* (a DFT term, normalised: a full-scale sine ~ 1)."""
    if not len(audio):
        return 0.0
    t = np.arange(len(audio)) / rate
    term = np.abs(np.dot(audio.astype(np.float64), np.exp(-2j * np.pi * freq * t)))
    return float(2 * term / len(audio) / 32768)


class StatusServer:
    """A local HTTP server (127.0.0.1) that keeps every POST's JSON body."""

    def __init__(self) -> None:
        import http.server
        import threading

        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers["Content-Length"])
                bodies.append((self.headers["Content-Type"], json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/status"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_every_status_is_posted_in_order_with_the_seeds_shape(
        daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    http = StatusServer()
    try:
        code, states, closing, err = run_record(daemon, "--max-length", "1",
                                                "--initial-timeout", "0", "--status-url",
                                                http.url, str(tmp_path / "cb.wav"))
        assert code == 0, err
        wait_for(lambda: len(http.bodies) >= 2, 10, "two statuses posted")
    finally:
        http.close()
    assert [ctype for ctype, _ in http.bodies] == ["application/json"] * 2
    posted = [body for _, body in http.bodies]
    assert [p["params"]["state"] for p in posted] == ["recording", "finished"]
    assert posted == states  # the D-Bus signal carries the same payload
    first, last = posted
    assert set(first) == {"event_type", "event_channel", "timestamp", "project_id", "space_id",
                          "params"}
    assert first["event_type"] == "calling.call.record"
    assert first["event_channel"] == f"swml:{first['space_id']}"
    assert set(first["params"]) == {"state", "control_id", "call_id", "node_id", "url",
                                    "recording_id", "record"}
    assert set(last["params"]) == set(first["params"]) | {"duration", "size", "start_time",
                                                          "end_time"}
    assert last["params"]["record"] == {"audio": {"format": "wav", "direction": "speak",
                                                  "stereo": False}}
    assert last["params"]["url"] == closing["record_url"]
    assert abs(last["params"]["duration"] - 1.0) <= 0.02


def test_other_output_is_silenced_while_it_records_speech_and_restored_after(
        server: AudioServer, daemon: DaemonProcess, voice: str, tone: Path,
        tmp_path: Path) -> None:
    from tests.support.clients import play
    from tests.support.streams import wait_muted, wait_stream

    music = play(server, tone, role="music")
    wait_stream(server, music)
    proc, reader = start_record(daemon, "--max-length", "3", "--initial-timeout", "0",
                                str(tmp_path / "quiet.wav"))
    try:
        wait_recording(reader)
        wait_muted(server, music, True)  # a voicemail is recorded in quiet
        code, closing = finish(proc, reader)
    finally:
        stop_process(proc)
    assert code == 0
    wait_muted(server, music, False)


def test_a_listen_recording_mixes_and_stereo_has_the_microphone_left_and_the_output_right(
        server: AudioServer, daemon: DaemonProcess, voice: str, speech: np.ndarray,
        tone: Path, tmp_path: Path) -> None:
    from tests.support.clients import play
    from tests.support.streams import stream_state, wait_stream

    # the other party of a call (role phone: playAndRecord), on the call's route, where the
    # recording's session (playAndRecord too) hears
    music = play(server, tone, role="phone")
    wait_stream(server, music)
    out = tmp_path / "call.wav"
    proc, reader = start_record(daemon, "--stereo", "--max-length", "3", "--initial-timeout",
                                "0", str(out))
    try:
        wait_recording(reader)
        speak_into(server, voice, stereo_bytes(speech))
        code, closing = finish(proc, reader)
        assert not stream_state(server, music)[1]  # it mixed: nothing was silenced
    finally:
        stop_process(proc)
    assert code == 0
    data, _ = soundfile.read(out, dtype="int16")
    left, right = data[:, 0], data[:, 1]
    assert tone_level(right, 440) > 0.1 > tone_level(left, 440) * 10  # the output: right
    assert np.count_nonzero(np.abs(left) > 1000) > RATE // 10  # the speech: left


def test_the_beep_plays_on_the_output_before_recording_and_is_not_in_the_file(
        server: AudioServer, daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    from tests.support.audio import RAW_RATE
    from tests.support.clients import record as parecord
    from tests.support.streams import wait_stream

    heard = tmp_path / "output.raw"
    # the output a listen recording's session is routed to, recorded with a meter's role
    # (audioProcessing, which silences nobody; record would silence the beep)
    monitor = parecord(server, device=call_output(daemon) + ".monitor", role="music",
                       path=heard, latency_ms=20)
    wait_stream(server, monitor, kind="source-output")
    out = tmp_path / "after-beep.wav"
    code, states, closing, err = run_record(daemon, "--beep", "--direction", "listen",
                                            "--max-length", "1", "--initial-timeout", "0",
                                            str(out))
    assert code == 0, err
    stop_process(monitor)
    output = np.frombuffer(heard.read_bytes(), dtype="<i2")[::2]
    # the beep was heard on the output: -12 dBFS (0.25) in its loudest 100 ms
    window = RAW_RATE // 10
    assert max(tone_level(output[i:i + window], 1000, RAW_RATE)
               for i in range(0, len(output) - window, window // 2)) > 0.15
    data, _ = soundfile.read(out, dtype="int16")
    assert tone_level(data, 1000) < 0.005  # and the recording of that output has none of it


def test_a_caller_that_leaves_the_bus_stops_its_recording_with_a_valid_file(
        daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    out = tmp_path / "left.mp3"
    proc, reader = start_record(daemon, "--initial-timeout", "0", str(out))
    try:
        wait_recording(reader)
        wait_for(lambda: out.stat().st_size > 8000, 10, "half a second recorded")
        proc.kill()
        proc.wait(5)
    finally:
        stop_process(proc)
    wait_for(lambda: "ended: finished" in daemon.log_text(), 10, "the recording to end")
    assert soundfile.info(out).duration >= 0.4
    daemon.assert_running()


def test_a_recording_cut_by_a_kill_is_repaired_at_the_next_start(
        daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    out = tmp_path / "killed.wav"
    proc, reader = start_record(daemon, "--initial-timeout", "0", str(out))
    try:
        wait_recording(reader)
        wait_for(lambda: out.stat().st_size > RATE * 2 * 2, 10, "two seconds recorded")
        daemon.kill()
        code = proc.wait(10)
    finally:
        stop_process(proc)
    assert code == 2  # the CLI says the daemon left
    daemon.start()
    wait_for(lambda: "repaired" in daemon.log_text(), 10, "the repair at start")
    info = soundfile.info(out)
    assert info.frames >= 2 * RATE and info.samplerate == RATE


def test_the_seeds_swml_example_records_and_plays_back(
        server: AudioServer, daemon: DaemonProcess, voice: str, speech: np.ndarray) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "record-and-play.yaml"
    proc = subprocess.Popen([*AUDIOPOLICYCTL, "swml", "--json", str(example)], env=daemon.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    reader = LineReader(proc.stdout)
    try:
        wait_recording(reader)
        speak_into(server, voice, stereo_bytes(speech))
        code = proc.wait(60)
    finally:
        stop_process(proc)
    reader.join(5)
    assert code == 0, proc.stderr.read()
    variables = json.loads(reader.lines[-1])
    assert variables["record_result"] == "success"
    path = Path(variables["record_url"].removeprefix("file://"))
    # in the recordings directory: $XDG_DATA_HOME/audiopolicyd/recordings
    assert path.parent == daemon.data_home / "audiopolicyd" / "recordings"
    assert soundfile.info(path).duration > 2


def test_a_full_disk_ends_it_as_error_with_what_fitted_kept_valid(
        daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    from tests.integration.test_faults import small_filesystem

    with small_filesystem(tmp_path / "small", "256k") as small:
        out = small / "full.wav"
        code, states, closing, err = run_record(daemon, "--initial-timeout", "0",
                                                "--max-length", "30", str(out))
        assert code == 1, err
        assert states[-1]["params"]["state"] == "error"
        # a valid WAV of what fitted (256 KiB hold 2.7 s of 48 kHz mono; the file system's
        # own blocks take some)
        info = soundfile.info(out)
        assert info.duration >= 1.5 and out.stat().st_size <= 256 * 1024
    daemon.assert_running()


# -- over D-Bus, as an app would call it ----------------------------------------------------

RECORDER_IFACE = "io.github.audiopolicyd.AudioPolicy1.Recorder"
ERROR = "io.github.audiopolicyd.AudioPolicy1.Error."


async def _bus(daemon: DaemonProcess):
    from audiopolicyd.buswriter import MessageBus

    return await MessageBus(bus_address=daemon.env["DBUS_SESSION_BUS_ADDRESS"],
                            negotiate_unix_fd=True).connect()


async def _call(bus, member: str, signature: str = "", body: list | None = None,
                path: str = "/io/github/audiopolicyd/AudioPolicy1",
                interface: str = "io.github.audiopolicyd.AudioPolicy1.Manager", fds=()):
    from dbus_fast import Message

    return await asyncio.wait_for(bus.call(Message(
        destination="io.github.audiopolicyd.AudioPolicy1", path=path, interface=interface,
        member=member, signature=signature, body=body or [], unix_fds=list(fds))), 30)


async def _get(bus, path: str, name: str):
    reply = await _call(bus, "Get", "ss", [RECORDER_IFACE, name], path,
                        "org.freedesktop.DBus.Properties")
    return reply.body[0].value


def test_bad_params_and_files_get_named_errors_and_nothing_records(
        daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    from dbus_fast import Variant

    async def go() -> list[tuple[str, str]]:
        bus = await _bus(daemon)
        out = []
        try:
            for params in ({"max_length": Variant("s", "10")},
                           {"format": Variant("s", "flac")},
                           {"input_sensitivity": Variant("d", 101.0)},
                           {"terminators": Variant("s", "#" * 100000)},
                           {"status_url": Variant("s", "file:///etc/passwd")},
                           {"max_lenght": Variant("d", 3.0)},
                           {"stereo": Variant("as", ["yes"])}):
                reply = await _call(bus, "Record", "a{sv}", [params])
                out.append((reply.error_name or "", str(reply.body[0])[:200]))
            read_only = os.open(tmp_path / "ro.wav", os.O_RDONLY | os.O_CREAT, 0o644)
            read, write = os.pipe()
            for fd in (read_only, write):
                reply = await _call(bus, "RecordToFile", "a{sv}h", [{}, 0], fds=[fd])
                out.append((reply.error_name or "", str(reply.body[0])[:200]))
            for fd in (read_only, read, write):
                os.close(fd)
        finally:
            bus.disconnect()
        return out

    answers = asyncio.run(go())
    assert [name for name, _ in answers] == [ERROR + "InvalidArgument"] * 9, answers
    for (_, message), param in zip(answers, ("max_length", "format", "input_sensitivity",
                                             "terminators", "status_url", "max_lenght",
                                             "stereo", "reading and writing", "regular file")):
        assert param in message and len(message) < 200
    assert not list(daemon.data_home.rglob("*.*"))  # no recording was started
    daemon.assert_running()


def test_foreground_record_answers_when_it_ends_and_pause_keeps_or_skips_time(
        daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    from dbus_fast import Variant

    async def go() -> tuple[float, dict, dict]:
        bus = await _bus(daemon)
        try:
            began = time.monotonic()
            fd = os.open(tmp_path / "fg.wav", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            reply = await _call(bus, "RecordToFile", "a{sv}h",
                                [{"max_length": Variant("d", 1.0),
                                  "initial_timeout": Variant("d", 0.0)}, 0], fds=[fd])
            os.close(fd)
            foreground = time.monotonic() - began
            path = reply.body[0]
            fg = {name: await _get(bus, path, name) for name in ("State", "Result", "Duration")}
            kept = {}
            for behavior in ("silence", "skip"):
                reply = await _call(bus, "Record", "a{sv}",
                                    [{"background": Variant("b", True),
                                      "initial_timeout": Variant("d", 0.0)}])
                path = reply.body[0]
                await asyncio.sleep(1.0)
                await _call(bus, "Pause", "s", [behavior], path, RECORDER_IFACE)
                assert await _get(bus, path, "State") == "paused"
                await asyncio.sleep(1.0)
                await _call(bus, "Resume", "", [], path, RECORDER_IFACE)
                await asyncio.sleep(1.0)
                await _call(bus, "Stop", "", [], path, RECORDER_IFACE)
                for _ in range(50):
                    if await _get(bus, path, "State") == "finished":
                        break
                    await asyncio.sleep(0.1)
                kept[behavior] = await _get(bus, path, "Duration")
            return foreground, fg, kept
        finally:
            bus.disconnect()

    foreground, fg, kept = asyncio.run(go())
    assert foreground >= 1.0  # Record without background answers once it has ended
    assert fg["State"] == "finished" and fg["Result"] == "success"
    assert abs(fg["Duration"] - 1.0) <= 0.02
    assert 2.8 <= kept["silence"] <= 3.4  # the paused second kept as silence
    assert 1.8 <= kept["skip"] <= 2.4  # the paused second dropped


def test_an_undecided_app_waits_for_the_user_and_a_denial_ends_it_as_error(
        daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    ctl_ok(daemon, "reset", CTL_APP)
    proc, reader = start_record(daemon, "--max-length", "1", "--initial-timeout", "0",
                                str(tmp_path / "asked.wav"))
    try:
        from tests.support.microphone import permissions

        wait_for(lambda: permissions(daemon).get(CTL_APP, {}).get("Request") == "pending", 10,
                 "the request for the CLI's app")
        assert not statuses(reader.lines)  # nothing recorded while the user is asked
        ctl_ok(daemon, "grant", CTL_APP)
        code, closing = finish(proc, reader)
    finally:
        stop_process(proc)
    assert code == 0 and closing["record_result"] == "success"
    assert [s["params"]["state"] for s in statuses(reader.lines)] == ["recording", "finished"]

    ctl_ok(daemon, "reset", CTL_APP)
    proc, reader = start_record(daemon, "--max-length", "1", str(tmp_path / "denied.wav"))
    try:
        wait_for(lambda: permissions(daemon).get(CTL_APP, {}).get("Request") == "pending", 10,
                 "the second request")
        ctl_ok(daemon, "deny", CTL_APP)
        code, closing = finish(proc, reader)
    finally:
        stop_process(proc)
    assert code == 1 and closing["record_result"] == "failed"
    assert [s["params"]["state"] for s in statuses(reader.lines)] == ["error"]


def test_a_server_restart_ends_it_as_error_and_the_daemon_goes_on(
        server: AudioServer, daemon: DaemonProcess, voice: str, tmp_path: Path) -> None:
    out = tmp_path / "restart.wav"
    proc, reader = start_record(daemon, "--initial-timeout", "0", str(out))
    try:
        wait_recording(reader)
        wait_for(lambda: out.stat().st_size > RATE * 2, 10, "a second recorded")
        server.restart()
        code, closing = finish(proc, reader)
    finally:
        stop_process(proc)
    assert code == 1 and statuses(reader.lines)[-1]["params"]["state"] == "error"
    assert soundfile.info(out).duration >= 1.0
    daemon.wait_connected()
