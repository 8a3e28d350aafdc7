"""A recording's status payloads, and their delivery by HTTP POST to the verb's ``status_url``.

The payload is SWML's ``record`` status callback (the ``record`` seed in shared/seeds/,
SignalWire's reference, "StatusCallbacks" and its raw JSON example), key for key::

    {"event_type": "calling.call.record", "event_channel": "swml:<session id>",
     "timestamp": 1640000000.123, "project_id": "<daemon id>", "space_id": "<session id>",
     "params": {"state": "finished", "control_id": "<control id>", "call_id": "<session id>",
                "node_id": "<node id>", "url": "file:///…/rec.wav", "duration": 15.0,
                "size": 248320, "recording_id": "<recording id>",
                "start_time": 1640000000.123, "end_time": 1640000015.623,
                "record": {"audio": {"format": "wav", "direction": "speak", "stereo": false}}}}

A desktop has no SignalWire project, space, call or node; each id is filled by the nearest thing
the daemon has, never left empty:

============== ================================================================================
field          filled with
============== ================================================================================
project_id     the daemon's id (one per daemon instance: all its recordings share it)
space_id       the session's id (the audio session that asked for the recording)
event_channel  ``swml:`` + the session's id (SWML: the channel includes the session id)
call_id        the session's id (the session is the desktop's "call")
node_id        the node's id, hostname-based (the machine handling the recording)
control_id     the recording's control id (the id of the ``record`` operation)
recording_id   the recording's id (SWML: "present when available"; on a desktop it always is)
url            the recording file's ``file://`` URL (SWML: the download URL)
============== ================================================================================

Which keys are present, by state (SWML's rules, and one decision of ours for ``error``):

* ``duration`` (seconds, float) and ``size`` (bytes, int): present when ``state`` is
  ``finished`` or ``no_input``, and then required. For ``error`` they are optional: present
  when the caller knows them (a recording that failed mid-way has a partial file), absent
  otherwise; SWML does not say, and a partial file's size helps whoever cleans up.
* ``start_time`` and ``end_time`` (unix time, float): "present when the recording has ended",
  that is for the final states ``finished``, ``no_input`` and ``error``, and then required;
  absent for ``recording`` and ``paused``.
* ``behavior`` (``silence`` | ``skip``): present when ``state`` is ``paused``, and then
  required (a pause always has one); absent otherwise.

A value given where it must be absent, or missing where it is required, is a programming error:
:func:`payload` raises :class:`ValueError`.

Delivery (:class:`StatusPoster`) follows the usual webhook practice (as Stripe's and GitHub's
webhook senders): one POST per status with ``Content-Type: application/json``, in order, bounded
retries with exponential backoff on connection errors, timeouts and 5xx, none on 4xx, no
redirects followed. A failing callback is logged and never reaches the recording.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit


from ..limits import quote

if TYPE_CHECKING:  # imported when first used: the daemon starts without it
    import httpx

logger = logging.getLogger(__name__)

#: SWML's ``event_type`` of every record status.
EVENT_TYPE = "calling.call.record"
#: Characters a ``status_url`` may have (as :mod:`.params` bounds it).
STATUS_URL_CHARS = 2048
#: Characters of a ``status_url`` a log line shows (after its user info and query are removed:
#: they may hold credentials).
LOGGED_URL_CHARS = 96
#: Payloads a :class:`StatusPoster` queues at most, by default (see :meth:`StatusPoster.post`).
QUEUE_PAYLOADS = 256
#: The longest wait between two attempts of one POST, in milliseconds.
MAX_BACKOFF_MS = 30_000


class State(str, enum.Enum):
    """A recording's state: SWML's ``params.state``, and ``starting`` before it records
    (waiting for the microphone decision, the beep), which the D-Bus ``State`` shows and no
    status carries."""

    STARTING = "starting"
    RECORDING = "recording"
    PAUSED = "paused"
    FINISHED = "finished"
    NO_INPUT = "no_input"
    ERROR = "error"

    @property
    def final(self) -> bool:
        """True for the states that end a recording (``finished``, ``no_input``, ``error``)."""
        return self in FINAL_STATES


#: The states that end a recording: the last status of one, never dropped by a poster.
FINAL_STATES = frozenset({State.FINISHED, State.NO_INPUT, State.ERROR})
#: States whose payload requires ``duration`` and ``size``.
MEASURED_STATES = frozenset({State.FINISHED, State.NO_INPUT})
#: Pause behaviours (SWML's ``behavior``): keep the paused time as silence, or drop it.
BEHAVIORS = ("silence", "skip")
#: Formats of ``record.audio.format``: SWML's payload lists ``wav`` and ``mp3``; its verb also
#: records ``mp4``, which the payload then reports as it is.
FORMATS = ("wav", "mp3", "mp4")
DIRECTIONS = ("speak", "listen")


def _id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"status {name} must be a non-empty string, not {quote(value)}")
    return value


def _time(name: str, value: Any) -> float:
    """A non-negative finite number of seconds, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"status {name} must be a finite number >= 0, not {quote(value)}")
    return float(value)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"status {name} must be one of {', '.join(choices)}, not {quote(value)}")
    return str(value)


