"""SWML documents (audiopolicyd.swml): what load() accepts and refuses, with each message; what
run() does in order, with a fake recorder and player; the parts of the player that need no
audio server (espeak-ng, downloads from a local server, decoding, paplay's command line through a
stand-in paplay)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiopolicyd import swml
from audiopolicyd.swml import Document, PlayVerb, RecordVerb, SwmlError

ROOT = Path(__file__).resolve().parents[2]

#: The seed's "Record some audio and play it back", in YAML and in JSON (shared/seeds/003).
SEED_YAML = """\
version: 1.0.0
sections:
  main:
    - play:
        url: 'say:Start speaking after the beep. Press hash to end recording.'
    - record:
        end_silence_timeout: 3
        beep: true
    - play:
        url: 'say:Recording ${record_result}. Playing back recording:'
    - play:
        url: '${record_url}'
"""
SEED_JSON = """\
{
"version": "1.0.0",
"sections": {
"main": [
{
"play": {
"url": "say:Start speaking after the beep. Press hash to end recording."
}
},
{
"record": {
"end_silence_timeout": 3,
"beep": true
}
},
{
"play": {
"url": "say:Recording ${record_result}. Playing back recording:"
}
},
{
"play": {
"url": "${record_url}"
}
}
]
}
}
"""
SEED = Document("1.0.0", (
    PlayVerb("sections.main[0]",
             ("say:Start speaking after the beep. Press hash to end recording.",)),
    RecordVerb("sections.main[1]", {"end_silence_timeout": 3, "beep": True}),
    PlayVerb("sections.main[2]", ("say:Recording ${record_result}. Playing back recording:",)),
    PlayVerb("sections.main[3]", ("${record_url}",)),
))
SEED_PLAYS = ["say:Start speaking after the beep. Press hash to end recording.",
              "say:Recording success. Playing back recording:",
              "file:///tmp/x.wav"]


def write(tmp_path: Path, text: str | bytes, name: str = "doc.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def main(*verbs: str) -> str:
    """A YAML document whose main section is ``verbs`` (each one flow-style YAML line)."""
    return "version: 1.0.0\nsections:\n  main:\n" + "".join(f"    - {v}\n" for v in verbs)


def refused(tmp_path: Path, text: str | bytes, name: str = "doc.yaml") -> str:
    """load()'s message for a document, with the file name cut off."""
    path = write(tmp_path, text, name)
    with pytest.raises(SwmlError) as info:
        swml.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert message == ": ".join([str(path), info.value.path, info.value.problem])
    return message[len(str(path)) + 2:]


# -- load: the seed ----------------------------------------------------------------------------

def test_the_seed_in_yaml_and_in_json_is_one_document(tmp_path):
    from_yaml = swml.load(write(tmp_path, SEED_YAML, "record.yaml"))
    from_json = swml.load(write(tmp_path, SEED_JSON, "record.json"))
    assert from_yaml == from_json == SEED
    assert from_yaml.file.endswith("record.yaml") and from_json.file.endswith("record.json")


def test_the_example_is_the_seed():
    assert swml.load(ROOT / "examples" / "record-and-play.yaml") == SEED


def test_a_number_as_version_is_taken_as_its_text(tmp_path):
    # `version: 1.0` is a float in YAML; meant as SWML's version
    doc = swml.load(write(tmp_path, main("play: {url: 'silence:1'}").replace("1.0.0", "1.0")))
    assert doc.version == "1.0"


def test_other_sections_are_read_not_run(tmp_path):
    doc = swml.load(write(tmp_path, main("record") + "  other:\n    - answer: {}\n"))
    assert doc.main == (RecordVerb("sections.main[0]"),)
    assert doc.other_sections == ("other",)


@pytest.mark.parametrize("verb", ["record", "'record': null", "record: {}"])
def test_a_record_without_parameters_takes_the_defaults(tmp_path, verb):
    assert swml.load(write(tmp_path, main(verb))).main == (RecordVerb("sections.main[0]"),)


