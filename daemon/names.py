"""The daemon's names on D-Bus, in one place for the daemon, the client, ``audiopolicyctl`` and
the prompt agents.

The API they name is frozen in ``docs/dbus/io.github.audiopolicyd.AudioPolicy1.xml`` and
documented in ``docs/dbus-api.md``; the bus name is versioned (``...1``) as firewalld's
``org.fedoraproject.FirewallD1``, so an incompatible API would get a new name beside this one.
Error names are built from :data:`ERROR_PREFIX` by :mod:`audiopolicyd.errors`.

Pure: no D-Bus, no I/O.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

#: Well-known bus name of the daemon.
BUS_NAME = "io.github.audiopolicyd.AudioPolicy1"
#: Object path of the Manager; sessions live under :data:`SESSION_PATH_PREFIX`.
OBJECT_PATH = "/io/github/audiopolicyd/AudioPolicy1"
MANAGER_IFACE = BUS_NAME + ".Manager"
SESSION_IFACE = BUS_NAME + ".Session"
#: One recording (``Manager.Record``); ``Recording`` is the Manager's who-is-recording property.
RECORDER_IFACE = BUS_NAME + ".Recorder"
#: Implemented by prompt agents, called by the daemon.
AGENT_IFACE = BUS_NAME + ".PermissionAgent"
#: Where ``audiopolicyctl agent`` exports :data:`AGENT_IFACE` on its own connection.
AGENT_PATH = "/io/github/audiopolicyd/PermissionAgent"
#: A session's object path is this prefix and its id (``s3``).
SESSION_PATH_PREFIX = OBJECT_PATH + "/session/"
#: A recording's object path is this prefix and its control id (32 hex digits).
RECORDER_PATH_PREFIX = OBJECT_PATH + "/recorder/"
#: Prefix of the daemon's D-Bus error names (``...Error.NotAllowed``).
ERROR_PREFIX = BUS_NAME + ".Error."

#: The message bus itself, as ``Message(**BUS_DAEMON, member=..., ...)`` takes it.
BUS_DAEMON = {"destination": "org.freedesktop.DBus", "path": "/org/freedesktop/DBus",
              "interface": "org.freedesktop.DBus"}
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER_IFACE = "org.freedesktop.DBus.ObjectManager"

#: Errors of the message bus meaning that nobody owns the name called.
NO_OWNER_ERRORS = ("org.freedesktop.DBus.Error.ServiceUnknown",
                   "org.freedesktop.DBus.Error.NameHasNoOwner")
#: Errors meaning that the peer's connection is gone (or never answered).
GONE_ERRORS = frozenset({"org.freedesktop.DBus.Error.NoReply",
                         "org.freedesktop.DBus.Error.Disconnected", *NO_OWNER_ERRORS})
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
