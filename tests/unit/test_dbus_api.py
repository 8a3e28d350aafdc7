"""The public D-Bus API is frozen: docs/dbus/io.github.audiopolicyd.AudioPolicy1.xml must
equal what the adapter declares. After an intended API change, regenerate the file with

    .venv/bin/python tests/unit/test_dbus_api.py > docs/dbus/io.github.audiopolicyd.AudioPolicy1.xml

and document the change in docs/dbus-api.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.etree import ElementTree

from dbus_fast.introspection import Node

from audiopolicyd.agent import PermissionAgentInterface
from audiopolicyd.dbus_api import (
    ERROR_PREFIX, ManagerInterface, SessionInterface, error, plain_dict,
)

DOCTYPE = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
           ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')
FROZEN = Path(__file__).resolve().parents[2] / "docs/dbus/io.github.audiopolicyd.AudioPolicy1.xml"


def render() -> str:
    """The declared interfaces as one introspection document."""
    node = Node(name=None, interfaces=[ManagerInterface(None).introspect(),
                                       SessionInterface(None).introspect(),
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


if __name__ == "__main__":
    sys.stdout.write(render())
