"""Record status payloads (SWML's ``record`` StatusCallbacks) and their delivery by HTTP POST.

The payloads are held to the seed's raw JSON example key for key; delivery is tested against a
real HTTP/1.1 server on 127.0.0.1 (:class:`Receiver`) that records every request and answers
as a test scripts it: a status code, a closed connection, or no answer at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiopolicyd.recorder.status import (
    BEHAVIORS, EVENT_TYPE, FINAL_STATES, MEASURED_STATES, State, Status, StatusPoster,
    check_status_url, payload, shown_url,
)

FUZZ = settings(max_examples=200, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

IDS = {"daemon_id": "daemon-7f3a", "node_id": "node-laptop", "session_id": "sess-42",
       "control_id": "ctl-1", "recording_id": "rec-9", "url": "file:///home/u/rec-9.wav",
       "format": "wav", "direction": "speak", "stereo": False}
START, END = 1640000000.123, 1640000015.623
#: Keys of ``params`` in every payload.
ALWAYS = {"state", "control_id", "call_id", "node_id", "url", "recording_id", "record"}

#: Settings of a poster in these tests: quick retries.
QUICK = {"retries": 3, "backoff_ms": 5, "timeout_s": 2.0}
LOGGER = "audiopolicyd.recorder.status"


def status(state: str, timestamp: float = 1640000000.5, **fields: Any) -> dict[str, Any]:
    """A valid payload of ``state``: the fields its state requires, overridden by ``fields``."""
    s = State(state)
    given_: dict[str, Any] = {}
    if s is State.PAUSED:
        given_["behavior"] = "silence"
    if s.final:
        given_.update(start_time=START, end_time=END)
    if s in MEASURED_STATES:
        given_.update(duration=15.5, size=248320)
    return payload(**{**IDS, "state": state, "timestamp": timestamp, **given_, **fields})


# --- payloads -----------------------------------------------------------------------------------

def test_finished_payload_is_the_seed_example_key_for_key():
    got = status("finished", timestamp=1640000015.7)
    assert got == {
        "event_type": "calling.call.record",
        "event_channel": "swml:sess-42",
        "timestamp": 1640000015.7,
        "project_id": "daemon-7f3a",
        "space_id": "sess-42",
        "params": {
            "state": "finished",
            "control_id": "ctl-1",
            "call_id": "sess-42",
            "node_id": "node-laptop",
            "url": "file:///home/u/rec-9.wav",
            "duration": 15.5,
            "size": 248320,
            "recording_id": "rec-9",
            "start_time": START,
            "end_time": END,
            "record": {"audio": {"format": "wav", "direction": "speak", "stereo": False}},
        },
    }
    # the seed's order, so that a reader of the raw body sees the seed's example
    assert list(got) == ["event_type", "event_channel", "timestamp", "project_id", "space_id",
                         "params"]
    assert list(got["params"]) == ["state", "control_id", "call_id", "node_id", "url",
                                   "duration", "size", "recording_id", "start_time", "end_time",
                                   "record"]


def test_recording_has_no_measures_no_times_no_behavior():
    params = status("recording")["params"]
    assert set(params) == ALWAYS


def test_paused_carries_its_behavior_and_nothing_of_an_end():
    params = status("paused", behavior="skip")["params"]
    assert set(params) == ALWAYS | {"behavior"} and params["behavior"] == "skip"


def test_no_input_is_measured_like_finished():
    params = status("no_input", duration=0, size=44)["params"]
    assert params["duration"] == 0.0 and type(params["duration"]) is float
    assert params["size"] == 44 and params["state"] == "no_input"


def test_error_has_times_and_measures_only_when_known():
    assert set(status("error")["params"]) == ALWAYS | {"start_time", "end_time"}
    params = status("error", duration=3.0, size=1000)["params"]
    assert set(params) == ALWAYS | {"start_time", "end_time", "duration", "size"}


def test_values_are_json_types():
    got = status("finished", timestamp=1640000015, start_time=1640000000, end_time=1640000015,
                 duration=15)
    params = got["params"]
    assert type(got["timestamp"]) is float and type(params["start_time"]) is float
    assert type(params["end_time"]) is float and type(params["duration"]) is float
    assert type(params["size"]) is int and type(params["state"]) is str
    assert json.loads(json.dumps(got)) == got


def test_status_record_is_frozen_and_takes_the_enum():
    s = Status(**IDS, state=State.RECORDING, timestamp=1.0)
    assert s.state is State.RECORDING and s.payload()["params"]["state"] == "recording"
    with pytest.raises(AttributeError):
        s.state = State.PAUSED  # type: ignore[misc]


@pytest.mark.parametrize(("state", "fields", "message"), [
    ("recording", {"behavior": "silence"},
     "status behavior is not allowed when state is recording"),
    ("finished", {"behavior": "skip"}, "status behavior is not allowed when state is finished"),
    ("paused", {"behavior": None}, "status behavior is required when state is paused"),
    ("paused", {"behavior": "mute"}, "status behavior must be one of silence, skip, not 'mute'"),
    ("finished", {"duration": None}, "status duration is required when state is finished"),
    ("no_input", {"size": None}, "status size is required when state is no_input"),
    ("finished", {"start_time": None}, "status start_time is required when state is finished"),
    ("error", {"end_time": None}, "status end_time is required when state is error"),
    ("recording", {"start_time": START},
     "status start_time is not allowed when state is recording"),
    ("paused", {"duration": 1.0}, "status duration is not allowed when state is paused"),
    ("recording", {"size": 1}, "status size is not allowed when state is recording"),
    ("finished", {"end_time": START - 1}, f"status end_time {START - 1} is before start_time"),
    ("finished", {"duration": float("nan")}, "status duration must be a finite number >= 0"),
    ("finished", {"size": -1}, "status size must be an integer >= 0, not -1"),
    ("finished", {"size": True}, "status size must be an integer >= 0, not True"),
    ("recording", {"timestamp": -1.0}, "status timestamp must be a finite number >= 0"),
    ("recording", {"session_id": ""}, "status session_id must be a non-empty string, not ''"),
    ("recording", {"daemon_id": None}, "status daemon_id must be a non-empty string"),
    ("recording", {"format": "ogg"}, "status format must be one of wav, mp3, mp4, not 'ogg'"),
    ("recording", {"direction": "both"}, "status direction must be one of speak, listen"),
    ("recording", {"stereo": 1}, "status stereo must be a bool, not 1"),
])
def test_a_broken_rule_is_a_value_error(state, fields, message):
    with pytest.raises(ValueError) as exc:
        status(state, **fields)
    assert str(exc.value).startswith(message)


def test_an_unknown_state_is_a_value_error():
    with pytest.raises(ValueError, match=r"^status state must be one of recording, paused, "
                                         r"finished, no_input, error, not 'done'$"):
        payload(**IDS, state="done", timestamp=1.0)


@FUZZ
@given(state=st.sampled_from(list(State)),
       start=st.none() | st.floats(1.6e9, 1.7e9),
       end=st.none() | st.floats(1.7e9, 1.8e9),
       duration=st.none() | st.floats(0, 1e6) | st.integers(0, 10**6),
       size=st.none() | st.integers(0, 2**40),
       behavior=st.none() | st.sampled_from(BEHAVIORS))
def test_the_keys_present_follow_the_rules_for_any_state(state, start, end, duration, size,
                                                           behavior):
    final = state in FINAL_STATES
    valid = (state is not State.STARTING  # no status is sent before recording
             and (behavior is not None) == (state is State.PAUSED)
             and (start is not None) == final and (end is not None) == final
             and (final or (duration is None and size is None))
             and (state not in MEASURED_STATES or (duration is not None and size is not None)))
    fields = {**IDS, "state": state.value, "timestamp": 1.7e9, "start_time": start,
              "end_time": end, "duration": duration, "size": size, "behavior": behavior}
    if not valid:
        with pytest.raises(ValueError):
            payload(**fields)
        return
    got = payload(**fields)
    present = {k for k, v in {"start_time": start, "end_time": end, "duration": duration,
                              "size": size, "behavior": behavior}.items() if v is not None}
    assert set(got["params"]) == ALWAYS | present
    assert got["event_type"] == EVENT_TYPE and got["params"]["state"] == state.value
    if state in MEASURED_STATES:
        assert {"duration", "size", "start_time", "end_time"} <= set(got["params"])
    if state is State.PAUSED:
        assert got["params"]["behavior"] in BEHAVIORS
    if not final:
        assert not {"duration", "size", "start_time", "end_time"} & set(got["params"])
    assert json.loads(json.dumps(got, allow_nan=False)) == got


# --- the status_url -----------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.org/cb", "status_url must be an http or https URL, not 'ftp:'"),
    ("file:///x", "status_url must be an http or https URL, not 'file:'"),
    ("http:///cb", "status_url has no host"),
    ("https://", "status_url has no host"),
    ("", "status_url must be an http or https URL, not ':'"),
    ("https://example.org/" + "a" * 2980, "status_url has 3000 characters, at most 2048"),
    ("http://example.org:70000/", "status_url is not a URL: 'Port out of range 0-65535'"),
    ("http://exa mple.org/", "status_url has white space"),
    (None, "status_url must be a string, not None"),
])
def test_a_bad_status_url_is_refused_naming_status_url(url, message):
    with pytest.raises(ValueError) as exc:
        check_status_url(url)
    assert str(exc.value).startswith(message)
    with pytest.raises(ValueError) as exc:
        StatusPoster(url)
    assert str(exc.value).startswith(message)


def test_good_status_urls_pass():
    for url in ("http://127.0.0.1:8080/cb", "https://example.org/a?b=c",
                "https://[::1]/cb", "https://example.org/" + "a" * 2028):
        assert check_status_url(url) == url


@pytest.mark.parametrize(("keyword", "value"), [
    ("retries", -1), ("backoff_ms", -5), ("timeout_s", 0), ("timeout_s", float("inf")),
    ("max_queue", 0), ("retries", 1.5),
])
def test_poster_bounds_are_checked(keyword, value):
    with pytest.raises(ValueError, match=f"^{keyword} must be"):
        StatusPoster("http://127.0.0.1/", **{keyword: value})


def test_a_logged_url_has_no_credentials_and_a_bounded_length():
    shown = shown_url("https://user:secret@example.org/hook/" + "p" * 500 + "?token=hunter2#f")
    assert "secret" not in shown and "hunter2" not in shown and "user" not in shown
    assert shown.startswith("https://example.org/hook/pp") and len(shown) == 97
    assert shown.endswith("…")


# --- a receiver ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 (keep-alive, Content-Length bodies).

    :param script: what to do with the first requests, one entry each: a status code to answer,
        ``"close"`` to close the connection without an answer, ``"hang"`` to never answer;
        the requests after them are answered 200
    """

    def __init__(self, script: tuple[int | str, ...] = ()) -> None:
        self.script = list(script)
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hooks/record"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers = {}
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Request(method, path, headers, body))
                action = self.script.pop(0) if self.script else 200
                if action == "close":
                    return
                if action == "hang":
                    await asyncio.sleep(3600)
                extra = f"Location: {self.url}/elsewhere\r\n" if 300 <= int(action) < 400 else ""
                writer.write(f"HTTP/1.1 {action} Scripted\r\nContent-Length: 2\r\n{extra}\r\nok"
                             .encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()


@contextlib.asynccontextmanager
async def receiving(*script: int | str):
    receiver = await Receiver(tuple(script)).start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/record"


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.WARNING]