def test_play_takes_urls_volume_and_auto_answer(tmp_path):
    doc = swml.load(write(tmp_path, main(
        "play: {urls: ['say:one', 'file:///tmp/a.wav', 'b.mp3', 'https://example.org/c.mp3',"
        " 'silence:1.5'], volume: -6, auto_answer: false}")))
    assert doc.main == (PlayVerb("sections.main[0]", (
        "say:one", "file:///tmp/a.wav", "b.mp3", "https://example.org/c.mp3", "silence:1.5"),
        -6.0),)


# -- load: what it refuses, and where ----------------------------------------------------------

ANSWER = "sections.main[2]: unknown verb 'answer'; this runner knows play, record"
AWAY = " (it runs sections.main alone: nothing moves to another section)"
ONLY = "; this runner sets record_url, record_result (also as vars.NAME), and nothing else"
SCHEMES = "; this runner plays say:, silence:, file:, http:, https: and paths"
ONE_KEY = "a verb is a mapping of exactly one key (play or record), not of 2 keys"


@pytest.mark.parametrize(("text", "message"), [
    (main("record", "record", "answer: {}"), ANSWER),
    (main("answer"), "sections.main[0]: unknown verb 'answer'; this runner knows play, record"),
    (main("transfer: {dest: other}"),
     f"sections.main[0]: unknown verb 'transfer'; this runner knows play, record{AWAY}"),
    (main("execute: {dest: other}"),
     f"sections.main[0]: unknown verb 'execute'; this runner knows play, record{AWAY}"),
    (main("{play: {url: 'say:a'}, record: {}}"), f"sections.main[0]: {ONE_KEY}"),
    (main("{}"), "sections.main[0]: a verb is a mapping of exactly one key (play or record), "
                 "not of 0 keys"),
    (main("3"), "sections.main[0]: a verb is a mapping of one key (play or record), not int"),
    (main("play"), "sections.main[0]: play needs its url"),
    # the document
    ("- play: {}\n", "(document): an SWML document is a mapping with version and sections, "
                     "not list"),
    ("", "(document): an SWML document is a mapping with version and sections, not null"),
    (main("record") + "vars: {}\n",
     "vars: unknown key; an SWML document has version and sections"),
    ("sections: {main: []}\n", "version: required key is missing (1.0.0)"),
    (main("record").replace("1.0.0", "2.0.0"),
     "version: SWML '2.0.0' is not a version this runner reads (1.x: 1.0.0)"),
    (main("record").replace("1.0.0", "true"), "version: must be a string such as '1.0.0', "
                                               "not bool"),
    ("version: 1.0.0\n", "sections: required key is missing (with main: a list of verbs)"),
    ("version: 1.0.0\nsections: [play]\n",
     "sections: must be a mapping of section names to lists of verbs, not list"),
    ("version: 1.0.0\nsections: {start: []}\n",
     "sections.main: required key is missing (the section that runs)"),
    ("version: 1.0.0\nsections: {main: {play: {}}}\n",
     "sections.main: a section is a list of verbs, not dict"),
    ("version: 1.0.0\nsections: {main: [], 7: []}\n",
     "sections.7: a section's name is a string, not int"),
    ("version: 1.0.0\nsections: {main: [], 'a b': {x: 1}}\n",
     "sections.'a b': a section is a list of verbs, not dict"),
    # play
    (main("play: {url: 'say:a', loop: 2}"),
     "sections.main[0].play.loop: unknown key; play takes url, urls, volume, auto_answer"),
    (main("play: {url: 'say:a', say_voice: Polly.Salli}"),
     "sections.main[0].play.say_voice: SWML's play takes say_voice, but this runner does not: "
     "espeak-ng speaks say: with its default voice"),
    (main("play: {url: 'say:a', status_url: 'https://example.org/'}"),
     "sections.main[0].play.status_url: SWML's play takes status_url, but this runner does "
     "not: this runner sends no play status"),
    (main("play: {url: 'say:a', urls: ['say:b']}"),
     "sections.main[0].play: takes url or urls, not both"),
    (main("play: {volume: 3}"), "sections.main[0].play: url or urls is required"),
    (main("play: 'say:a'"),
     "sections.main[0].play: takes a mapping with url or urls, not str"),
    (main("play: {url: 7}"), "sections.main[0].play.url: must be a string, not int"),
    (main("play: {urls: []}"),
     "sections.main[0].play.urls: must be a list of 1-100 strings, not list of 0"),
    (main("play: {urls: 'say:a'}"),
     "sections.main[0].play.urls: must be a list of 1-100 strings, not str"),
    (main("play: {urls: ['say:a', null]}"),
     "sections.main[0].play.urls[1]: must be a string, not null"),
    (main("play: {url: 'say:a', volume: 50}"),
     "sections.main[0].play.volume: must be a number of dB in -40..40, not 50"),
    (main("play: {url: 'say:a', volume: loud}"),
     "sections.main[0].play.volume: must be a number of dB in -40..40, not 'loud'"),
    (main("play: {url: 'say:a', volume: .nan}"),
     "sections.main[0].play.volume: must be a number of dB in -40..40, not nan"),
    (main("play: {url: 'say:a', auto_answer: 'yes'}"),
     "sections.main[0].play.auto_answer: must be a boolean, not str"),
    (main("play: {url: 'ring:us'}"),
     f"sections.main[0].play.url: unsupported url scheme 'ring:'{SCHEMES}"),
    (main("play: {urls: ['say:a', 'fd:3']}"),
     f"sections.main[0].play.urls[1]: unsupported url scheme 'fd:'{SCHEMES}"),
    (main("play: {url: 'silence:soon'}"),
     "sections.main[0].play.url: silence: takes seconds, 0..3600, not 'soon'"),
    (main("play: {url: 'silence:-1'}"),
     "sections.main[0].play.url: silence: takes seconds, 0..3600, not '-1'"),
    (main("play: {url: 'say:  '}"), "sections.main[0].play.url: say: has no text"),
    (main("play: {url: ''}"), "sections.main[0].play.url: the url is empty"),
    (main("play: {url: 'file://server/a.wav'}"),
     "sections.main[0].play.url: a file URL of another host ('server') cannot be played"),
    (main("play: {url: 'file:a.wav'}"),
     "sections.main[0].play.url: a file URL's path must be absolute (file:///path), "
     "not 'a.wav'"),
    # record
    (main("record", "record: {max_length: -1}"),
     "sections.main[1].record.max_length: Record param max_length must be in 0..86400, "
     "not -1"),
    (main("record: {max_lenght: 60}"),
     "sections.main[0].record.max_lenght: Record param 'max_lenght' is not one of stereo, "
     "format, direction, terminators, beep, input_sensitivity, initial_timeout, "
     "end_silence_timeout, max_length, status_url, background"),
    (main("record: {format: ogg}"),
     "sections.main[0].record.format: Record param format must be one of wav, mp3, mp4, "
     "not 'ogg'"),
    (main("record: {beep: 'yes'}"),
     "sections.main[0].record.beep: Record param beep must be a boolean, not str"),
    (main("record: {background: true}"),
     "sections.main[0].record.background: SWML's record runs in the foreground; background "
     "is record_call's, which this runner does not have"),
    (main("record: [beep]"),
     "sections.main[0].record: takes a mapping of record parameters, not list"),
    # variables
    (main("play: {url: 'say:This call is from ${call.from}'}"),
     f"sections.main[0].play.url: unknown variable '${{call.from}}'{ONLY}"),
    (main("record", "play: {urls: ['say:a', '${record_url} ${vars.record_result} ${x}']}"),
     f"sections.main[1].play.urls[1]: unknown variable '${{x}}'{ONLY}"),
    (main("record: {status_url: 'https://example.org/${params.id}'}"),
     f"sections.main[0].record.status_url: unknown variable '${{params.id}}'{ONLY}"),
])
def test_load_refuses(tmp_path, text, message):
    assert refused(tmp_path, text) == message


