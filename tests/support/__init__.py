"""Test support shared by the unit tests: a scripted audio server (:mod:`.fake_backend`)."""
