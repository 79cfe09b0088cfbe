"""KV key layout of the ``ebind-dags`` bucket, shared by MemStore and NatsStore.

Keys use dots (``<dag>.meta``, ``<dag>.step.<step>``, ``<dag>.result.<step>``,
``<dag>.signal.<b64url(name)>``) so one DAG's steps are the subject filter
``$KV.ebind-dags.<dag>.step.>``. Ids are checked with ``check_id`` so no id can hold a
dot or a wildcard; signal names are free-form and always base64url-encoded.

A result of a DAG run with a run id lives at ``<dag>.result.<step>.<run>``, so a late
write by a step of a deleted run never lands where a later run of the same id reads.
The live index is ``=.live.<dag>``: ``=`` is no valid DAG id, so the three-token key
matches none of a DAG's own filters (``*.meta``, ``<dag>.step.>``, ``<dag>.>``).
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from ebind.errors import InvalidName
from ebind.streams import b64_token, check_id
from ebind.workflow.types import SignalRecord

__all__ = [
    "check_dag",
    "check_signal_name",
    "check_step",
    "decode_signal",
    "live_key",
    "live_prefix",
    "meta_key",
    "result_key",
    "signal_key",
    "signal_prefix",
    "step_key",
    "step_prefix",
]

# A KV key with a 3-token suffix must stay well under the 4096-byte control-line limit;
# base64 grows 4/3, so cap the encoded name instead of the raw one.
_MAX_SIGNAL_TOKEN = 1024


def check_dag(dag_id: str) -> str:
    """Validate a DAG id for use in a key."""
    return check_id(dag_id, "DAG id")


def check_step(step_id: str) -> str:
    """Validate a step id for use in a key."""
    return check_id(step_id, "step id")


def check_signal_name(name: str) -> str:
    """Validate a signal name (any non-empty string of bounded size); returns its key token."""
    if not name:
        raise InvalidName("signal name must be a non-empty string", kind="signal name")
    try:
        token = b64_token(name)
    except UnicodeEncodeError as exc:  # lone surrogates cannot be UTF-8 encoded
        raise InvalidName(
            f"signal name {name[:64]!r} is not valid UTF-8: {exc.reason}",
            kind="signal name",
            value=name[:64],
        ) from exc
    if len(token) > _MAX_SIGNAL_TOKEN:
        raise InvalidName(
            f"signal name is too long ({len(name)} characters)",
            kind="signal name",
            value=name[:64],
        )
    return token


def meta_key(dag_id: str) -> str:
    """``<dag>.meta``."""
    return f"{check_dag(dag_id)}.meta"


def step_key(dag_id: str, step_id: str) -> str:
    """``<dag>.step.<step>``."""
    return f"{check_dag(dag_id)}.step.{check_step(step_id)}"


def step_prefix(dag_id: str) -> str:
    """``<dag>.step.`` — every step key of one DAG starts with it."""
    return f"{check_dag(dag_id)}.step."


def result_key(dag_id: str, step_id: str, run_id: str = "") -> str:
    """``<dag>.result.<step>``, or ``<dag>.result.<step>.<run>`` for a DAG run with an id."""
    base = f"{check_dag(dag_id)}.result.{check_step(step_id)}"
    return f"{base}.{check_id(run_id, 'run id')}" if run_id else base


def live_prefix() -> str:
    """``=.live.`` — every live-index key starts with it."""
    return "=.live."


def live_key(dag_id: str) -> str:
    """``=.live.<dag>``: the DAG is live (written before its meta, removed after it ends)."""
    return f"=.live.{check_dag(dag_id)}"


def signal_key(dag_id: str, name: str) -> str:
    """``<dag>.signal.<b64url(name)>``."""
    return f"{check_dag(dag_id)}.signal.{check_signal_name(name)}"


def signal_prefix(dag_id: str) -> str:
    """``<dag>.signal.`` — every signal key of one DAG starts with it."""
    return f"{check_dag(dag_id)}.signal."


class _SignalWire(msgspec.Struct, kw_only=True):
    """SignalRecord as stored; msgspec cannot decode ``Raw | None``, so decode via UNSET."""

    dag_id: str
    name: str
    payload: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    delivered_at: datetime | None = None


_signal_wire_dec = msgspec.json.Decoder(_SignalWire)


def decode_signal(data: bytes) -> SignalRecord:
    """Decode a stored SignalRecord (an absent payload becomes None)."""
    w = _signal_wire_dec.decode(data)
    payload = None if isinstance(w.payload, msgspec.UnsetType) else w.payload
    return SignalRecord(dag_id=w.dag_id, name=w.name, payload=payload, delivered_at=w.delivered_at)
