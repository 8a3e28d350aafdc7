"""Routing, the pure part: which port type a device is (:mod:`.ports`), which device a
category's streams go to and why (:mod:`.choose`), and the plugin calls around that decision
(:mod:`.decide`). No I/O: the runtime moves streams; the vocabulary is :mod:`audiopolicyd.route`.
"""
