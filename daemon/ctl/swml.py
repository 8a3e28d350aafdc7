"""``audiopolicyctl swml FILE``: run an SWML document's ``play`` and ``record`` verbs
(:mod:`audiopolicyd.swml`; the seed's example: ``examples/record-and-play.yaml``).

``play`` plays here (``paplay`` on the default device, ``media.role=phone``: the call's own
audio, which the policies route as a call); ``record`` is ``audiopolicyctl record`` in the
foreground (:func:`audiopolicyd.ctl.record.record`), its ``record_url`` and ``record_result``
substituted into the verbs after it. Exit 0 when the document ran to its end, 1 when a verb
failed, 2 when the document is invalid (nothing ran then).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .. import swml
from .record import record, variants

logger = logging.getLogger(__name__)


async def cmd_swml(args: argparse.Namespace) -> int:
    try:
        document = swml.load(args.file)
    except swml.SwmlError as exc:
        print(f"audiopolicyctl: {exc}", file=sys.stderr)
        return 2

    async def record_verb(params: dict) -> tuple[str, str]:
        return await record(args.bus, args.system, variants(params), json_lines=args.json)

    try:
        values = await swml.run(document, record=record_verb, play=swml.play_url)
    except swml.SwmlError as exc:  # a verb failed: its place and why (the daemon's error too)
        print(f"audiopolicyctl: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(values), flush=True)
    else:
        for name, value in values.items():
            print(f"{name}: {value}", flush=True)
    return 0


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    """The ``swml`` command."""
    p = sub.add_parser(
        "swml", parents=[common], help="run an SWML document's play and record verbs",
        description="Run the main section of an SWML document (YAML or JSON): play "
                    "(say:TEXT through espeak-ng, a file or an http(s) URL) and record (as "
                    "'audiopolicyctl record', with ${record_url} and ${record_result} set for "
                    "the verbs after it). Any other verb is an error before anything runs. "
                    "Exit 0: it ran to its end; 1: a verb failed; 2: the document is invalid.")
    p.add_argument("file", metavar="FILE", help="the SWML document (.yaml, .yml or .json)")
    p.add_argument("--json", action="store_true",
                   help="each record status as a JSON line, then the variables as JSON")


HANDLERS = {"swml": cmd_swml}
