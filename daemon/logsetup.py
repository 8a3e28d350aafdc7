"""Logging: journald with structured fields when journald is there, stderr otherwise.

Effect changes carry the journal fields ``STREAM``, ``APP``, ``CATEGORY``, ``EFFECT`` and
``REASON`` so ``journalctl --user -u audiopolicyd EFFECT=mute`` finds them.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger(__name__)

_FORMAT = "%(levelname)s %(name)s: %(message)s"


def journald_available() -> bool:
    """True when our stderr is connected to journald (systemd sets ``JOURNAL_STREAM``)."""
    if not os.environ.get("JOURNAL_STREAM") or not os.path.exists("/run/systemd/journal/socket"):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return os.environ["JOURNAL_STREAM"] == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: int = logging.INFO, target: str = "auto") -> str:
    """Configure the root logger.

    :param level: logging level
    :param target: ``auto`` | ``journal`` | ``stderr``
    :returns: the target chosen
    """
    if target == "auto":
        target = "journal" if journald_available() else "stderr"
    handler: logging.Handler
    if target == "journal":
        from systemd.journal import JournalHandler

        handler = JournalHandler(SYSLOG_IDENTIFIER="audiopolicyd")
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return target


def log_effect(log: logging.Logger, view) -> None:
    """Log one stream's new effect with structured journal fields.

    :param view: a :class:`~audiopolicyd.runtime.StreamView`
    """
    stream, effect = view.stream, view.effect
    why = "; ".join(str(r) for r in effect.reasons) or "no session acts on it"
    log.info("%s (%s, %s) -> %s: %s", stream.key, stream.label, view.category or "?",
             effect.summary, why,
             extra={"STREAM": stream.key, "APP": stream.label, "CATEGORY": view.category,
                    "EFFECT": effect.summary, "REASON": why})