def test_the_message_of_an_unknown_verb(tmp_path):
    path = write(tmp_path, main("record", "record", "answer: {}"))
    with pytest.raises(SwmlError, match=r"^.*doc\.yaml: sections\.main\[2\]: unknown verb "
                                        r"'answer'; this runner knows play, record$"):
        swml.load(path)
    assert issubclass(SwmlError, ValueError)


def test_load_refuses_a_file_over_1_mib(tmp_path):
    text = main("record") + "# " + "x" * swml.FILE_BYTES + "\n"
    assert refused(tmp_path, text) == "(file): larger than 1 MiB"


def test_load_refuses_over_1000_verbs_in_all_sections(tmp_path):
    text = main(*["record"] * 600) + "  other:\n" + "    - record\n" * 401
    assert refused(tmp_path, text) == "sections: 1001 verbs; the limit is 1000"
    assert len(swml.load(write(tmp_path, main(*["record"] * 1000))).main) == 1000


@pytest.mark.parametrize(("name", "text", "message"), [
    ("doc.json", '{"version": "1.0.0",\n "sections": {"main": [}}',
     "(json): Expecting value (line 2, column 24)"),
    ("doc.json", "[" * 100_000 + "]" * 100_000, "(json): nested too deep"),
    ("doc.yaml", "version: 1.0.0\nsections: {main: [}\n",
     "(yaml): expected the node content, but found '}' (line 2, column 19)"),
    ("doc.yaml", b"version: \xff\n", "(file): not UTF-8: invalid start byte at byte 9"),
])
def test_load_refuses_what_does_not_decode(tmp_path, name, text, message):
    assert refused(tmp_path, text, name) == message


