"""speaker_calls: a test's third-party plugin that replaces the built-in ``call_route``: it
declares the same table, and sends every call to the built-in speaker."""

from audiopolicyd import hookimpl
from audiopolicyd.route import BUILT_IN_SPEAKER, OUTPUT, PortChoice


@hookimpl
def register_policy_settings():
    return {"call_route": {"type": "object", "additionalProperties": False, "properties": {}}}


@hookimpl
def choose_route(direction, request):
    speaker = next((p for p in request.outputs if p.port_type == BUILT_IN_SPEAKER), None)
    if direction != OUTPUT or speaker is None:
        return None
    return PortChoice(speaker, f"{BUILT_IN_SPEAKER}: speaker_calls sends every call here")
