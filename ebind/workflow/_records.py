"""Stored workflow records checked against the key they were read from.

A record's body names its DAG and step, and readers build the keys of their next writes
from those names. A record whose body disagrees with its key (written by hand, by another
tool, or forged by a client allowed to write the bucket) would steer those writes into
another DAG, so such a record is refused here, as is one that does not decode (times
without a zone included, which cannot be compared with the times ebind writes).
"""

from __future__ import annotations

import msgspec

from ebind.errors import RecordCorrupt
from ebind.workflow.types import DAGMeta, StepRecord

__all__ = ["meta_for_key", "step_for_key"]

_meta_dec = msgspec.json.Decoder(DAGMeta)
_step_dec = msgspec.json.Decoder(StepRecord)


def meta_for_key(data: bytes, dag_id: str, key: str) -> DAGMeta:
    """The meta record stored under ``key`` (DAG ``dag_id``); RecordCorrupt if unusable."""
    try:
        meta = _meta_dec.decode(data)
    except Exception as exc:  # a RecursionError from a deeply nested record too
        raise _corrupt(key, f"does not decode as a DAG meta record ({exc})", dag_id) from exc
    if meta.id != dag_id:
        raise _corrupt(key, f"names DAG {meta.id[:64]!r}, not {dag_id!r}", dag_id)
    return meta


def step_for_key(data: bytes, dag_id: str, step_id: str, key: str) -> StepRecord:
    """The step record stored under ``key`` (``dag_id``/``step_id``); RecordCorrupt if unusable."""
    try:
        rec = _step_dec.decode(data)
    except Exception as exc:
        raise _corrupt(key, f"does not decode as a step record ({exc})", dag_id, step_id) from exc
    if rec.dag_id != dag_id or rec.step_id != step_id:
        where = f"{rec.dag_id[:64]!r}/{rec.step_id[:64]!r}"
        raise _corrupt(key, f"names step {where}, not {dag_id!r}/{step_id!r}", dag_id, step_id)
    return rec


def _corrupt(key: str, problem: str, dag_id: str, step_id: str = "") -> RecordCorrupt:
    return RecordCorrupt(
        f"workflow: the record at {key!r} {problem}; it is left in place and not used",
        key=key,
        dag_id=dag_id,
        step_id=step_id,
    )
