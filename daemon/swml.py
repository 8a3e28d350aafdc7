"""SWML documents for ``audiopolicyctl swml FILE``: read one, check it, run its ``main`` section
(the ``record`` seed in shared/seeds/, SignalWire's SWML reference for ``play``, ``record`` and
variables).

A document, in YAML or JSON (its example: ``examples/record-and-play.yaml``)::

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

What this runner reads (everything else is an error, found by :func:`load` before anything runs):

============== ===========================================================================
key            rule
============== ===========================================================================
``version``    a string, SWML 1.x (``1.0.0``); a number (``version: 1.0`` in YAML) is taken
               as its text, as a hand-written document often has it
``sections``   section name -> list of verbs; ``main`` is required and is the only one run:
               the runner has no ``transfer``, ``execute`` or ``goto`` to reach another
               (those are unknown verbs here), so other sections are read, not checked
verb           a mapping of exactly one key, ``play`` or ``record`` (or the bare string
               ``record``: SWML's form of a verb without arguments)
``play``       ``url`` (a string) or ``urls`` (a list of 1-:data:`PLAY_URLS` strings), not both;
               ``volume``: dB, -40..40, default 0; ``auto_answer``: a boolean, ignored (there
               is no call to answer). SWML's ``say_voice``, ``say_language``, ``say_gender``
               and ``status_url`` are refused: espeak-ng speaks with its default voice, and
               no play status is sent
``record``     SWML's ``record`` parameters, checked by :func:`audiopolicyd.recorder.params.parse`
               (``stereo``, ``format``, ``direction``, ``terminators``, ``beep``,
               ``input_sensitivity``, ``initial_timeout``, ``end_silence_timeout``,
               ``max_length``, ``status_url``); ``background`` is ``record_call``'s and refused
============== ===========================================================================

Bounds: a file of at most :data:`FILE_BYTES`, at most :data:`VERBS` verbs in all sections,
strings of at most :data:`URL_CHARS` characters.

Variables, as SWML writes them: ``${record_url}`` and ``${record_result}``, which a ``record``
verb sets (SWML's ``vars`` scope: ``${vars.record_url}`` is the same variable). They are
substituted in every string of a verb's arguments when that verb runs, so a verb sees what the
records before it set; before the first ``record`` they are empty strings (as SWML leaves an
unset variable). Any other ``${...}`` (``${call.from}``, an expression) can never be set here
and is an error at load time, naming it. Substitution is one pass: a value that itself holds
``${`` is not expanded again.

Playable URLs (:func:`play_url`; SWML's "playable sounds"):

* ``say:TEXT``: text to speech with espeak-ng (at most :data:`SAY_CHARS` characters, SWML's
  limit for ``<Say>``), a temporary WAV;
* ``silence:SECONDS``: waits, 0..:data:`SILENCE_S` seconds;
* ``file:///path`` or a plain path (relative: to the current directory; one holding a colon
  needs ``./``): the file;
* ``http://``, ``https://``: downloaded first (at most :data:`DOWNLOAD_BYTES`, within
  :data:`DOWNLOAD_TIMEOUT_S` seconds, redirects followed over http and https only);
* anything else (SWML's ``ring:``, a recording's ``fd:``) is an unsupported scheme.

WAV, FLAC, Ogg, AIFF and AU files go to ``paplay`` as they are (libsndfile reads them); MP3
and other formats libsndfile reads are decoded to a temporary WAV with soundfile, MP4/AAC and
the rest with PyAV (FFmpeg), at most :data:`DECODE_S` seconds of sound. Temporary files are
removed when the URL has played, failed or was cancelled.

Errors are one class, :class:`SwmlError` (a :class:`ValueError`), whose message is
``FILE: key.path: problem`` as a policy's problems are (``doc.yaml: sections.main[2]: unknown
verb 'answer'; this runner knows play, record``); :func:`play_url`'s have the problem alone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import re
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import unquote, urlsplit

import av
import httpx
import soundfile as sf
import yaml

from .errors import InvalidArgument
from .limits import quote
from .recorder import params as record_params
from .recorder.status import shown_url

logger = logging.getLogger(__name__)

#: The largest document :func:`load` reads: 1 MiB.
FILE_BYTES = 1 << 20
#: Verbs in all sections of a document.
VERBS = 1000
#: URLs of one ``play``'s ``urls``.
PLAY_URLS = 100
#: Characters of one string in a verb (a URL, a ``say:`` text with its prefix).
URL_CHARS = 8192
#: Characters of a ``say:`` text: SWML's ``<Say>`` limit.
SAY_CHARS = 4096
#: Seconds of one ``silence:``.
SILENCE_S = 3600.0
#: ``play``'s ``volume`` bound in dB, as SWML's.
VOLUME_DB = 40.0
#: Bytes of one http(s) download: 50 MiB.
DOWNLOAD_BYTES = 50 << 20
#: Seconds one http(s) download may take, from the request to its last byte.
DOWNLOAD_TIMEOUT_S = 30.0
#: Redirects one download follows.
REDIRECTS = 10
#: Seconds of sound one decoded file may hold (a WAV of 48 kHz stereo: 660 MiB per hour).
DECODE_S = 3600.0
#: What SWML's ``version`` may be: 1.x.
VERSION = re.compile(r"1(\.[0-9]+){0,2}")
#: Variables a ``record`` verb sets, as SWML names them.
VARIABLES = ("record_url", "record_result")
#: libsndfile formats (:func:`soundfile.info`'s ``format``) ``paplay`` is given as they are.
DIRECT_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "OGG", "AIFF", "AU"})
#: ``pa_volume_t``'s 100 % (PA_VOLUME_NORM).
PA_VOLUME_NORM = 0x10000

_VERBS = ("play", "record")
_PLAY_KEYS = ("url", "urls", "volume", "auto_answer")
_PLAY_REFUSED = {
    "say_voice": "espeak-ng speaks say: with its default voice",
    "say_language": "espeak-ng speaks say: with its default voice",
    "say_gender": "espeak-ng speaks say: with its default voice",
    "status_url": "this runner sends no play status",
}
_OTHER_SECTION_VERBS = ("transfer", "execute", "goto", "return")
_REFERENCE = re.compile(r"\$\{([^{}]*)\}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class SwmlError(ValueError):
    """A document that cannot be read or run, or a URL that cannot be played.

    ``str()`` is ``FILE: key.path: problem``; a part that is empty is left out (a
    :func:`play_url` error is its problem alone).

    :ivar file: the document's file name as given, or ''
    :ivar path: where in the document (``sections.main[1].record.max_length``, ``(yaml)`` for
        a syntax error, ``(file)`` for one of the file itself), or ''
    :ivar problem: what is wrong, in words
    """

    def __init__(self, problem: str, file: str = "", path: str = ""):
        super().__init__(": ".join(part for part in (file, path, problem) if part))
        self.file = file
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class PlayVerb:
    """A checked ``play``.

    :param where: its place, ``sections.main[3]``
    :param urls: what it plays, in order, as written (variables not substituted)
    :param volume_db: SWML's ``volume``, dB (-40..40; 0: as the file is)
    """

    where: str
    urls: tuple[str, ...]
    volume_db: float = 0.0


@dataclass(frozen=True)
class RecordVerb:
    """A checked ``record``.

    :param where: its place, ``sections.main[1]``
    :param params: SWML's parameters as written (read-only; variables not substituted)
    """

    where: str
    params: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))


Verb = PlayVerb | RecordVerb


@dataclass(frozen=True)
class Document:
    """A checked SWML document: what :func:`run` runs.

    Two documents are equal when they run the same (the file they came from is not compared:
    a YAML file and its JSON twin are equal).

    :param version: SWML's ``version`` as text (``1.0.0``)
    :param main: the ``main`` section's verbs, in order
    :param other_sections: the names of the sections that are not run, in the file's order
    :param file: the file it was read from ('' when built otherwise)
    """

    version: str
    main: tuple[Verb, ...]
    other_sections: tuple[str, ...] = ()
    file: str = field(default="", compare=False)


# -- load ------------------------------------------------------------------------------------

class _Index(int):
    """A list's index in a key path (a mapping's key may be an integer too)."""


def _key(part: Any) -> str:
    if isinstance(part, _Index):
        return f"[{part}]"
    text = part if isinstance(part, str) and _KEY.fullmatch(part) else quote(part)
    return "." + text


def _path(*parts: Any) -> str:
    """``sections.main[2].play.url`` from its parts: keys, and :class:`_Index` for a list's
    index; a key that is not a plain name is quoted."""
    return "".join(_key(part) for part in parts).lstrip(".")


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _references(text: str) -> list[str]:
    """The variables ``text`` names, as written inside ``${}``."""
    return [match.group(1) for match in _REFERENCE.finditer(text)]


def _variable(reference: str) -> str | None:
    """The variable a ``${reference}`` names (``vars.`` dropped), None for an unknown one."""
    name = reference.strip()
    name = name[len("vars."):] if name.startswith("vars.") else name
    return name if name in VARIABLES else None


def _check_references(text: str, fail: Callable[[str], SwmlError]) -> bool:
    """Whether ``text`` names variables; raise ``fail(problem)`` for an unknown one."""
    references = _references(text)
    for reference in references:
        if _variable(reference) is None:
            raise fail(f"unknown variable {quote('${' + reference + '}')}; this runner sets "
                       f"{', '.join(VARIABLES)} (also as vars.NAME), and nothing else")
    return bool(references)


def _check_url(url: str) -> tuple[str, str]:
    """What a playable URL is: ``(kind, argument)``.

    :returns: ``("say", text)``, ``("silence", seconds)``, ``("file", path)`` or
        ``("http", url)``
    :raises SwmlError: an unsupported scheme, an empty or too long text, a ``silence:`` that
        is not a number of seconds in its bound, a ``file:`` URL of another host
    """
    if not url:
        raise SwmlError("the url is empty")
    if len(url) > URL_CHARS:
        raise SwmlError(f"the url has {len(url)} characters; the limit is {URL_CHARS}")
    match = _SCHEME.match(url)
    if match is None:
        return "file", url
    scheme, rest = match.group(1).lower(), url[match.end():]
    if scheme == "say":
        if not rest.strip():
            raise SwmlError("say: has no text")
        if len(rest) > SAY_CHARS:
            raise SwmlError(f"say: has {len(rest)} characters; the limit is {SAY_CHARS}")
        return "say", rest
    if scheme == "silence":
        try:
            seconds = float(rest)
        except ValueError:
            seconds = math.nan
        if not 0.0 <= seconds <= SILENCE_S:  # NaN too
            raise SwmlError(f"silence: takes seconds, 0..{SILENCE_S:g}, not {quote(rest)}")
        return "silence", rest
    if scheme == "file":
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise SwmlError(f"not a file URL: {exc}") from None
        if parts.netloc not in ("", "localhost"):
            raise SwmlError(f"a file URL of another host ({quote(parts.netloc)}) cannot be "
                            "played")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise SwmlError(f"a file URL's path must be absolute (file:///path), not "
                            f"{quote(path)}")
        return "file", path
    if scheme in ("http", "https"):
        return "http", url
    raise SwmlError(f"unsupported url scheme {quote(scheme + ':')}; this runner plays say:, "
                    "silence:, file:, http:, https: and paths")


def _text_value(value: Any, fail: Callable[[str], SwmlError]) -> str:
    if not isinstance(value, str):
        raise fail(f"must be a string, not {_type(value)}")
    if len(value) > URL_CHARS:
        raise fail(f"has {len(value)} characters; the limit is {URL_CHARS}")
    return value


def _play(args: Any, file: str, where: tuple[Any, ...]) -> PlayVerb:
    def fail_at(*parts: Any) -> Callable[[str], SwmlError]:
        return lambda problem: SwmlError(problem, file, _path(*where, "play", *parts))

    if not isinstance(args, Mapping):
        raise fail_at()(f"takes a mapping with url or urls, not {_type(args)}")
    for key in args:
        if key in _PLAY_REFUSED:
            raise fail_at(key)(f"SWML's play takes {key}, but this runner does not: "
                               f"{_PLAY_REFUSED[key]}")
        if key not in _PLAY_KEYS:
            raise fail_at(key)(f"unknown key; play takes {', '.join(_PLAY_KEYS)}")
    if "url" in args and "urls" in args:
        raise fail_at()("takes url or urls, not both")
    urls: list[tuple[str, tuple[Any, ...]]]
    if "url" in args:
        urls = [(_text_value(args["url"], fail_at("url")), ("url",))]
    elif "urls" in args:
        listed = args["urls"]
        if not isinstance(listed, list) or not 1 <= len(listed) <= PLAY_URLS:
            raise fail_at("urls")(f"must be a list of 1-{PLAY_URLS} strings, not "
                                  f"{_type(listed)}"
                                  + (f" of {len(listed)}" if isinstance(listed, list) else ""))
        urls = [(_text_value(url, fail_at("urls", _Index(i))), ("urls", _Index(i)))
                for i, url in enumerate(listed)]
    else:
        raise fail_at()("url or urls is required")
    for url, parts in urls:
        if not _check_references(url, fail_at(*parts)):
            try:
                _check_url(url)
            except SwmlError as exc:
                raise fail_at(*parts)(exc.problem) from None
    volume = args.get("volume", 0.0)
    if isinstance(volume, bool) or not isinstance(volume, (int, float)) \
            or not -VOLUME_DB <= volume <= VOLUME_DB:  # NaN fails too
        raise fail_at("volume")(f"must be a number of dB in -{VOLUME_DB:g}..{VOLUME_DB:g}, "
                                f"not {quote(volume)}")
    if not isinstance(args.get("auto_answer", True), bool):
        raise fail_at("auto_answer")(f"must be a boolean, not {_type(args['auto_answer'])}")
    return PlayVerb(_path(*where), tuple(url for url, _ in urls), float(volume))


def _record(args: Any, file: str, where: tuple[Any, ...]) -> RecordVerb:
    def fail_at(*parts: Any) -> Callable[[str], SwmlError]:
        return lambda problem: SwmlError(problem, file, _path(*where, "record", *parts))

    if args is None:  # `- record:` in YAML: every parameter its default
        args = {}
    if not isinstance(args, Mapping):
        raise fail_at()(f"takes a mapping of record parameters, not {_type(args)}")
    for key, value in args.items():
        if key == "background":
            raise fail_at(key)("SWML's record runs in the foreground; background is "
                               "record_call's, which this runner does not have")
        # a value with a variable is checked when the verb runs, once it is substituted
        if isinstance(value, str) and _check_references(value, fail_at(key)):
            continue
        try:
            record_params.parse({key: value})
        except InvalidArgument as exc:
            raise fail_at(key)(str(exc)) from None
    return RecordVerb(_path(*where), types.MappingProxyType(dict(args)))


def _verb(item: Any, file: str, where: tuple[Any, ...]) -> Verb:
    if isinstance(item, str):  # SWML's bare form of a verb without arguments
        name, args = item, None
    elif isinstance(item, Mapping) and len(item) == 1:
        [(name, args)] = item.items()
    elif isinstance(item, Mapping):
        raise SwmlError(f"a verb is a mapping of exactly one key (play or record), not of "
                        f"{len(item)} keys", file, _path(*where))
    else:
        raise SwmlError(f"a verb is a mapping of one key (play or record), not {_type(item)}",
                        file, _path(*where))
    if name == "play" and not isinstance(item, str):
        return _play(args, file, where)
    if name == "record":
        return _record(args, file, where)
    if name == "play":
        raise SwmlError("play needs its url", file, _path(*where))
    beyond = (" (it runs sections.main alone: nothing moves to another section)"
              if name in _OTHER_SECTION_VERBS else "")
    raise SwmlError(f"unknown verb {quote(name)}; this runner knows {', '.join(_VERBS)}{beyond}",
                    file, _path(*where))


def _decode(data: bytes, file: str) -> Any:
    """The document's data: JSON for a ``.json`` file, YAML otherwise."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SwmlError(f"not UTF-8: {exc.reason} at byte {exc.start}", file, "(file)") \
            from None
    is_json = file.lower().endswith(".json")
    syntax = "(json)" if is_json else "(yaml)"
    try:
        if is_json:
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise SwmlError(f"{exc.msg} (line {exc.lineno}, column {exc.colno})", file, syntax) \
            from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise SwmlError(f"{problem}{at}", file, syntax) from None
    except RecursionError:
        raise SwmlError("nested too deep", file, syntax) from None
    except ValueError as exc:  # json: an integer of over 4300 digits
        raise SwmlError(f"cannot be decoded: {exc}", file, syntax) from None