# --- delivery -----------------------------------------------------------------------------------

async def test_every_status_arrives_in_order_as_json_posts(caplog):
    sent = [status("recording", 1.0), status("paused", 2.0), status("recording", 3.0),
            status("finished", 4.0)]
    async with receiving() as receiver:
        poster = StatusPoster(receiver.url, **QUICK)
        for p in sent:
            assert poster.post(p) is None
        await poster.aclose()
    assert [r.json() for r in receiver.requests] == sent
    for r in receiver.requests:
        assert r.method == "POST" and r.path == "/hooks/record"
        assert r.headers["content-type"] == "application/json"
        assert int(r.headers["content-length"]) == len(r.body)
    paused = receiver.requests[1].json()["params"]
    assert paused["behavior"] == "silence" and "duration" not in paused
    assert "start_time" not in receiver.requests[0].json()["params"]
    assert warnings_of(caplog) == [] and poster.pending == 0


async def test_a_500_is_retried_with_the_same_bytes(caplog):
    async with receiving(500, 503) as receiver:
        poster = StatusPoster(receiver.url, **QUICK)
        poster.post(status("finished"))
        poster.post(status("recording", 9.0))
        await poster.aclose()
    bodies = [r.body for r in receiver.requests]
    assert len(bodies) == 4 and bodies[0] == bodies[1] == bodies[2]
    assert json.loads(bodies[2]) == status("finished") and json.loads(bodies[3])["timestamp"] == 9
    assert warnings_of(caplog) == []


