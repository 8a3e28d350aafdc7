"""What a D-Bus client may send: the bound of every string and array, in one place; and how
any message quotes a value someone else sent (a client, a policy file).

A client is anyone on the bus, sandboxed or hostile. Every string and array argument of the
API has a bound (docs/dbus-api.md, "Limits"); beyond it, or of the wrong type where the
signature leaves the type open (a variant in ``a{sv}``), the call fails with
``io.github.audiopolicyd.AudioPolicy1.Error.InvalidArgument`` whose message names the
argument and the bound. Bounds are far above any honest value (Apple's longest category
option is 36 characters) and far below what costs memory or floods a log.

Error and log messages quote at most :data:`QUOTE_CHARS` characters of a client's value, with
:func:`quote`: a 1 MiB name is never echoed back, nor sent to every listener of a signal.

Pure: no D-Bus, no I/O. :mod:`audiopolicyd.dbus` checks the arguments with :func:`check_text`
and :func:`check_texts`; the core quotes with :func:`quote` (policy files' values too), which is
why this module stays beside the core rather than in :mod:`audiopolicyd.dbus`.
:class:`~audiopolicyd.errors.InvalidArgument` is the error tree's leaf.
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import InvalidArgument

logger = logging.getLogger(__name__)

#: Characters of a client's value quoted in a message (then an ellipsis).
QUOTE_CHARS = 64

#: ``CreateSession`` hint ``Name``: what ``audiopolicyctl sessions`` shows.
NAME_CHARS = 256
#: A category, mode or option name (hint ``Category``/``Mode``/``Options``, ``SetCategory``,
#: ``SetActive``), a microphone decision, and a prompt agent's answer.
IDENTIFIER_CHARS = 64
#: Options in one call (hint ``Options``, ``SetCategory``, ``SetActive``).
OPTIONS_ITEMS = 16
#: Entries of ``CreateSession``'s hints, and characters of one hint's key.
HINTS_ITEMS = 32
HINT_KEY_CHARS = 64
#: ``Explain``'s target: longer than any stream key, session id or session path the daemon
#: gives (stream properties are cut to 1024 characters, so an implicit session id is shorter).
TARGET_CHARS = 4096
#: ``SetRecordPermission``'s and ``ResetRoutes``' app id.
APP_ID_CHARS = 512
#: ``SetCategoryRoute``'s and ``SetPreferredInput``'s port uid (a device's name and its port's
#: name, as the server gives them: PulseAudio bounds a name to 128 bytes, ``PA_NAME_MAX``,
#: ALSA's device names are far shorter).
PORT_UID_CHARS = 1024
#: ``RegisterPermissionAgent``'s and ``UnregisterPermissionAgent``'s object path.
OBJECT_PATH_CHARS = 256
#: Entries of the ``details`` a prompt agent returns (reserved, read as nothing).
AGENT_DETAILS_ITEMS = 32


def quote(value: Any, chars: int = QUOTE_CHARS) -> str:
    """A value someone else sent (a D-Bus client, a policy file), for a message: its ``repr``,
    cut to ``chars`` characters + ``…``.

    :param value: any value; a string is cut before its ``repr`` is taken (so it stays quoted),
        another value after (an integer too long for a decimal ``repr`` is named by its size)
    :param chars: how many characters of it to show
    :returns: ``'karaoke'``, ``'NNNN…'`` for a longer string, ``1.0`` for a float (control
        characters escaped, so a value cannot forge a log line)
    """
    if isinstance(value, str):
        return repr(value if len(value) <= chars else value[:chars] + "\u2026")
    try:
        text = repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits() has no decimal repr
        text = f"<integer of {value.bit_length()} bits>" if isinstance(value, int) else "<?>"
    return text if len(text) <= chars else text[:chars] + "\u2026"


def check_text(argument: str, value: Any, chars: int) -> str:
    """``value``, when it is a string of at most ``chars`` characters.

    :param argument: the argument's name for the message (``CreateSession hint Name``)
    :raises InvalidArgument: for another type or a longer string
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"{argument} must be a string, not {type(value).__name__}")
    if len(value) > chars:
        raise InvalidArgument(f"{argument} is {len(value)} characters long; the limit is "
                              f"{chars}")
    return value


def check_texts(argument: str, value: Any, items: int, chars: int) -> list[str]:
    """``value``, when it is a list of at most ``items`` strings of at most ``chars``
    characters each.

    :raises InvalidArgument: for another type, more items or a longer string
    """
    if not isinstance(value, list):
        raise InvalidArgument(f"{argument} must be an array of strings, not "
                              f"{type(value).__name__}")
    if len(value) > items:
        raise InvalidArgument(f"{argument} has {len(value)} items; the limit is {items}")
    for i, item in enumerate(value):
        check_text(f"{argument}[{i}]", item, chars)
    return value