def parse(data: Any, file: str = "") -> Document:
    """Check a decoded SWML document (the checks of :func:`load`, without the file).

    :param data: the document as YAML or JSON decodes it
    :param file: the file name for the messages
    :returns: the checked document
    :raises SwmlError: the first problem found, with its key path
    """
    if not isinstance(data, Mapping):
        raise SwmlError(f"an SWML document is a mapping with version and sections, not "
                        f"{_type(data)}", file, "(document)")
    for key in data:
        if key not in ("version", "sections"):
            raise SwmlError("unknown key; an SWML document has version and sections", file,
                            _path(key))
    if "version" not in data:
        raise SwmlError("required key is missing (1.0.0)", file, "version")
    version = data["version"]
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        version = str(version)  # `version: 1.0` in YAML: a number, meant as the text
    if not isinstance(version, str):
        raise SwmlError(f"must be a string such as '1.0.0', not {_type(version)}", file,
                        "version")
    if not VERSION.fullmatch(version):
        raise SwmlError(f"SWML {quote(version)} is not a version this runner reads (1.x: "
                        "1.0.0)", file, "version")
    if "sections" not in data:
        raise SwmlError("required key is missing (with main: a list of verbs)", file,
                        "sections")
    sections = data["sections"]
    if not isinstance(sections, Mapping):
        raise SwmlError(f"must be a mapping of section names to lists of verbs, not "
                        f"{_type(sections)}", file, "sections")
    count = 0
    for name, verbs in sections.items():
        if not isinstance(name, str):
            raise SwmlError(f"a section's name is a string, not {_type(name)}", file,
                            _path("sections", name))
        if not isinstance(verbs, list):
            raise SwmlError(f"a section is a list of verbs, not {_type(verbs)}", file,
                            _path("sections", name))
        count += len(verbs)
    if count > VERBS:
        raise SwmlError(f"{count} verbs; the limit is {VERBS}", file, "sections")
    if "main" not in sections:
        raise SwmlError("required key is missing (the section that runs)", file,
                        "sections.main")
    main = tuple(_verb(item, file, ("sections", "main", _Index(i)))
                 for i, item in enumerate(sections["main"]))
    others = tuple(name for name in sections if name != "main")
    if others:
        logger.debug("%s: sections %s are not run", file, ", ".join(others))
    return Document(version, main, others, file)