@dataclass(frozen=True)
class Status:
    """One status of a recording, checked when built; :meth:`payload` gives its JSON.

    Ids are described in the module docstring (which desktop id fills which SWML field); all
    are non-empty strings. Times are unix times in seconds.

    :param state: the recording's state (a :class:`State` or its value)
    :param daemon_id: the daemon's id: ``project_id``
    :param node_id: the node's (hostname-based) id: ``params.node_id``
    :param session_id: the session's id: ``space_id``, ``params.call_id``, ``event_channel``
    :param control_id: the record operation's id: ``params.control_id``
    :param recording_id: the recording's id: ``params.recording_id``
    :param url: the recording's URL (``file:///…``)
    :param format: ``wav`` | ``mp3`` | ``mp4``
    :param direction: ``speak`` | ``listen``
    :param stereo: True for a stereo recording
    :param timestamp: when the status was generated, unix time in seconds
    :param start_time: when the recording started; required for final states, else None
    :param end_time: when it ended (>= ``start_time``); required for final states, else None
    :param duration: seconds recorded; required for ``finished`` and ``no_input``, optional
        for ``error``, else None
    :param size: the file's size in bytes; as ``duration``
    :param behavior: ``silence`` | ``skip``; required for ``paused``, else None
    :raises ValueError: for a value of the wrong type or range, or one present or missing
        against the rules of the module docstring
    """

    state: State
    daemon_id: str
    node_id: str
    session_id: str
    control_id: str
    recording_id: str
    url: str
    format: str
    direction: str
    stereo: bool
    timestamp: float
    start_time: float | None = None
    end_time: float | None = None
    duration: float | None = None
    size: int | None = None
    behavior: str | None = None

    def __post_init__(self) -> None:
        try:
            state = State(self.state)
            if state is State.STARTING:
                raise ValueError(state)
        except ValueError:
            raise ValueError(f"status state must be one of "
                             f"{', '.join(s.value for s in State if s is not State.STARTING)}, "
                             f"not {quote(self.state)}") from None
        object.__setattr__(self, "state", state)
        for name in ("daemon_id", "node_id", "session_id", "control_id", "recording_id", "url"):
            _id(name, getattr(self, name))
        _choice("format", self.format, FORMATS)
        _choice("direction", self.direction, DIRECTIONS)
        if not isinstance(self.stereo, bool):
            raise ValueError(f"status stereo must be a bool, not {quote(self.stereo)}")
        object.__setattr__(self, "timestamp", _time("timestamp", self.timestamp))
        self._check_present("behavior", state is State.PAUSED, required=True)
        if self.behavior is not None:
            _choice("behavior", self.behavior, BEHAVIORS)
        for name in ("start_time", "end_time"):
            self._check_present(name, state.final, required=True)
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _time(name, getattr(self, name)))
        if self.start_time is not None and self.end_time is not None \
                and self.end_time < self.start_time:
            raise ValueError(f"status end_time {self.end_time} is before start_time "
                             f"{self.start_time}")
        for name in ("duration", "size"):
            self._check_present(name, state.final, required=state in MEASURED_STATES)
        if self.duration is not None:
            object.__setattr__(self, "duration", _time("duration", self.duration))
        if self.size is not None and (isinstance(self.size, bool)
                                      or not isinstance(self.size, int) or self.size < 0):
            raise ValueError(f"status size must be an integer >= 0, not {quote(self.size)}")

    def _check_present(self, name: str, allowed: bool, *, required: bool) -> None:
        value = getattr(self, name)
        if value is not None and not allowed:
            raise ValueError(f"status {name} is not allowed when state is {self.state.value}")
        if value is None and allowed and required:
            raise ValueError(f"status {name} is required when state is {self.state.value}")

    def payload(self) -> dict[str, Any]:
        """The status as SWML's JSON payload (a new dict of JSON types; keys in the seed's
        order; absent keys are left out, never null)."""
        params: dict[str, Any] = {
            "state": self.state.value,
            "control_id": self.control_id,
            "call_id": self.session_id,
            "node_id": self.node_id,
            "url": self.url,
        }
        if self.duration is not None:
            params["duration"] = self.duration
        if self.size is not None:
            params["size"] = self.size
        params["recording_id"] = self.recording_id
        if self.start_time is not None:
            params["start_time"] = self.start_time
        if self.end_time is not None:
            params["end_time"] = self.end_time
        if self.behavior is not None:
            params["behavior"] = self.behavior
        params["record"] = {"audio": {"format": self.format, "direction": self.direction,
                                      "stereo": self.stereo}}
        return {
            "event_type": EVENT_TYPE,
            "event_channel": f"swml:{self.session_id}",
            "timestamp": self.timestamp,
            "project_id": self.daemon_id,
            "space_id": self.session_id,
            "params": params,
        }


