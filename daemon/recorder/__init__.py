"""The recorder: SWML's ``record`` verb on the desktop (issue 12).

One recording is a job (:mod:`.job`: its state machine) fed by a capture of the backend
(:meth:`Backend.capture <audiopolicyd.backends.base.Backend.capture>`), judged by a voice-activity
detector (:mod:`.vad`) and a DTMF detector (:mod:`.dtmf`), written as it comes by an encoder
(:mod:`.encode`), and reported by status payloads (:mod:`.status`). Its parameters are
validated by :mod:`.params`.
"""