async def test_a_closed_connection_and_no_answer_are_retried():
    async with receiving("close", "hang") as receiver:
        poster = StatusPoster(receiver.url, retries=2, backoff_ms=5, timeout_s=0.3)
        poster.post(status("recording"))
        await poster.aclose()
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1


async def test_retries_are_bounded_then_the_next_status_goes(caplog):
    async with receiving(500, 500, 500) as receiver:
        poster = StatusPoster(receiver.url, retries=2, backoff_ms=5)
        poster.post(status("recording", 1.0))
        poster.post(status("finished", 2.0))
        await poster.aclose()
    assert [r.json()["timestamp"] for r in receiver.requests] == [1.0, 1.0, 1.0, 2.0]
    assert warnings_of(caplog) == [
        f"status recording to {receiver.url} dropped after 3 attempts: HTTP 500"]


async def test_a_4xx_is_not_retried(caplog):
    async with receiving(404) as receiver:
        poster = StatusPoster(receiver.url, **QUICK)
        poster.post(status("recording", 1.0))
        poster.post(status("finished", 2.0))
        await poster.aclose()
    assert [r.json()["timestamp"] for r in receiver.requests] == [1.0, 2.0]
    assert warnings_of(caplog) == [
        f"status recording to {receiver.url} refused: HTTP 404, not retried"]


