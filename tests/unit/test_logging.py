"""Effect changes reach journald with structured fields."""

from __future__ import annotations

import logging

from systemd.journal import JournalHandler

from audiopolicyd.logsetup import log_effect
from audiopolicyd.model import Effect, Reason
from audiopolicyd.runtime import StreamView

from .conftest import make_stream


def test_effect_log_carries_journal_fields():
    sent = []
    handler = JournalHandler(sender_function=lambda MESSAGE, **fields: sent.append((MESSAGE, fields)))
    log = logging.getLogger("test.journal")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        effect = Effect(gain=0.2, reasons=(Reason("duck", "s1", "playAndRecord",
                                                  "playAndRecord.toml", "activation.others"),))
        log_effect(log, StreamView(make_stream(7, role="game", app="supertux"), "ambient",
                                   "rule", "s0", effect))
    finally:
        log.removeHandler(handler)
    (msg, fields), = sent
    assert msg == ("sink-input:7 (supertux, ambient) -> duck 0.20: duck by playAndRecord session "
                   "s1 (playAndRecord.toml: activation.others)")
    assert (fields["STREAM"], fields["APP"], fields["CATEGORY"], fields["EFFECT"]) == (
        "sink-input:7", "supertux", "ambient", "duck 0.20")
    assert fields["REASON"].startswith("duck by playAndRecord")