def test_load_of_a_missing_file(tmp_path):
    with pytest.raises(SwmlError) as info:
        swml.load(tmp_path / "none.yaml")
    assert str(info.value) == f"{tmp_path / 'none.yaml'}: (file): cannot be read: " \
                              "No such file or directory"


# -- run ---------------------------------------------------------------------------------------

class Fakes:
    """A recorder giving the next of ``results``, a player collecting what it plays."""

    def __init__(self, *results: tuple[str, str]):
        self.results = list(results or [("file:///tmp/x.wav", "success")])
        self.recorded: list[dict] = []
        self.played: list[str] = []
        self.volumes: list[float] = []

    async def record(self, params: dict) -> tuple[str, str]:
        self.recorded.append(params)
        return self.results.pop(0)

    async def play(self, url: str, *, volume_db: float = 0.0) -> None:
        self.played.append(url)
        self.volumes.append(volume_db)


async def test_run_the_seed_substitutes_what_the_record_set():
    fakes = Fakes()
    variables = await swml.run(SEED, record=fakes.record, play=fakes.play)
    assert fakes.played == SEED_PLAYS
    assert fakes.recorded == [{"end_silence_timeout": 3, "beep": True}]
    assert variables == {"record_url": "file:///tmp/x.wav", "record_result": "success"}


async def test_a_verb_sees_the_latest_record_and_before_any_an_empty_string(tmp_path):
    doc = swml.load(write(tmp_path, main(
        "play: {url: 'say:before ${record_result}.'}",
        "record",
        "play: {urls: ['say:${record_result} ${vars.record_url}', '${ record_url }']}",
        "record: {status_url: 'https://example.org/after?previous=${record_result}'}",
        "play: {url: 'say:${record_result} ${record_url}'}")))
    fakes = Fakes(("file:///a.wav", "success"), ("file:///b.wav", "failed"))
    assert await swml.run(doc, record=fakes.record, play=fakes.play) == {
        "record_url": "file:///b.wav", "record_result": "failed"}
    assert fakes.played == ["say:before .", "say:success file:///a.wav", "file:///a.wav",
                            "say:failed file:///b.wav"]
    assert fakes.recorded == [
        {}, {"status_url": "https://example.org/after?previous=success"}]


async def test_run_calls_play_with_the_volume_when_a_verb_has_one(tmp_path):
    doc = swml.load(write(tmp_path, main("play: {url: 'say:a', volume: 6}",
                                         "play: {url: 'say:b', volume: 0}")))
    fakes = Fakes()
    await swml.run(doc, record=fakes.record, play=fakes.play)
    assert fakes.volumes == [6.0, 0.0]


