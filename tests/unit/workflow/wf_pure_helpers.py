"""Builders shared by the pure workflow-core tests (state, ref, debug, placement)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ebind.workflow.state import DAGState
from ebind.workflow.types import DAGMeta, DAGStatus, SignalRecord, StepRecord, StepStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)

P, R, D, F, S, C = (
    StepStatus.PENDING,
    StepStatus.RUNNING,
    StepStatus.DONE,
    StepStatus.FAILED,
    StepStatus.SKIPPED,
    StepStatus.CANCELED,
)
BAD = frozenset({F, S})


def enc(value: Any) -> bytes:
    return msgspec.json.encode(value)


def step(
    step_id: str,
    deps: Iterable[str] = (),
    *,
    args: list[Any] | None = None,
    optional_deps: Iterable[str] = (),
    status: StepStatus = StepStatus.PENDING,
    added: float | None = None,
    **kw: Any,
) -> StepRecord:
    return StepRecord(
        dag_id="d",
        step_id=step_id,
        fn_name="fn",
        args_json=msgspec.Raw(enc(args if args is not None else [])),
        deps=tuple(deps),
        optional_deps=tuple(optional_deps),
        status=status,
        added_at=T0 + timedelta(seconds=added) if added is not None else None,
        **kw,
    )


def meta(
    status: DAGStatus = DAGStatus.RUNNING,
    active: Iterable[str] = (),
    labels: Iterable[str] = (),
    **kw: Any,
) -> DAGMeta:
    return DAGMeta(
        id="d",
        status=status,
        created_at=T0,
        active_breakpoints=list(active),
        labels=list(labels),
        **kw,
    )


def signal(name: str, payload: bytes | None = None, at: float = 0.0) -> SignalRecord:
    return SignalRecord(
        dag_id="d",
        name=name,
        payload=msgspec.Raw(payload) if payload is not None else None,
        delivered_at=T0 + timedelta(seconds=at),
    )


def state(
    *steps: StepRecord,
    status: DAGStatus = DAGStatus.RUNNING,
    active: Iterable[str] = (),
    signals: Iterable[SignalRecord] | None = None,
) -> DAGState:
    sigs = {s.name: s for s in signals} if signals is not None else None
    return DAGState(meta(status, active), {s.step_id: s for s in steps}, sigs, now=lambda: T0)


def statuses(st: DAGState) -> dict[str, StepStatus]:
    return {k: v.status for k, v in st.steps.items()}
