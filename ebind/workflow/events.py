"""Scheduler events on the wire: subjects ``DAG.<dag>.<kind>.<token>`` and JSON bodies.

The last token is the step id for step events, the DAG id for DAG-wide events
(``resumed``, ``submitted``) and the base64url of the name for ``signal`` events, so a
free-form signal name can never add subject tokens or wildcards.
"""

from __future__ import annotations

import msgspec

from ebind.streams import b64_token
from ebind.workflow.types import Event, EventKind

__all__ = ["EVENTS_FILTER", "event_subject", "marshal_event", "unmarshal_event"]

EVENTS_FILTER = "DAG.>"
"""Filter of the shared scheduler durable: every DAG event."""

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(Event)


def event_subject(e: Event) -> str:
    """The subject an event is published on."""
    if e.kind is EventKind.SIGNAL:
        token = b64_token(e.signal_name or e.step_id)
    else:
        token = e.step_id or e.dag_id
    return f"DAG.{e.dag_id}.{e.kind.value}.{token}"


def marshal_event(e: Event) -> bytes:
    """Encode an event for the bus."""
    return _enc.encode(e)


def unmarshal_event(data: bytes) -> Event:
    """Decode an event; raises msgspec.DecodeError / ValidationError on a bad body."""
    return _dec.decode(data)
