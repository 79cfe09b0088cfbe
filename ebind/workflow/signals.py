"""Signals: a step waits for a named external event and may receive its payload.

``signal_ref(name)`` as an argument waits for the signal and passes its payload;
``wait_for_signals=[...]`` only waits. ``Workflow.signal`` is one-shot, buffered and
first-wins: the record ``<dag>.signal.<b64url(name)>`` is created once and never changes,
so every (re-)dispatch of a waiting step resolves the same payload. A signal sent before
any step waits for it is kept for the DAG's lifetime. Any string is a valid name; it is
base64url-encoded in keys and subjects and kept raw in the record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from ebind.errors import InvalidArguments, PayloadTooLarge, StaleRevision
from ebind.logging import get_logger
from ebind.validate import MAX_NESTING, too_deep
from ebind.workflow import _keys
from ebind.workflow.debug import SignalInfo, compute_signals
from ebind.workflow.engine import Engine
from ebind.workflow.ref import signal_ref
from ebind.workflow.types import Event, EventKind, SignalRecord

__all__ = ["MAX_SIGNAL_PAYLOAD", "list_signals", "send_signal", "signal_ref"]

MAX_SIGNAL_PAYLOAD = 256 * 1024
"""Largest signal payload (encoded JSON bytes) accepted; bigger raises PayloadTooLarge."""

_log = get_logger("ebind.workflow.signals")
_enc = msgspec.json.Encoder()


SIGNAL_NESTING = MAX_NESTING - 2
"""Deepest nesting of a signal's payload: it goes into a step's arguments, in a task message."""


def _encode_payload(name: str, payload: Any, limit: int) -> bytes:
    try:
        data = _enc.encode(payload)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArguments(f"signal {name!r}: payload is not JSON-serialisable: {exc}") from exc
    except RecursionError:
        data = b""  # far too deep to encode at all
    if not data or too_deep(data, SIGNAL_NESTING):
        raise InvalidArguments(
            f"signal {name!r}: payload nests deeper than {SIGNAL_NESTING} levels; the step "
            "waiting for it could never be sent to a worker"
        )
    if len(data) > limit:
        raise PayloadTooLarge(
            f"signal {name!r}: payload is {len(data)} bytes; the limit is {limit}",
            size=len(data),
            limit=limit,
        )
    return data


async def send_signal(
    engine: Engine, dag_id: str, name: str, payload: Any = None, *, limit: int = MAX_SIGNAL_PAYLOAD
) -> bool:
    """Deliver signal ``name``; True if this call delivered it, False if it already was.

    A finished DAG takes no signals (False). The ``signal`` event is published even for a
    duplicate, so a crash between the write and the publish converges on retry.

    Raises:
        DAGNotFound: no such DAG.
        InvalidName: the name is empty or too long.
        PayloadTooLarge: the encoded payload exceeds ``limit``.
    """
    _keys.check_signal_name(name)
    data = _encode_payload(name, payload, limit)
    meta, _ = await engine.store.get_meta(dag_id)
    if meta.status.terminal:
        return False
    rec = SignalRecord(
        dag_id=dag_id, name=name, payload=msgspec.Raw(data), delivered_at=datetime.now(UTC)
    )
    try:
        await engine.store.put_signal(dag_id, rec)
        delivered = True
    except StaleRevision:
        delivered = False
    await engine.publish(Event(kind=EventKind.SIGNAL, dag_id=dag_id, signal_name=name))
    _log.info("dag.signal_received", dag_id=dag_id, signal=name, delivered=delivered)
    return delivered


async def list_signals(engine: Engine, dag_id: str) -> list[SignalInfo]:
    """Every signal the DAG knows: delivered ones and awaited ones, with their waiters."""
    meta, _ = await engine.store.get_meta(dag_id)
    steps = {r.step_id: r for r, _ in await engine.store.list_steps(dag_id)}
    sigs = {s.name: s for s in await engine.store.list_signals(dag_id)}
    return compute_signals(meta, steps, sigs)