def load(path: str | os.PathLike[str]) -> Document:
    """Read and check an SWML document: JSON for a ``.json`` file (its parser's exact
    errors), YAML otherwise (JSON is YAML too).

    :param path: the file; its name as given starts every message
    :returns: the checked document (the module docstring has the rules)
    :raises SwmlError: the file cannot be read or decoded, is larger than :data:`FILE_BYTES`,
        or breaks a rule: the first problem found, with its key path
    """
    file = os.fspath(path)
    try:
        with open(file, "rb") as stream:
            data = stream.read(FILE_BYTES + 1)
    except OSError as exc:
        raise SwmlError(f"cannot be read: {exc.strerror or exc}", file, "(file)") from None
    if len(data) > FILE_BYTES:
        raise SwmlError(f"larger than {FILE_BYTES >> 20} MiB", file, "(file)")
    return parse(_decode(data, file), file)


# -- run -------------------------------------------------------------------------------------

#: ``record(params) -> (record_url, record_result)``
Recorder = Callable[[dict[str, Any]], Awaitable[tuple[str, str]]]
#: ``play(url)`` (and ``play(url, volume_db=...)`` for a verb with a volume)
Player = Callable[..., Awaitable[None]]


def substitute(value: Any, variables: Mapping[str, str]) -> Any:
    """``value`` with each ``${name}`` in its strings replaced, in one pass.

    :param value: a string, or a list or mapping holding strings (any depth); other values
        are returned as they are, and so are mapping keys
    :param variables: ``record_url``, ``record_result`` when set; a known variable not set
        yet is '', an unknown reference stays as written (:func:`load` refuses those)
    :returns: a new value of the same shape (a mapping becomes a dict)
    """
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name = _variable(match.group(1))
            return match.group(0) if name is None else variables.get(name, "")
        return _REFERENCE.sub(replace, value)
    if isinstance(value, list | tuple):
        return [substitute(item, variables) for item in value]
    if isinstance(value, Mapping):
        return {key: substitute(item, variables) for key, item in value.items()}
    return value


