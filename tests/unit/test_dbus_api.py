"""The public D-Bus API is frozen: docs/dbus/io.github.audiopolicyd.AudioPolicy1.xml must
equal what the adapter declares. After an intended API change, regenerate the file with

    .venv/bin/python tests/unit/test_dbus_api.py > docs/dbus/io.github.audiopolicyd.AudioPolicy1.xml

and document the change in docs/dbus-api.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.introspection import Node

from audiopolicyd import limits
from audiopolicyd.agents import PermissionAgentInterface
from audiopolicyd.dbus import ManagerInterface, RecorderInterface, SessionInterface
from audiopolicyd.dbus.agents import AgentClient as CallerAwareCalls  # the agent round trip
from audiopolicyd.dbus.convert import category_arguments, error, plain_dict, session_hints
from audiopolicyd.names import ERROR_PREFIX
from audiopolicyd.limits import InvalidArgument, check_text, check_texts, quote
from audiopolicyd.microphone.broker import AgentFailed

DOCTYPE = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
           ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')
FROZEN = Path(__file__).resolve().parents[2] / "docs/dbus/io.github.audiopolicyd.AudioPolicy1.xml"


def render() -> str:
    """The declared interfaces as one introspection document."""
    node = Node(name=None, interfaces=[ManagerInterface(None).introspect(),
                                       SessionInterface(None).introspect(),
                                       RecorderInterface(None).introspect(),
                                       PermissionAgentInterface(None).introspect()])
    element = node.to_xml()
    ElementTree.indent(element)
    return DOCTYPE + ElementTree.tostring(element, encoding="unicode") + "\n"


def shape(node: Node) -> dict:
    """Interfaces as comparable data: members with their argument signatures and access."""
    out = {}
    for iface in node.interfaces:
        out[iface.name] = {
            "methods": {m.name: ([a.signature for a in m.in_args],
                                 [a.signature for a in m.out_args]) for m in iface.methods},
            "signals": {s.name: [a.signature for a in s.args] for s in iface.signals},
            "properties": {p.name: (p.signature, p.access.value) for p in iface.properties},
        }
    return out


def test_declared_api_equals_the_frozen_file():
    frozen = shape(Node.parse(FROZEN.read_text()))
    declared = shape(Node.parse(render()))
    assert declared == frozen, __doc__


def test_every_member_is_documented():
    doc = (FROZEN.parents[1] / "dbus-api.md").read_text()
    for iface in shape(Node.parse(FROZEN.read_text())).values():
        for kind in ("methods", "signals", "properties"):
            for name in iface[kind]:
                assert f"`{name}" in doc, f"{name} is not in docs/dbus-api.md"


def test_errors_are_namespaced_and_payloads_typed():
    err = error("NotOwner", "session s1 belongs to :1.2")
    assert err.type == ERROR_PREFIX + "NotOwner" == \
        "io.github.audiopolicyd.AudioPolicy1.Error.NotOwner"
    typed = plain_dict({"should_resume": True, "duration_ms": 12, "options": ["shouldResume"],
                        "reason": "default"})
    assert {k: v.signature for k, v in typed.items()} == {
        "should_resume": "b", "duration_ms": "x", "options": "as", "reason": "s"}


MIB = 1 << 20


def test_quote_shows_a_short_prefix_and_escapes():
    assert quote("karaoke") == "'karaoke'"
    assert quote("x" * MIB) == "'" + "x" * limits.QUOTE_CHARS + "\u2026'"
    assert quote("a\nforged log line") == "'a\\nforged log line'"
    assert quote(["Name"]) == "['Name']" and quote(1.0) == "1.0"  # other values: their repr
    assert quote(10 ** 5000) == "<integer of 16610 bits>"


def test_check_text_and_texts_name_the_argument_and_the_limit():
    assert check_text("Explain target", "s1", 10) == "s1"
    with pytest.raises(InvalidArgument, match=r"^Explain target is 11 characters long; the "
                                              r"limit is 10$"):
        check_text("Explain target", "x" * 11, 10)
    with pytest.raises(InvalidArgument, match="^Name must be a string, not int$"):
        check_text("Name", 3, 10)
    assert check_texts("options", ["a", "b"], 2, 1) == ["a", "b"]
    with pytest.raises(InvalidArgument, match=r"^options has 3 items; the limit is 2$"):
        check_texts("options", ["a"] * 3, 2, 1)
    with pytest.raises(InvalidArgument, match=r"^options\[1\] is 2 characters long; the limit "
                                              r"is 1$"):
        check_texts("options", ["a", "bb"], 2, 1)
    with pytest.raises(InvalidArgument, match="must be an array of strings, not str"):
        check_texts("options", "a", 2, 1)


def test_session_hints_are_typed_and_bounded():
    assert session_hints({"Name": Variant("s", "Player"), "Options": Variant("as", ["a"]),
                          "Future": Variant("ay", b"\0" * MIB)}) == \
        {"Name": "Player", "Options": ["a"]}
    assert session_hints({}) == {}
    refused = {
        "Name": [Variant("s", "N" * MIB), Variant("as", ["Player"]), Variant("u", 3)],
        "Category": [Variant("s", "c" * 65), Variant("v", Variant("s", "playback"))],
        "Mode": [Variant("s", "m" * 65)],
        "Options": [Variant("as", ["mixWithOthers"] * 17), Variant("as", ["o" * 65]),
                    Variant("s", "mixWithOthers")],
    }
    for key, values in refused.items():
        for value in values:
            with pytest.raises(InvalidArgument, match=f"CreateSession hint {key}") as info:
                session_hints({key: value})
            assert len(str(info.value)) < 200
    with pytest.raises(InvalidArgument, match="hints has 33 entries; the limit is 32"):
        session_hints({f"k{i}": Variant("s", "") for i in range(33)})
    with pytest.raises(InvalidArgument, match="key is 65 characters long; the limit is 64"):
        session_hints({"k" * 65: Variant("s", "")})


def test_set_category_arguments_are_bounded():
    category_arguments("playAndRecord", "voiceChat", ["allowBluetooth"] * 16)
    for args, name in [(("c" * 65, "default", []), "SetCategory category"),
                       (("playback", "m" * MIB, []), "SetCategory mode"),
                       (("playback", "default", ["o"] * 17), "SetCategory options"),
                       (("playback", "default", ["o" * 65]), r"SetCategory options\[0\]")]:
        with pytest.raises(InvalidArgument, match=f"^{name} ") as info:
            category_arguments(*args)
        assert len(str(info.value)) < 200


class CannedBus:
    """Answers every call with one reply, as an agent's connection would (the reply's checks
    are pure; the agent round trip itself is tested in tests/unit/test_agent.py)."""

    def __init__(self, signature: str, body: list, error_name: str | None = None):
        self.signature, self.body, self.error_name = signature, body, error_name

    async def call(self, msg: Message) -> Message:
        kind = MessageType.ERROR if self.error_name else MessageType.METHOD_RETURN
        return Message(message_type=kind, error_name=self.error_name, reply_serial=1,
                       signature=self.signature, body=self.body)


class Agent:
    owner, path = ":1.9", "/agent"


@pytest.mark.parametrize("bus, message", [
    (CannedBus("sa{sv}", ["granted", {}]), None),
    (CannedBus("sa{sv}", ["g" * MIB, {}]), "the agent's decision is 1048576 characters long"),
    (CannedBus("sa{sv}", ["granted", {f"k{i}": Variant("s", "") for i in range(33)}]),
     "the agent's details has 33 entries; the limit is 32"),
    (CannedBus("s", ["x" * MIB]), "reply of signature 's', not 'sa{sv}'"),
    (CannedBus("s", ["d" * MIB], error_name="org.example.Error.Failed"),
     "org.example.Error.Failed: '" + "d" * 64 + "\u2026'"),
])
async def test_an_agents_reply_is_bounded(bus, message):
    calls = CallerAwareCalls.__new__(CallerAwareCalls)  # ask() needs nothing but the bus
    calls.bus = bus
    if message is None:
        assert await calls.ask(Agent(), "r1", "exe:/usr/bin/pacat", {}) == "granted"
        return
    with pytest.raises(AgentFailed) as info:
        await calls.ask(Agent(), "r1", "exe:/usr/bin/pacat", {})
    assert str(info.value).startswith(message) and len(str(info.value)) < 200
    assert not info.value.gone


def test_the_limits_table_in_the_docs_says_what_the_code_does():
    """docs/dbus-api.md's Limits table gives every bound with the value of its constant."""
    doc = (FROZEN.parents[1] / "dbus-api.md").read_text()
    table = doc[doc.index("## Limits"):doc.index("## Errors")]
    rows = {cells[0]: cells[1] for cells in
            (re.split(r"\s*\|\s*", line.strip("| ")) for line in table.splitlines()
             if line.startswith("| `") or line.startswith("| a "))}
    expected = {
        "`CreateSession` hints": f"{limits.HINTS_ITEMS} entries; each key "
                                 f"{limits.HINT_KEY_CHARS} characters",
        "`CreateSession` hint `Name`": f"{limits.NAME_CHARS} characters",
        "`CreateSession` hints `Category`, `Mode`; `SetCategory` category, mode":
            f"{limits.IDENTIFIER_CHARS} characters",
        "`CreateSession` hint `Options`; `SetCategory` options; `SetActive` options":
            f"{limits.OPTIONS_ITEMS} items of {limits.IDENTIFIER_CHARS} characters",
        "`Explain` target": f"{limits.TARGET_CHARS} characters",
        "`SetRecordPermission` app_id": f"1 to {limits.APP_ID_CHARS} characters",
        "`SetRecordPermission` decision": f"{limits.IDENTIFIER_CHARS} characters (and "
                                          "`granted`, `denied` or `undetermined`)",
        "`RegisterPermissionAgent`, `UnregisterPermissionAgent` path":
            f"{limits.OBJECT_PATH_CHARS} characters",
        "a prompt agent's `RequestRecordPermission` reply":
            f"decision {limits.IDENTIFIER_CHARS} characters; details "
            f"{limits.AGENT_DETAILS_ITEMS} entries",
    }
    assert rows == expected
    assert f"first {limits.QUOTE_CHARS} characters" in table


if __name__ == "__main__":
    sys.stdout.write(render())


def test_a_methods_file_descriptors_are_its_own_and_the_messages_are_closed():
    import os

    from audiopolicyd.dbus.service import _with_fds, close_fds

    read, write = os.pipe()
    msg = Message(destination="org.example.X", path="/x", interface="x.y", member="RecordToFile",
                  signature="a{sv}h", body=[{}, 0], unix_fds=[write])
    params, fd = _with_fds(msg)
    assert params == {} and fd != write
    close_fds(msg)
    with pytest.raises(OSError):
        os.fstat(write)  # the message's own is closed
    os.write(fd, b"ok")  # the method's duplicate works
    os.close(fd)
    assert os.read(read, 2) == b"ok"
    os.close(read)
    bad = Message(destination="org.example.X", path="/x", interface="x.y", member="RecordToFile",
                  signature="a{sv}h", body=[{}, 3], unix_fds=[])
    with pytest.raises(InvalidArgument, match="names no file descriptor"):
        _with_fds(bad)
    plain = Message(destination="org.example.X", path="/x", interface="x.y", member="Record",
                    signature="a{sv}", body=[{}])
    assert _with_fds(plain) is plain.body
