"""The recorder (SWML's ``record`` verb) on real servers, through the real CLI
(``audiopolicyctl record``) and the daemon's D-Bus API.

The microphone is ``voice``, a pipe source whose content the test controls (silence, and what
:func:`~tests.support.servers.speak_into` hands it: espeak-ng speech, sox DTMF tones), made
the server's default source. What was recorded is measured in the file the daemon wrote.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

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
def speech(tmp_path_factory) -> np.ndarray:
    """About 3 s of espeak-ng speech, 48 kHz mono int16, peak -6 dBFS."""
    folder = tmp_path_factory.mktemp("speech")
    raw, wav = folder / "s.wav", folder / "s48.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "Hello, please leave a message after the "
                    "beep."], check=True)
    subprocess.run(["sox", str(raw), "-r", str(RATE), "-b", "16", str(wav)], check=True)
    data, _ = soundfile.read(wav, dtype="int16")
    return (data.astype(np.float64) * (16384 / np.abs(data).max())).astype(np.int16)


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
    # the speech is there whole (its length, to a block), and 1.5 s of silence after it
    # ended the recording (the silence rule, not max_length)
    assert abs((loud[-1] - loud[0]) / RATE - (np.flatnonzero(np.abs(speech) > 1000)[-1]
                                              - np.flatnonzero(np.abs(speech) > 1000)[0])
               / RATE) < 0.03
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
