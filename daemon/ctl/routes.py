"""``audiopolicyctl routes``, ``route CATEGORY PORT-UID`` and ``route reset APP``: where each
category's streams go and why, and the user's say over it (``Manager.GetRoutes``,
``SetCategoryRoute``, ``ResetRoutes``; docs/routing.md, "The router")."""

from __future__ import annotations

import argparse
import json
import logging

from rich.table import Table

from .common import console

logger = logging.getLogger(__name__)

#: ``route CATEGORY default``: forget the category's preference (its policy decides again).
CLEAR = "default"


def _port(uid: str, port_type: str) -> str:
    return f"{port_type} {uid}" if uid else "-"


async def cmd_routes(args: argparse.Namespace) -> int:
    """Every device with its port type, where each category and session routes and why, and
    the routes the user chose."""
    from . import Client
    async with Client(args) as c:
        table = await c.routes()
    if args.json:
        print(json.dumps(table, indent=2, sort_keys=True))
        return 0
    devices = Table("DEVICE", "DIRECTION", "PORT TYPE", "UID", "DEFAULT", box=None)
    for d in table["Devices"]:
        devices.add_row(d["Description"], d["Direction"], d["PortType"], d["Uid"],
                        "yes" if d["Default"] else "")
    console.print(devices, markup=False)
    for title, key, first in (("CATEGORY", "Categories", "Category"),
                              ("SESSION", "Sessions", "Session")):
        rows = Table(title, "OUTPUT", "INPUT", "WHY", box=None)
        for r in table[key]:
            why = [f"output: {r['OutputReason']}", f"input: {r['InputReason']}"]
            if r.get("Preference"):
                why.append(f"the user's preference: {r['Preference']}")
            rows.add_row(r[first], _port(r["Output"], r["OutputType"]),
                         _port(r["Input"], r["InputType"]), "\n".join(why))
        console.print(rows, markup=False)
    if table["Pins"]:
        pins = Table("APP", "CATEGORY", "DIRECTION", "STAYS ON (the user moved it)", box=None)
        for p in table["Pins"]:
            pins.add_row(p["Application"], p["Category"], p["Direction"], p["Device"])
        console.print(pins, markup=False)
    return 0


async def cmd_route(args: argparse.Namespace) -> int:
    """``route CATEGORY PORT-UID`` (``default`` forgets the preference) or ``route reset APP``."""
    from . import Client
    first, second = args.words
    async with Client(args) as c:
        if first == "reset":
            forgotten = await c.reset_routes(second)
            answer = {"App": second, "Forgotten": forgotten}
            text = f"{second}: forgot {forgotten} route(s) the user chose" if forgotten \
                else f"{second}: no route chosen by the user"
        else:
            uid = "" if second == CLEAR else second
            await c.set_category_route(first, uid)
            answer = {"Category": first, "Preference": uid}
            text = f"{first}: on {uid} when present" if uid else \
                f"{first}: routed by its policy again"
    print(json.dumps(answer, indent=2, sort_keys=True)) if args.json else \
        console.print(text, markup=False)
    return 0


def add_parsers(sub, common: argparse.ArgumentParser, reads: argparse.ArgumentParser) -> None:
    """The ``routes`` and ``route`` commands."""
    sub.add_parser("routes", parents=[common, reads],
                   help="every device with its port type, where each category routes and why",
                   description="List every sink and source with its port type (Apple's names) "
                               "and uid, where each category's and session's streams go and "
                               "why, and the routes the user chose.")
    route = sub.add_parser(
        "route", parents=[common, reads], help="choose a category's port, or reset an app's",
        usage="audiopolicyctl route CATEGORY PORT-UID | route reset APP",
        description="route CATEGORY PORT-UID: put the category's streams on that port whenever "
                    "it is present (a uid as 'routes' shows it; 'default' forgets the choice). "
                    "route reset APP: forget where the user moved APP's streams (an app as "
                    "'routes' shows under APP, with or without its 'exe:'/'app:' kind).")
    route.add_argument("words", nargs=2, metavar="ARG")


HANDLERS = {"routes": cmd_routes, "route": cmd_route}
