"""The README's table of what the shipped policies do ("What it does"), checked by simulation.

Each row becomes scenarios for :mod:`audiopolicyd.simulate`: one stream of each column's
category starts, then the row's trigger (of each category the row names, with the role it
names); the simulated effect on each column's stream must be what the cell says. The streams
are classified by the shipped rules, and the test checks they land in the categories the
headers name, so the table, the rules and the decision are held to each other.

Cells: ``mixes`` (no effect), ``ducked to X`` (``duck X``), ``muted``, ``paused ... or muted``
(paused when the app has an MPRIS player, muted when not, both tried), and ``(`role` kept)``
(a stream of that role in the column's category has no effect). Any other cell fails the test:
the table must stay something the daemon can be held to.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from audiopolicyd import simulate as sim
from audiopolicyd.model import CATEGORIES

README = Path(__file__).resolve().parents[2] / "README.md"

_TICKED = re.compile(r"`([^`]+)`")
_ROLE = re.compile(r"role `([^`]+)`")
_KEPT = re.compile(r"\(`([^`]+)` kept\)")
_DUCKED = re.compile(r"ducked to (\d+(?:\.\d+)?)")


def table() -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The column headers and the rows (header, cells) of the section's table."""
    text = README.read_text()
    section = text[text.index("## What it does"):]
    section = section[:section.index("\n## ", 1)]
    lines = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    header, rows = cells[0], cells[2:]  # cells[1] is the |---| line
    assert rows, "no rows"
    return header[1:], [(row[0], row[1:]) for row in rows]


def categories_in(text: str) -> list[str]:
    return [t for t in _TICKED.findall(text) if t in CATEGORIES]


def expected(cell: str) -> tuple[dict[bool, str], str | None]:
    """What a cell says: the effect by whether the app has a player, and a kept role."""
    kept = _KEPT.search(cell)
    plain = _KEPT.sub("", cell).strip()
    if plain == "mixes":
        effect = {True: "none", False: "none"}
    elif plain == "muted":
        effect = {True: "mute", False: "mute"}
    elif re.fullmatch(r"paused( \(MPRIS\))? or muted", plain):
        effect = {True: "pause", False: "mute"}
    elif (ducked := _DUCKED.fullmatch(plain)) is not None:
        effect = {True: f"duck {float(ducked.group(1)):.2f}"} | {
            False: f"duck {float(ducked.group(1)):.2f}"}
    else:
        raise AssertionError(f"README cell {cell!r}: not a behaviour this test knows")
    return effect, kept.group(1) if kept else None


def stream_of(category: str, policies, role: str | None = None) -> dict:
    """A stream the shipped rules put in ``category``: of the role given, else of the first
    role its rules name, else (the default category of a direction) of no role."""
    policy = policies.policies[category]
    kind = "record" if "record" in policy.default_for or not policy.plays else "playback"
    if role is None and not policy.default_for:
        role = next(r.match["media.role"][0] for r in policy.classify
                    if "media.role" in r.match)
    return {"kind": kind, "properties": {"media.role": role} if role else {}}


def scenarios(policies):
    header, rows = table()
    victims = [categories_in(h) for h in header]
    assert all(len(v) == 1 for v in victims), header
    for row, cells in rows:
        triggers = categories_in(row)
        assert triggers, row
        role = _ROLE.search(row)
        for trigger in triggers:
            yield row, trigger, role.group(1) if role else None, [v[0] for v in victims], cells


def simulate_cell(policies, pm, trigger: str, role: str | None, victim: str, cell: str,
                  player: bool):
    """One cell: a stream of the column's category (and one of the kept role) starts, then
    the trigger; the result and the effect each should get."""
    effect, kept = expected(cell)
    streams = {"victim": stream_of(victim, policies)}
    streams["victim"]["properties"]["application.name"] = "victim"
    if player:
        streams["victim"]["properties"]["application.process.id"] = "1000"
        streams["victim"]["player"] = True
    wanted = {"victim": effect[player]}
    if kept:
        streams["kept"] = {"properties": {"media.role": kept, "application.name": "kept"}}
        wanted["kept"] = "none"
    streams["trigger"] = stream_of(trigger, policies, role)
    streams["trigger"]["properties"]["application.name"] = "trigger"
    doc = {"schema": 1, "streams": streams, "activate": list(streams)}  # the trigger last
    return sim.simulate(sim.parse_scenario(doc, "README.md"), policies, pm), wanted


def test_the_table_has_the_shipped_categories(policies) -> None:
    header, rows = table()
    assert [categories_in(h) for h in header] == [["playback"], ["soloAmbient"], ["ambient"]]
    assert [categories_in(r) for r, _ in rows] == [
        ["playAndRecord"], ["record"], ["playback", "soloAmbient"], ["multiRoute"]]


@pytest.mark.parametrize("player", [True, False], ids=["with player", "without player"])
def test_each_row_is_what_the_daemon_decides(policies, pm, player: bool) -> None:
    checked = 0
    for row, trigger, role, victims, cells in scenarios(policies):
        for victim, cell in zip(victims, cells):
            result, wanted = simulate_cell(policies, pm, trigger, role, victim, cell, player)
            by_name = {s["Target"]: s for s in result.streams}
            assert by_name["trigger"]["Category"] == trigger, row
            assert by_name["victim"]["Category"] == victim, (row, victim)
            if "kept" in by_name:
                assert by_name["kept"]["Category"] == victim, (row, victim)
            got = {name: result.effects[name].summary for name in wanted}
            assert got == wanted, f"README row {row!r}, column {victim} ({trigger} started " \
                                  f"later; the app has {'a' if player else 'no'} player)"
            checked += 1
    assert checked == 5 * 3


def test_a_cell_the_test_cannot_read_fails() -> None:
    with pytest.raises(AssertionError, match="not a behaviour this test knows"):
        expected("quieter")
    assert expected("paused (MPRIS) or muted") == ({True: "pause", False: "mute"}, None)
    assert expected("muted (`a11y` kept)") == ({True: "mute", False: "mute"}, "a11y")
    assert expected("ducked to 0.3") == ({True: "duck 0.30", False: "duck 0.30"}, None)
