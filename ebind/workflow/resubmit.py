"""Pure rules for submitting a DAG id whose earlier submit died between its steps and meta.

Submit writes every step record (create-only) and then the meta, the commit point. A
producer that dies in between leaves step records that belong to no DAG; without these
rules the id could never be submitted again. A later submit of the same definition reuses
them: of two runs the smaller run id wins, so two producers racing on one id converge on
one run, and the meta's create-only write lets exactly one of them commit. A racer may
still overwrite a step after the other committed; the scheduler's full read puts such a
pending step back under the committed run (``stray_steps``) before anything dispatches it.
No IO here: ``ebind.workflow.dag`` and ``ebind.workflow.engine`` apply these decisions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import msgspec

from ebind.workflow.types import DAGMeta, StepRecord, StepStatus

__all__ = ["StepConflict", "same_definition", "step_conflict", "stray_steps"]

_enc = msgspec.json.Encoder()


class StepConflict(enum.Enum):
    """What submit does with a step record that is already stored under the DAG's id."""

    OWN = "own"
    """Our own create landed (its reply was lost): keep it."""
    TAKE_OVER = "take_over"
    """Left by a submit that never wrote its meta, under a larger run id: overwrite it."""
    ADOPT = "adopt"
    """Left by a submit that never wrote its meta, under a smaller run id: submit again
    under that run id."""
    REFUSE = "refuse"
    """Another DAG with this id exists (or another definition): submit raises."""


def same_definition(a: StepRecord, b: StepRecord) -> bool:
    """Whether two step records define the same step (when they were built aside)."""

    def key(r: StepRecord) -> bytes:
        return _enc.encode(msgspec.structs.replace(r, added_at=None))

    return key(a) == key(b)


def step_conflict(existing: StepRecord, mine: StepRecord, meta_exists: bool) -> StepConflict:
    """Decide about a stored step record that submit's create-only write collided with.

    Only a pending record of the same definition is ever reused, and another run's only
    while the DAG has no meta.
    """
    if existing.status is not StepStatus.PENDING:
        return StepConflict.REFUSE
    if existing.run_id == mine.run_id:
        return StepConflict.OWN if same_definition(existing, mine) else StepConflict.REFUSE
    if meta_exists or not same_definition(
        msgspec.structs.replace(existing, run_id=mine.run_id), mine
    ):
        return StepConflict.REFUSE
    return StepConflict.TAKE_OVER if mine.run_id < existing.run_id else StepConflict.ADOPT


def stray_steps(meta: DAGMeta, records: Iterable[StepRecord]) -> list[StepRecord]:
    """Pending steps a racing submit left under another run than the committed meta's.

    Each is returned as it must be written back: the same record under the meta's run.
    A DAG without a run id (written before runs existed) has none.
    """
    if not meta.run_id:
        return []
    return [
        msgspec.structs.replace(rec, run_id=meta.run_id)
        for rec in records
        if rec.status is StepStatus.PENDING and rec.run_id != meta.run_id
    ]