async def test_a_failing_record_names_its_verb_and_stops_the_run():
    async def record(params: dict) -> tuple[str, str]:
        raise OSError("the daemon is not running")

    fakes = Fakes()
    with pytest.raises(SwmlError) as info:
        await swml.run(SEED, record=record, play=fakes.play)
    assert info.value.path == "sections.main[1]"
    assert info.value.problem == "record failed: the daemon is not running"
    assert isinstance(info.value.__cause__, OSError)
    assert fakes.played == SEED_PLAYS[:1]


async def test_a_failing_play_names_its_verb(tmp_path):
    async def play(url: str) -> None:
        raise SwmlError("paplay failed (exit 1): Connection refused")

    path = write(tmp_path, SEED_YAML)
    with pytest.raises(SwmlError) as info:
        await swml.run(swml.load(path), record=Fakes().record, play=play)
    assert str(info.value) == (
        f"{path}: sections.main[0]: play 'say:Start speaking after the beep. Press hash to end "
        "recording.' failed: paplay failed (exit 1): Connection refused")


async def test_a_value_substituted_is_checked_when_its_verb_runs(tmp_path):
    doc = swml.load(write(tmp_path, main("record", "record: {status_url: '${record_url}'}")))
    with pytest.raises(SwmlError) as info:
        await swml.run(doc, record=Fakes(("file:///a.wav", "success")).record,
                       play=Fakes().play)
    assert info.value.path == "sections.main[1].record"
    assert info.value.problem == "Record param status_url must be an http or https URL, " \
                                 "not 'file:'"


async def test_a_url_that_substitutes_to_nothing_is_an_error(tmp_path):
    doc = swml.load(write(tmp_path, main("play: {url: '${record_url}'}")))
    with pytest.raises(SwmlError) as info:
        await swml.run(doc, record=Fakes().record, play=Fakes().play)
    assert (info.value.path, info.value.problem) == (
        "sections.main[0]", "cannot play '': the url is empty")


def test_substitution_is_one_pass():
    variables = {"record_url": "${record_result}", "record_result": "success"}
    assert swml.substitute({"a": ["${record_url}", 3], "b": "${record_result}"}, variables) \
        == {"a": ["${record_result}", 3], "b": "success"}
    assert swml.substitute("${unknown} ${record_url}", {}) == "${unknown} "


# -- the player --------------------------------------------------------------------------------

async def test_say_makes_a_wav_with_espeak_ng(tmp_path):
    path = await swml.speech_file("-v Start speaking after the beep.", tmp_path)
    info = sf.info(str(path))
    assert (path.parent, info.format, info.channels) == (tmp_path, "WAV", 1)
    assert info.duration > 0.5


async def test_say_refuses_no_text_and_too_much(tmp_path):
    with pytest.raises(SwmlError, match=r"^say: has no text$"):
        await swml.speech_file(" ", tmp_path)
    with pytest.raises(SwmlError, match=r"^say: has 4097 characters; the limit is 4096$"):
        await swml.speech_file("a" * 4097, tmp_path)


def tone(seconds: float = 1.0, rate: int = 48000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)


