"""The microphone gate: who may record, where decisions live, and how the gate is enforced.

* :mod:`.broker`: decisions, one request per app, prompt agents, who records now;
* :mod:`.stores`: where decisions live (xdg-permission-store, or SQLite);
* :mod:`.privacy`: the desktop's global microphone switch (GNOME's ``disable-microphone``).
"""