def payload(**fields: Any) -> dict[str, Any]:
    """SWML's status payload: ``Status(**fields).payload()``.

    :param fields: the keyword arguments of :class:`Status`
    :raises ValueError: as :class:`Status`
    :raises TypeError: for an unknown or missing keyword
    """
    return Status(**fields).payload()


def check_status_url(url: Any) -> str:
    """``url`` when it is a usable ``status_url``: http or https, with a host, at most
    :data:`STATUS_URL_CHARS` characters.

    :raises ValueError: naming ``status_url`` and the problem
    """
    import httpx

    if not isinstance(url, str):
        raise ValueError(f"status_url must be a string, not {quote(url)}")
    if len(url) > STATUS_URL_CHARS:
        raise ValueError(f"status_url has {len(url)} characters, at most {STATUS_URL_CHARS}")
    if any(c.isspace() for c in url):
        raise ValueError("status_url has white space (a URL encodes it)")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # a port out of range raises here
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"status_url is not a URL: {quote(str(exc))}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"status_url must be an http or https URL, not "
                         f"{quote(parts.scheme + ':')}")
    if not host:
        raise ValueError("status_url has no host")
    return url


def shown_url(url: str, chars: int = LOGGED_URL_CHARS) -> str:
    """``url`` for a log line: without user info, query and fragment (they may hold
    credentials or tokens), cut to ``chars`` characters + ``…``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        text = f"{parts.scheme}://{host}{port}{parts.path}"
    except ValueError:
        text = url
    return text if len(text) <= chars else text[:chars] + "…"


def _problem(exc: BaseException) -> str:
    """An exception for a log line: its type and a short message (never the request's URL)."""
    text = str(exc)
    return f"{type(exc).__name__}: {quote(text)}" if text else type(exc).__name__


@dataclass(frozen=True)
class _Item:
    body: bytes
    final: bool
    state: str


class StatusPoster:
    """Delivers a recording's status payloads to its ``status_url``, one POST each, in order.

    :meth:`post` only queues; one background task on the running event loop sends the queue
    in order, a later status never before an earlier one. Each POST has at most ``1 + retries``
    attempts; an attempt that ends in a connection error, a timeout or a 5xx answer is retried
    after ``backoff_ms * 2**n`` ms (n = 0, 1, ..., at most :data:`MAX_BACKOFF_MS`), with the
    same bytes as body. A 4xx answer is not retried (the receiver refused this payload), and a
    3xx is not followed (a redirect would change the POST's target, or its method). The status
    is then dropped with a warning and the next one is sent: a failing callback is logged, it
    never raises into the recorder.

    :param url: the ``status_url``
    :param client: the HTTP client to send with (its owner closes it); None: the poster makes
        its own and :meth:`aclose` closes it
    :param retries: attempts after the first one, >= 0
    :param backoff_ms: the wait before the first retry in milliseconds, >= 0; doubles each time
    :param timeout_s: bound of one attempt in seconds, > 0: connecting, sending and waiting for
        the answer's status line and headers (the answer's body is not read)
    :param max_queue: payloads queued at most (:meth:`post` says which one is dropped), >= 1
    :raises ValueError: for a bad ``url`` (naming ``status_url``, see :func:`check_status_url`)
        or a bound out of range
    """

    def __init__(self, url: str, *, client: httpx.AsyncClient | None = None, retries: int = 3,
                 backoff_ms: int = 200, timeout_s: float = 5.0,
                 max_queue: int = QUEUE_PAYLOADS) -> None:
        import httpx

        self.url = check_status_url(url)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, not {quote(retries)}")
        if isinstance(backoff_ms, bool) or not isinstance(backoff_ms, int) or backoff_ms < 0:
            raise ValueError(f"backoff_ms must be an integer >= 0, not {quote(backoff_ms)}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) \
                or not math.isfinite(timeout_s) or timeout_s <= 0:
            raise ValueError(f"timeout_s must be a finite number > 0, not {quote(timeout_s)}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be an integer >= 1, not {quote(max_queue)}")
        self.retries = retries
        self.backoff_ms = backoff_ms
        self.timeout_s = float(timeout_s)
        self.max_queue = max_queue
        self._own_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(
            follow_redirects=False, timeout=httpx.Timeout(self.timeout_s))
        self._shown = shown_url(self.url)
        self._queue: collections.deque[_Item] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._in_flight = False
        self._closing: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Payloads not yet delivered nor given up: queued, plus the one being sent."""
        return len(self._queue) + self._in_flight

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called: :meth:`post` then drops what it is given."""
        return self._closing is not None

    def post(self, payload: dict[str, Any]) -> None:
        """Queue a status payload for delivery and return at once.

        The payload is serialized now (later changes to the dict do not reach the receiver).
        When :attr:`max_queue` payloads are queued, the oldest one that is not final (its
        ``params.state`` is not ``finished``, ``no_input`` or ``error``) is dropped with a
        warning; a final one is never dropped: when every queued payload is final, a new
        non-final one is dropped instead, and a new final one is queued beyond the bound. After
        :meth:`aclose` the payload is dropped with a warning.

        Call it from the event loop's thread, with the loop running (it starts the delivery
        task there).

        :param payload: a payload of :func:`payload` (any JSON object is sent as it is)
        :raises TypeError: when the payload is not JSON-serializable (a programming error)
        :raises ValueError: when it holds NaN or an infinity (idem)
        :raises RuntimeError: when no event loop runs in this thread
        """
        body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
        params = payload.get("params")
        state = params.get("state") if isinstance(params, dict) else None
        state = state if isinstance(state, str) else "?"
        item = _Item(body, state in {s.value for s in FINAL_STATES}, state)
        if self._closing is not None:
            logger.warning("status %s to %s dropped: the poster is closed", state, self._shown)
            return
        loop = asyncio.get_running_loop()
        if len(self._queue) >= self.max_queue and not self._make_room(item):
            return
        self._queue.append(item)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._deliver_all(),
                                            name=f"status POST to {self._shown}")

    def _make_room(self, item: _Item) -> bool:
        """Drop a queued payload for ``item``; False when ``item`` is the one to drop."""
        for i, queued in enumerate(self._queue):
            if not queued.final:
                del self._queue[i]
                logger.warning("status queue for %s full (%d): status %s dropped",
                               self._shown, self.max_queue, queued.state)
                return True
        if item.final:
            return True
        logger.warning("status queue for %s full of final statuses: status %s dropped",
                       self._shown, item.state)
        return False

    async def _deliver_all(self) -> None:
        while self._queue:
            item = self._queue.popleft()
            self._in_flight = True
            try:
                await self._deliver(item)
            except Exception as exc:  # a bug of ours: the next status still goes out
                logger.exception("status %s to %s not sent: %s", item.state, self._shown,
                                 _problem(exc))
            finally:
                self._in_flight = False

    async def _deliver(self, item: _Item) -> None:
        import httpx

        attempts = 1 + self.retries
        for attempt in range(attempts):
            if attempt:
                delay_ms = min(self.backoff_ms * 2 ** (attempt - 1), MAX_BACKOFF_MS)
                await asyncio.sleep(delay_ms / 1000)
            try:
                code = await asyncio.wait_for(self._attempt(item.body), self.timeout_s)
            except (httpx.TransportError, asyncio.TimeoutError) as exc:
                problem = _problem(exc)
            else:
                if code < 300:
                    logger.debug("status %s delivered to %s (%d)", item.state, self._shown,
                                 code)
                    return
                if code < 500:
                    logger.warning("status %s to %s refused: HTTP %d, not retried", item.state,
                                   self._shown, code)
                    return
                problem = f"HTTP {code}"
            logger.debug("status %s to %s, attempt %d of %d failed: %s", item.state,
                         self._shown, attempt + 1, attempts, problem)
        logger.warning("status %s to %s dropped after %d attempts: %s", item.state,
                       self._shown, attempts, problem)

    async def _attempt(self, body: bytes) -> int:
        """One POST; the answer's status code (its body is not read: a receiver's answer is
        not ours to buffer)."""
        import httpx

        async with self._client.stream(
                "POST", self.url, content=body, headers={"Content-Type": "application/json"},
                follow_redirects=False, timeout=httpx.Timeout(self.timeout_s)) as response:
            return response.status_code

    async def aclose(self, deadline_s: float = 10.0) -> None:
        """Deliver what is queued within ``deadline_s`` seconds, then close the client if the
        poster made it. Statuses still queued at the deadline are dropped with a warning.
        Idempotent: a second call waits for the first one's end.

        :param deadline_s: seconds to keep delivering, >= 0
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(deadline_s))
        await self._closing

    async def _close(self, deadline_s: float) -> None:
        worker = self._worker
        if worker is not None and not worker.done():
            try:
                await asyncio.wait_for(asyncio.shield(worker), max(0.0, deadline_s))
            except asyncio.TimeoutError:
                left = self.pending
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
                self._queue.clear()
                logger.warning("status POSTs to %s: %d dropped at the %.1f s deadline",
                               self._shown, left, deadline_s)
        if self._own_client:
            await self._client.aclose()
