"""Pure rules of a DAG's life after submit: the live index, history collection, retries.

No IO here: ``ebind.workflow.history`` (collector, live index upkeep) and
``ebind.workflow.rerun`` (retry, retry_step) apply these decisions to a store.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import msgspec

from ebind.errors import RetryRefused, StepNotFound
from ebind.wire import StoredTime
from ebind.workflow.types import DAGMeta, DAGStatus, StepRecord, StepStatus

__all__ = [
    "FRESH",
    "LIVE_GRACE",
    "LiveEntry",
    "collectable",
    "decode_live",
    "encode_live",
    "fresh_entry",
    "live_entry_removable",
    "new_run_id",
    "reset_for_retry",
    "retry_plan",
    "retry_roots",
    "retryable_dag",
]

LIVE_GRACE = 120.0
"""Seconds a live-index entry is kept while its DAG reads as missing or finished before it.

A submit writes the entry before the meta and a retry before the meta turns running
again, so an entry younger than this may belong to a write still under way.
"""

FRESH = 1.0
"""Seconds after a submit or retry wrote its entry during which the sweep leaves the DAG
to that writer, which advances it itself (a sweep pass then would only race it)."""

_RESTARTABLE = (StepStatus.SKIPPED, StepStatus.CANCELED)
_EPOCH = datetime.min.replace(tzinfo=UTC)


class LiveEntry(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Value of a live-index key: when it was written and for which run of the DAG."""

    at: StoredTime
    run_id: str = ""


_live_dec = msgspec.json.Decoder(LiveEntry)
_enc = msgspec.json.Encoder()


def encode_live(entry: LiveEntry) -> bytes:
    """JSON bytes of a live-index entry."""
    return _enc.encode(entry)


def decode_live(data: bytes) -> LiveEntry | None:
    """A live-index entry, or None when the bytes are not one (the sweep still checks it)."""
    try:
        return _live_dec.decode(data)
    except Exception:  # any bytes at all: a RecursionError from deep nesting too
        return None


def new_run_id() -> str:
    """A fresh run id: 16 hex characters, a valid id token."""
    return secrets.token_hex(8)


def _age(now: datetime, at: datetime | None) -> float:
    return (now - (at or _EPOCH)).total_seconds()


def live_entry_removable(
    entry: LiveEntry | None, meta: DAGMeta | None, now: datetime, grace: float = LIVE_GRACE
) -> bool:
    """Whether the sweep may drop a DAG's live-index entry.

    Never while the DAG is live. A finished DAG's entry goes once the DAG finished after
    the entry was written (the entry is stale), or once the entry is older than ``grace``;
    a missing DAG's entry only after ``grace``, because a submit writes the entry first.
    """
    if meta is not None and not meta.status.terminal:
        return False
    if entry is None:
        return True  # unreadable: not written by ebind, nothing depends on it
    if meta is not None and meta.finished_at is not None and meta.finished_at >= entry.at:
        return True
    return _age(now, entry.at) >= grace


def fresh_entry(entry: LiveEntry | None, now: datetime, fresh: float = FRESH) -> bool:
    """Whether a live-index entry was written less than ``fresh`` seconds ago."""
    return entry is not None and 0 <= (now - entry.at).total_seconds() < fresh


def collectable(meta: DAGMeta, now: datetime, older_than: float) -> bool:
    """Whether a DAG's history may be removed: finished at least ``older_than`` seconds ago.

    A finished meta without ``finished_at`` (written by another tool) ages from creation.
    """
    if not meta.status.terminal:
        return False
    return _age(now, meta.finished_at or meta.created_at) >= older_than


def retryable_dag(meta: DAGMeta) -> None:
    """Raise RetryRefused unless a retry may restart steps of this DAG.

    A canceled DAG was stopped on purpose, and a pausing or paused one must be resumed
    first (a retried step would otherwise wait behind the pause unnoticed).
    """
    if meta.status is DAGStatus.CANCELED:
        raise RetryRefused(
            f"workflow: DAG {meta.id!r} was canceled; submit it again instead of retrying",
            dag_id=meta.id,
        )
    if meta.status in (DAGStatus.PAUSING, DAGStatus.PAUSED):
        raise RetryRefused(
            f"workflow: DAG {meta.id!r} is {meta.status.value}; resume it before retrying",
            dag_id=meta.id,
        )


def retry_roots(
    steps: Mapping[str, StepRecord], step_id: str | None = None, *, finished: bool = False
) -> list[str]:
    """The steps a retry restarts itself: every failed one, or just ``step_id``.

    ``finished`` says the DAG has finished: a pending step can then only be one an
    interrupted earlier retry reset, so it is restarted too (the retry completes it).

    Raises:
        StepNotFound: ``step_id`` is no step of the DAG.
        RetryRefused: nothing to restart, or ``step_id`` did not fail, skip or get canceled.
    """
    allowed = {StepStatus.FAILED} | ({StepStatus.PENDING} if finished else set())
    if step_id is None:
        roots = sorted(s for s, r in steps.items() if r.status in allowed)
        if not roots:
            dag = next(iter(steps.values())).dag_id if steps else ""
            raise RetryRefused(f"workflow: DAG {dag!r} has no failed step to retry", dag_id=dag)
        return roots
    rec = steps.get(step_id)
    if rec is None:
        raise StepNotFound(f"workflow: no step {step_id!r} to retry", step_id=step_id)
    if rec.status not in allowed and rec.status not in _RESTARTABLE:
        raise RetryRefused(
            f"workflow: step {step_id!r} is {rec.status.value}; only a failed, skipped or "
            "canceled step can be retried",
            dag_id=rec.dag_id,
            step_id=step_id,
        )
    return [step_id]


def retry_plan(steps: Mapping[str, StepRecord], roots: Iterable[str]) -> list[str]:
    """``roots`` plus every skipped or canceled step downstream of them, in that order.

    Downstream follows required and optional dependencies; a downstream step that ran
    (done, or failed on its own) is left alone.
    """
    dependents: dict[str, list[str]] = {}
    for sid in sorted(steps):
        rec = steps[sid]
        for dep in dict.fromkeys([*rec.deps, *rec.optional_deps]):
            dependents.setdefault(dep, []).append(sid)
    plan = list(dict.fromkeys(roots))
    seen = set(plan)
    queue = deque(plan)
    while queue:
        for sid in dependents.get(queue.popleft(), ()):
            if sid not in seen and steps[sid].status in _RESTARTABLE:
                seen.add(sid)
                plan.append(sid)
                queue.append(sid)
    return plan


def reset_for_retry(rec: StepRecord, rev: int) -> StepRecord:
    """The step back to pending for a new dispatch.

    Its generation becomes ``rev`` (the revision the reset is written from): no message
    of an earlier dispatch carries it, so such a message can never run the retried step.
    """
    return msgspec.structs.replace(
        rec,
        status=StepStatus.PENDING,
        attempt=0,
        generation=rev,
        worker_id="",
        error_kind="",
        error_message="",
        held=False,
        held_at=None,
        started_at=None,
        finished_at=None,
    )