async def test_a_redirect_is_not_followed(caplog):
    async with receiving(307) as receiver:
        poster = StatusPoster(receiver.url, **QUICK)
        poster.post(status("recording"))
        await poster.aclose()
    assert [r.path for r in receiver.requests] == ["/hooks/record"]
    assert warnings_of(caplog) == [
        f"status recording to {receiver.url} refused: HTTP 307, not retried"]


async def test_a_receiver_that_is_down_never_reaches_the_caller(caplog):
    url = closed_port_url()
    poster = StatusPoster(url, retries=2, backoff_ms=5)
    assert poster.post(status("recording")) is None  # queued, nothing awaited
    assert poster.pending == 1
    poster.post(status("finished"))
    await asyncio.wait_for(poster.aclose(deadline_s=5.0), 30)
    assert poster.pending == 0
    got = warnings_of(caplog)
    assert len(got) == 2 and all(m.startswith("status ") and url in m and
                                 "dropped after 3 attempts: ConnectError" in m for m in got)


async def test_aclose_gives_up_at_its_deadline(caplog):
    poster = StatusPoster(closed_port_url(), retries=1000, backoff_ms=50)
    poster.post(status("recording"))
    poster.post(status("finished"))
    await asyncio.wait_for(poster.aclose(deadline_s=0.3), 30)
    assert poster.pending == 0 and poster.closed
    assert warnings_of(caplog)[-1].endswith(": 2 dropped at the 0.3 s deadline")


async def test_credentials_in_the_url_stay_out_of_the_log(caplog):
    url = closed_port_url().replace("http://", "http://user:secret@") + "?token=hunter2"
    poster = StatusPoster(url, retries=0)
    poster.post(status("recording"))
    await poster.aclose()
    text = "\n".join(warnings_of(caplog))
    assert "dropped after 1 attempts" in text
    assert "secret" not in text and "hunter2" not in text


async def test_a_full_queue_drops_the_oldest_non_final_status(caplog):
    async with receiving() as receiver:
        poster = StatusPoster(receiver.url, max_queue=4, **QUICK)
        # all queued before the delivery task runs once: the queue overflows
        for n in range(9):
            poster.post(status("recording", float(n)))
        poster.post(status("finished", 9.0))
        await poster.aclose()
    assert [r.json()["timestamp"] for r in receiver.requests] == [6.0, 7.0, 8.0, 9.0]
    assert receiver.requests[-1].json()["params"]["state"] == "finished"
    assert len([m for m in warnings_of(caplog) if "full (4)" in m]) == 6


async def test_a_final_status_is_never_dropped(caplog):
    async with receiving() as receiver:
        poster = StatusPoster(receiver.url, max_queue=1, **QUICK)
        poster.post(status("finished", 1.0))
        poster.post(status("recording", 2.0))  # the queue holds only a final one: this goes
        poster.post(status("error", 3.0))  # queued beyond the bound
        await poster.aclose()
    assert [r.json()["timestamp"] for r in receiver.requests] == [1.0, 3.0]
    assert warnings_of(caplog) == [f"status queue for {receiver.url} full of final statuses: "
                                   f"status recording dropped"]


async def test_the_body_is_the_payload_as_posted():
    p = status("recording")
    async with receiving() as receiver:
        poster = StatusPoster(receiver.url, **QUICK)
        poster.post(p)
        p["params"]["state"] = "changed later"
        await poster.aclose()
    assert receiver.requests[0].json()["params"]["state"] == "recording"


async def test_aclose_is_idempotent_and_closes_only_its_own_client(caplog):
    async with receiving() as receiver, httpx.AsyncClient() as client:
        mine = StatusPoster(receiver.url, **QUICK)
        theirs = StatusPoster(receiver.url, client=client, **QUICK)
        mine.post(status("recording", 1.0))
        theirs.post(status("recording", 2.0))
        await asyncio.gather(mine.aclose(), mine.aclose(), theirs.aclose())
        await mine.aclose()
        assert mine._client.is_closed and not client.is_closed
        mine.post(status("finished", 3.0))  # after aclose: dropped, logged
        await asyncio.sleep(0.05)
    assert sorted(r.json()["timestamp"] for r in receiver.requests) == [1.0, 2.0]
    assert warnings_of(caplog) == [
        f"status finished to {receiver.url} dropped: the poster is closed"]


async def test_a_payload_that_is_not_json_is_a_programming_error():
    poster = StatusPoster("http://127.0.0.1:9/")
    with pytest.raises(TypeError):
        poster.post({"params": {"state": object()}})
    with pytest.raises(ValueError):
        poster.post({"timestamp": float("nan")})
    assert poster.pending == 0
    await poster.aclose()