def _cause(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def run(document: Document, *, record: Recorder, play: Player) -> dict[str, str]:
    """Run the document's ``main`` section, verb after verb.

    :param document: what :func:`load` gave
    :param record: ``async record(params) -> (record_url, record_result)``: one recording in
        the foreground; ``params`` is the verb's parameters with the variables substituted
        and checked (SWML's names, a new dict the callee may keep)
    :param play: ``async play(url)``: one playable URL, substituted; called as
        ``play(url, volume_db=v)`` for a verb whose ``volume`` is not 0 (:func:`play_url`
        takes both)
    :returns: the variables at the end: ``{"record_url": ..., "record_result": ...}``,
        empty when no ``record`` ran
    :raises SwmlError: a verb failed (its place, ``sections.main[1]``, and the cause, which is
        chained), a substituted value broke a rule; the verbs after it are not run.
        Cancellation propagates as it is.
    """
    variables: dict[str, str] = {}
    file = document.file
    for verb in document.main:
        if isinstance(verb, PlayVerb):
            for url in verb.urls:
                url = substitute(url, variables)
                try:
                    _check_url(url)
                except SwmlError as exc:
                    raise SwmlError(f"cannot play {quote(url)}: {exc.problem}", file,
                                    verb.where) from None
                logger.info("%s: %s: play %s", file, verb.where, _shown(url))
                try:
                    if verb.volume_db:
                        await play(url, volume_db=verb.volume_db)
                    else:
                        await play(url)
                except Exception as exc:
                    raise SwmlError(f"play {quote(_shown(url))} failed: {_cause(exc)}", file,
                                    verb.where) from exc
        else:
            params = substitute(verb.params, variables)
            try:
                record_params.parse(params)
            except InvalidArgument as exc:
                raise SwmlError(str(exc), file, f"{verb.where}.record") from None
            logger.info("%s: %s: record", file, verb.where)
            try:
                url, result = await record(params)
            except Exception as exc:
                raise SwmlError(f"record failed: {_cause(exc)}", file, verb.where) from exc
            if not isinstance(url, str) or not isinstance(result, str):
                raise SwmlError(f"record gave {quote((url, result))}, not two strings", file,
                                verb.where)
            variables.update(record_url=url, record_result=result)
    return variables


# -- the player ------------------------------------------------------------------------------

def _shown(url: str) -> str:
    """A URL for a message: without an http URL's credentials and query."""
    return shown_url(url) if _SCHEME.match(url) and url[:4].lower() == "http" else url


def pa_volume(db: float) -> int:
    """``paplay --volume``'s value for a gain in dB: ``pa_volume_t``, whose scale is cubic
    (Ref: PulseAudio's src/pulse/volume.c, ``pa_sw_volume_from_dB`` and
    ``pa_sw_volume_from_linear``: ``cbrt(linear) * PA_VOLUME_NORM``).

    :param db: the gain, dB (0: :data:`PA_VOLUME_NORM`, as the file is)
    """
    return round(PA_VOLUME_NORM * (10 ** (db / 20)) ** (1 / 3))


async def _run(argv: list[str], what: str, stdin: bytes | None = None) -> None:
    """Run a program to its end; kill it when cancelled.

    :raises SwmlError: it is not installed, or exits non-zero (its stderr's first line)
    """
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin is not None
            else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise SwmlError(f"{argv[0]} is not installed ({what})") from None
    try:
        _, err = await process.communicate(stdin)
    except BaseException:  # cancelled: stop the sound at once
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode:
        lines = err.decode(errors="replace").strip().splitlines()
        first = lines[0][:200] if lines else "no message"
        raise SwmlError(f"{argv[0]} failed (exit {process.returncode}): {first}")


async def speech_file(text: str, directory: Path) -> Path:
    """Speak ``text`` into a WAV file with espeak-ng (its default voice, 22050 Hz mono).

    :param text: what to say (``say:``'s text), 1-:data:`SAY_CHARS` characters; read by
        espeak-ng from its stdin, so no text is taken for an option
    :param directory: where the file is made (the caller removes it)
    :returns: the WAV file
    :raises SwmlError: an empty or too long text, espeak-ng missing or failing
    """
    if not text.strip():
        raise SwmlError("say: has no text")
    if len(text) > SAY_CHARS:
        raise SwmlError(f"say: has {len(text)} characters; the limit is {SAY_CHARS}")
    path = directory / "say.wav"
    await _run(["espeak-ng", "-w", str(path), "--stdin"], "text to speech",
               stdin=text.encode())
    return path


async def _fetch(url: str, path: Path, max_bytes: int, timeout_s: float) -> None:
    async with httpx.AsyncClient(follow_redirects=True, max_redirects=REDIRECTS,
                                 timeout=timeout_s) as client:
        async with client.stream("GET", url) as response:
            if response.status_code >= 400:
                raise SwmlError(f"{shown_url(url)}: HTTP {response.status_code} "
                                f"{response.reason_phrase}")
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise SwmlError(f"{shown_url(url)}: {length} bytes; the limit is {max_bytes}")
            size = 0
            with open(path, "wb") as file:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise SwmlError(f"{shown_url(url)}: more than {max_bytes} bytes; the "
                                        "limit")
                    file.write(chunk)


async def download(url: str, directory: Path, *, max_bytes: int = DOWNLOAD_BYTES,
                   timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download an http or https URL to a file (SWML's "audio file from a URL").

    Redirects are followed over http and https (httpx follows no other scheme), at most
    :data:`REDIRECTS`; user info in the URL (``https://user:password@host/...``, as SWML
    allows) is sent as basic authentication; ``$HTTPS_PROXY`` and the like apply.

    :param url: the URL
    :param directory: where the file is made (the caller removes it)
    :param max_bytes: the bound of the body, bytes after any content decoding
    :param timeout_s: seconds for the whole download
    :returns: the file, named ``download`` + the URL path's suffix
    :raises SwmlError: not an http(s) URL, an HTTP error status, a body beyond ``max_bytes``,
        the time out, a network error; messages show the URL without credentials or query
    """
    if _check_url(url)[0] != "http":
        raise SwmlError(f"{quote(url)} is not an http or https URL")
    suffix = Path(urlsplit(url).path).suffix
    path = directory / ("download" + (suffix if re.fullmatch(r"\.\w{1,8}", suffix) else ""))
    try:
        await asyncio.wait_for(_fetch(url, path, max_bytes, timeout_s), timeout_s)
    except asyncio.TimeoutError:
        raise SwmlError(f"{shown_url(url)}: not downloaded within {timeout_s:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise SwmlError(f"{shown_url(url)}: {type(exc).__name__}: {_cause(exc)}") from None
    except OSError as exc:
        raise SwmlError(f"{shown_url(url)}: cannot be saved: {exc}") from None
    return path


def _too_long(path: Path, frames: int, rate: int, max_s: float) -> None:
    if frames > max_s * rate:
        raise SwmlError(f"{path.name}: longer than {max_s:g} s; the limit of a decoded file")


def _decode_soundfile(source: Path, target: Path, max_s: float) -> None:
    with sf.SoundFile(str(source)) as audio, \
            sf.SoundFile(str(target), "w", audio.samplerate, audio.channels, "PCM_16",
                         format="WAV") as wav:
        frames = 0
        for block in audio.blocks(blocksize=65536, dtype="int16", always_2d=True):
            frames += len(block)
            _too_long(source, frames, audio.samplerate, max_s)
            wav.write(block)


def _decode_pyav(source: Path, target: Path, max_s: float) -> None:
    with av.open(str(source)) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise SwmlError(f"{source.name}: has no audio")
        rate = stream.codec_context.sample_rate
        channels = 1 if len(stream.codec_context.layout.channels) == 1 else 2
        resampler = av.AudioResampler(format="s16", layout="mono" if channels == 1
                                      else "stereo", rate=rate)
        with sf.SoundFile(str(target), "w", rate, channels, "PCM_16", format="WAV") as wav:
            frames = 0
            decoded = (frame for packet in container.demux(stream)
                       for frame in packet.decode())
            for frame in itertools.chain(decoded, [None]):  # None: the resampler's rest
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(-1, channels)
                    frames += len(block)
                    _too_long(source, frames, rate, max_s)
                    wav.write(block)


def playable(path: Path, directory: Path, *, max_s: float = DECODE_S) -> Path:
    """A file ``paplay`` plays: ``path`` itself for :data:`DIRECT_FORMATS`, else a 16-bit WAV
    decoded from it (soundfile for MP3 and what else libsndfile reads, PyAV for MP4/AAC and
    the rest). Blocking: run it in a thread.

    :param path: the file to play
    :param directory: where a decoded WAV is made (the caller removes it)
    :param max_s: seconds of sound a decoded file may hold
    :returns: the file to give ``paplay``
    :raises SwmlError: no such file, not audio any decoder reads, longer than ``max_s``
    """
    if not path.is_file():
        raise SwmlError(f"{path}: no such file")
    try:
        fmt: str | None = sf.info(str(path)).format
    except (sf.SoundFileError, RuntimeError):
        fmt = None
    if fmt in DIRECT_FORMATS:
        return path
    target = directory / "decoded.wav"
    try:
        if fmt is not None:
            _decode_soundfile(path, target, max_s)
        else:
            _decode_pyav(path, target, max_s)
    except SwmlError:
        raise
    except (av.error.FFmpegError, sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise SwmlError(f"{path.name}: not audio this runner reads: {_cause(exc)}") from None
    except OSError as exc:
        raise SwmlError(f"{path.name}: cannot be decoded: {exc}") from None
    return target


async def play_url(url: str, *, server: str | None = None, device: str | None = None,
                   role: str = "phone", volume_db: float = 0.0,
                   max_bytes: int = DOWNLOAD_BYTES,
                   timeout_s: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Play one SWML playable URL with ``paplay`` and return when it has played.

    :param url: ``say:TEXT``, ``silence:SECONDS``, ``file:///path``, a path, ``http(s)://``
        (the module docstring has the rules)
    :param server: the audio server's address (None: ``$PULSE_SERVER``, libpulse's default)
    :param device: the sink's name (None: the server's choice)
    :param role: the stream's ``media.role``. ``phone``: the prompts are the call's own audio,
        and the CLI plays them inside its ``playAndRecord`` session, whose policy classifies
        ``phone`` with it (policies/playAndRecord.toml)
    :param volume_db: SWML's ``volume``, dB, -40..40 (``paplay --volume``, :func:`pa_volume`)
    :param max_bytes: the bound of an http(s) download
    :param timeout_s: seconds an http(s) download may take
    :raises SwmlError: an unsupported scheme, a download or decoding that failed, espeak-ng
        or paplay missing or failing (their stderr's first line). Cancelled, ``paplay`` is
        killed and the temporary files removed.
    """
    kind, argument = _check_url(url)
    if kind == "silence":
        await asyncio.sleep(float(argument))
        return
    if not -VOLUME_DB <= volume_db <= VOLUME_DB:
        raise SwmlError(f"volume must be in -{VOLUME_DB:g}..{VOLUME_DB:g} dB, not "
                        f"{quote(volume_db)}")
    with tempfile.TemporaryDirectory(prefix="audiopolicyd-swml-") as temporary:
        directory = Path(temporary)
        if kind == "say":
            path = await speech_file(argument, directory)
        elif kind == "http":
            path = await download(url, directory, max_bytes=max_bytes, timeout_s=timeout_s)
        else:
            path = Path(argument).absolute()  # so that a path starting with - is no option
        path = await asyncio.to_thread(playable, path, directory)
        name = " ".join(_shown(url).split())[:80]  # one line, whatever the text
        argv = ["paplay", f"--property=media.role={role}", f"--property=media.name={name}"]
        if server:
            argv.append(f"--server={server}")
        if device:
            argv.append(f"--device={device}")
        if volume_db:
            argv.append(f"--volume={pa_volume(volume_db)}")
        await _run([*argv, str(path)], "pulseaudio-utils")
