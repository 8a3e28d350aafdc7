"""What every ``audiopolicyctl`` command shares: its error and its console."""

from __future__ import annotations

import logging
import sys

from rich.console import Console

logger = logging.getLogger(__name__)

#: Where tables go; as wide as the terminal, or 200 columns into a pipe.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


class CtlError(Exception):
    """A failure to report as ``audiopolicyctl: <message>`` with exit code 2."""