def test_a_wav_is_played_as_it_is(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(str(path), tone(), 48000)
    assert swml.playable(path, tmp_path) == path


def test_an_mp3_is_decoded_to_a_wav(tmp_path):
    sf.write(str(tmp_path / "a.mp3"), tone(), 48000, format="MP3")
    out = tmp_path / "out"
    out.mkdir()
    wav = swml.playable(tmp_path / "a.mp3", out)
    info = sf.info(str(wav))
    assert (wav.parent, info.format, info.subtype, info.samplerate) == (
        out, "WAV", "PCM_16", 48000)
    assert 0.9 < info.duration < 1.2


def test_an_mp4_is_decoded_to_a_wav(tmp_path):
    from audiopolicyd.recorder.encode import open_writer

    writer = open_writer(tmp_path / "a.mp4", "mp4", 48000, 1)
    writer.write(tone())
    writer.close()
    info = sf.info(str(swml.playable(tmp_path / "a.mp4", tmp_path)))
    assert (info.format, info.channels, info.samplerate) == ("WAV", 1, 48000)
    assert 0.9 < info.duration < 1.2


def test_what_cannot_be_decoded(tmp_path):
    (tmp_path / "a.mp3").write_text("not audio\n")
    with pytest.raises(SwmlError, match=r"^a\.mp3: not audio this runner reads: "):
        swml.playable(tmp_path / "a.mp3", tmp_path)
    with pytest.raises(SwmlError, match=r"/b\.wav: no such file$"):
        swml.playable(tmp_path / "b.wav", tmp_path)
    sf.write(str(tmp_path / "c.mp3"), tone(), 48000, format="MP3")
    with pytest.raises(SwmlError, match=r"^c\.mp3: longer than 0\.5 s; the limit of a "
                                        r"decoded file$"):
        swml.playable(tmp_path / "c.mp3", tmp_path, max_s=0.5)


def test_pa_volume_is_cubic_as_pulseaudio_s():
    assert swml.pa_volume(0) == 65536
    assert swml.pa_volume(-40) == 14119  # cbrt(0.01) * 65536, pactl's "-40.00 dB" at 21 %
    assert swml.pa_volume(40) == 304191


class Server:
    """A tiny HTTP/1.1 server on 127.0.0.1: path -> (status, headers, body), one request per
    connection; a path not listed never answers."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]):
        self.routes = routes
        self.paths: list[str] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def serve(self, reader, writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1].decode().partition("?")[0]
            self.paths.append(path)
            if path not in self.routes:
                await reader.read()  # until the client gives up
                return
            status, headers, body = self.routes[path]
            lines = [f"HTTP/1.1 {status} X", "Connection: close",
                     *(f"{k}: {v}" for k, v in headers.items())]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


async def test_download_follows_redirects_within_http(tmp_path, no_proxy):
    body = b"RIFF" + bytes(1000)
    async with Server({
        "/a.wav": (200, {"Content-Length": str(len(body))}, body),
        "/moved": (302, {"Location": "/a.wav", "Content-Length": "0"}, b""),
        "/away": (302, {"Location": "ftp://127.0.0.1/a.wav", "Content-Length": "0"}, b""),
    }) as server:
        path = await swml.download(server.url + "/moved", tmp_path)
        assert (path, path.read_bytes()) == (tmp_path / "download", body)
        path = await swml.download(server.url + "/a.wav", tmp_path)
        assert (path.name, path.read_bytes()) == ("download.wav", body)
        with pytest.raises(SwmlError, match=r"/away: UnsupportedProtocol: "):
            await swml.download(server.url + "/away", tmp_path)
        assert server.paths == ["/moved", "/a.wav", "/a.wav", "/away"]


async def test_download_is_bounded_in_size_and_time(tmp_path, no_proxy):
    big = bytes(5000)
    async with Server({
        "/said": (200, {"Content-Length": "5000"}, big),
        "/unsaid": (200, {}, big),  # no length: the body is counted as it comes
        "/gone": (404, {"Content-Length": "0"}, b""),
    }) as server:
        with pytest.raises(SwmlError, match=r"^http://127\.0\.0\.1:\d+/said: 5000 bytes; the "
                                            r"limit is 4096$"):
            await swml.download(server.url + "/said", tmp_path, max_bytes=4096)
        with pytest.raises(SwmlError, match=r"/unsaid: more than 4096 bytes; the limit$"):
            await swml.download(server.url + "/unsaid", tmp_path, max_bytes=4096)
        assert (await swml.download(server.url + "/unsaid", tmp_path)).stat().st_size == 5000
        with pytest.raises(SwmlError, match=r"/slow: not downloaded within 0\.2 s$"):
            await swml.download(server.url + "/slow", tmp_path, timeout_s=0.2)
        # the password and the query are not shown
        url = server.url.replace("//", "//user:secret@") + "/gone?token=secret"
        with pytest.raises(SwmlError) as info:
            await swml.download(url, tmp_path)
        assert str(info.value) == f"{server.url}/gone: HTTP 404 X"


@pytest.fixture
def fake_paplay(tmp_path, monkeypatch):
    """A ``paplay`` on $PATH that writes its arguments, one a line, to ``paplay.args`` and
    copies the file it is given to ``played.wav``; ``$FAKE_PAPLAY`` = ``fail``: exits 1,
    ``hang``: sleeps."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "paplay"
    script.write_text(f"""#!/bin/sh
for a in "$@"; do echo "$a"; done > {tmp_path}/paplay.args
for a in "$@"; do last="$a"; done
cp "$last" {tmp_path}/played.wav
case "$FAKE_PAPLAY" in
  fail) echo "Failed to connect: Connection refused" >&2; echo "more" >&2; exit 1 ;;
  hang) echo $$ > {tmp_path}/paplay.pid; exec sleep 30 ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("FAKE_PAPLAY", raising=False)
    return tmp_path


async def test_play_url_gives_paplay_the_role_server_device_and_volume(fake_paplay):
    sf.write(str(fake_paplay / "a b.mp3"), tone(), 48000, format="MP3")
    await swml.play_url((fake_paplay / "a b.mp3").as_uri(), server="unix:/run/pulse",
                        device="speaker", volume_db=-40)
    args = (fake_paplay / "paplay.args").read_text().splitlines()
    assert args[:-1] == ["--property=media.role=phone",
                         f"--property=media.name={(fake_paplay / 'a b.mp3').as_uri()}",
                         "--server=unix:/run/pulse", "--device=speaker", "--volume=14119"]
    assert args[-1].endswith("/decoded.wav") and not Path(args[-1]).parent.exists()
    assert sf.info(str(fake_paplay / "played.wav")).format == "WAV"


async def test_play_url_says_text_in_a_removed_temporary_file(fake_paplay):
    await swml.play_url("say:Hello", role="event")
    args = (fake_paplay / "paplay.args").read_text().splitlines()
    assert args[:2] == ["--property=media.role=event", "--property=media.name=say:Hello"]
    assert args[-1].endswith("/say.wav") and not Path(args[-1]).parent.exists()
    assert sf.info(str(fake_paplay / "played.wav")).duration > 0.2


async def test_play_url_of_a_plain_relative_path(fake_paplay, monkeypatch):
    monkeypatch.chdir(fake_paplay)
    sf.write("-a.wav", tone(0.1), 48000)
    await swml.play_url("-a.wav")
    args = (fake_paplay / "paplay.args").read_text().splitlines()
    assert args[-1] == str(fake_paplay / "-a.wav")


async def test_a_failing_paplay_says_its_first_line(fake_paplay, monkeypatch):
    monkeypatch.setenv("FAKE_PAPLAY", "fail")
    with pytest.raises(SwmlError, match=r"^paplay failed \(exit 1\): Failed to connect: "
                                        r"Connection refused$"):
        await swml.play_url("say:Hello")


async def test_a_cancelled_play_kills_paplay(fake_paplay, monkeypatch):
    monkeypatch.setenv("FAKE_PAPLAY", "hang")
    task = asyncio.ensure_future(swml.play_url("say:Hello"))
    pid_file = fake_paplay / "paplay.pid"
    for _ in range(500):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
    played = (fake_paplay / "paplay.args").read_text().splitlines()[-1]
    assert not Path(played).parent.exists()


async def test_play_url_without_paplay(tmp_path, monkeypatch):
    sf.write(str(tmp_path / "a.wav"), tone(0.1), 48000)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SwmlError, match=r"^paplay is not installed \(pulseaudio-utils\)$"):
        await swml.play_url(str(tmp_path / "a.wav"))


async def test_play_url_of_silence_and_of_what_it_cannot_play():
    await swml.play_url("silence:0")
    with pytest.raises(SwmlError, match=f"^unsupported url scheme 'ring:'{SCHEMES}$"):
        await swml.play_url("ring:20:us")
    with pytest.raises(SwmlError, match=r"^volume must be in -40\.\.40 dB, not 41$"):
        await swml.play_url("say:a", volume_db=41)

