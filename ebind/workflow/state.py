"""Pure DAG state machine: readiness gates, transitions, cascade-skip and terminal status.

``DAGState`` is the in-memory view of one DAG, loaded from the store at evaluation time.
Every method is pure: it reads and replaces records in ``self.steps`` and never does IO.
Records are replaced (``msgspec.structs.replace``), never mutated, so the records a caller
passed in stay untouched; the ids a transition changed are returned or collected by
``take_changed()`` so the caller persists exactly those.

A step may run when it is pending and passes every gate: not held (pause fence), not
stopped at an armed before-breakpoint, all awaited signals delivered, and every dependency
terminal and not holding at an armed after-breakpoint. A terminal step never moves to
another status, so duplicate or reordered completion events change nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

import msgspec

from ebind.errors import DuplicateStep, StepNotFound
from ebind.workflow.ref import find_refs
from ebind.workflow.types import (
    BPState,
    DAGMeta,
    DAGStatus,
    Ref,
    RefMode,
    SignalRecord,
    StepRecord,
    StepStatus,
)

__all__ = ["DAGState"]

# Upstream outcomes that doom a required dependent (canceled too: resolve_args skips it).
_BAD = frozenset({StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED})
_CASCADE_TARGETS = frozenset({StepStatus.PENDING, StepStatus.RUNNING})
# Dependencies from which a step's readiness check remembers how far it got; a step with
# fewer is simply rescanned (no memory kept per step for the common one or two).
_REMEMBERED_SCAN = 16


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _settled(rec: StepRecord) -> bool:
    """Whether ``rec`` can never keep a dependent waiting: terminal, no after-breakpoint.

    A terminal status never changes, and without ``break_after`` labels no arming of
    breakpoints can make the step hold its dependents.
    """
    return rec.status.terminal and not rec.break_after


class _Steps(dict[str, StepRecord]):
    """The step map, also tracking which steps are live and which failed, skipped or canceled.

    A scheduler pass asks "is every step terminal?" and "which steps cascade?"; with a
    scan of every record per pass, a 10,000-step DAG advanced by thousands of passes
    spent seconds of CPU on scans alone.

    ``unsettled`` counts the times a settled record (see ``_settled``) was replaced by one
    that is not, or removed: a readiness check may skip dependencies it saw settled only
    while that count has not moved.
    """

    def __init__(self, items: Mapping[str, StepRecord]) -> None:
        super().__init__(items)
        self.live = {sid for sid, rec in self.items() if not rec.status.terminal}
        self.bad = {sid for sid, rec in self.items() if rec.status in _BAD}
        self.unsettled = 0

    def __setitem__(self, step_id: str, rec: StepRecord) -> None:
        old = self.get(step_id)
        if old is not None and _settled(old) and not _settled(rec):
            self.unsettled += 1
        super().__setitem__(step_id, rec)
        if rec.status.terminal:
            self.live.discard(step_id)
        else:
            self.live.add(step_id)
        if rec.status in _BAD:
            self.bad.add(step_id)
        else:
            self.bad.discard(step_id)

    def __delitem__(self, step_id: str) -> None:
        if _settled(self[step_id]):
            self.unsettled += 1
        super().__delitem__(step_id)
        self.live.discard(step_id)
        self.bad.discard(step_id)


class DAGState:
    """The in-memory view of a DAG; all transitions are pure (no IO)."""

    def __init__(
        self,
        meta: DAGMeta,
        steps: Mapping[str, StepRecord],
        signals: Mapping[str, SignalRecord] | None = None,
        *,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.meta = meta
        self.steps: dict[str, StepRecord] = _Steps(steps)
        self.signals: dict[str, SignalRecord] = dict(signals or {})
        self._now = now
        self._changed: dict[str, None] = {}
        self._order: list[str] | None = None
        self._rank: dict[str, int] | None = None
        self._exempt: dict[str, frozenset[str]] = {}
        self._dependents: dict[str, list[str]] | None = None
        # step id -> (its record, its dependency ids, ``unsettled`` then, how many of the
        # leading dependencies were settled): a fan-in over 10,000 steps is checked on
        # every completion, and rescanning the settled ones made that quadratic.
        self._dep_scan: dict[str, tuple[StepRecord, list[str], int, int]] = {}
        self._scan_of: _Steps | None = None

    @classmethod
    def from_records(
        cls,
        meta: DAGMeta,
        steps: Iterable[StepRecord],
        signals: Iterable[SignalRecord] = (),
        *,
        now: Callable[[], datetime] = _utcnow,
    ) -> DAGState:
        """Build a state from record lists (as a store lists them)."""
        return cls(meta, {s.step_id: s for s in steps}, {g.name: g for g in signals}, now=now)

    # --- bookkeeping --------------------------------------------------------------------

    def ordered_ids(self) -> list[str]:
        """Step ids by ``added_at`` (unset first), ties in insertion order; never hash order."""
        if self._order is None:
            index = {sid: i for i, sid in enumerate(self.steps)}

            def key(sid: str) -> tuple[float, int]:
                at = self.steps[sid].added_at
                return (at.timestamp() if at is not None else float("-inf"), index[sid])

            self._order = sorted(self.steps, key=key)
        return self._order

    def _in_order(self, ids: Iterable[str]) -> list[str]:
        """``ids`` sorted as ``ordered_ids`` lists them."""
        ids = list(ids)
        if self._rank is None or any(sid not in self._rank for sid in ids):
            self._order = None  # a step was put in without add_step: order it again
            self._rank = {sid: i for i, sid in enumerate(self.ordered_ids())}
        rank = self._rank
        return sorted(ids, key=lambda sid: rank[sid])

    def take_changed(self) -> list[str]:
        """Ids of steps changed since the last call, in change order; clears the set."""
        out = list(self._changed)
        self._changed.clear()
        return out

    def _tracked(self) -> _Steps:
        """The step map with its live and failed sets (re-wrapped if a caller replaced it)."""
        if not isinstance(self.steps, _Steps):
            self.steps = _Steps(self.steps)
        return self.steps

    def _get(self, step_id: str) -> StepRecord:
        rec = self.steps.get(step_id)
        if rec is None:
            raise StepNotFound(
                f"workflow: step {step_id!r} not found in DAG {self.meta.id!r}",
                dag_id=self.meta.id,
                step_id=step_id,
            )
        return rec

    def _set(self, step_id: str, rec: StepRecord) -> None:
        self.steps[step_id] = rec
        self._changed[step_id] = None

    def _finish(self, step_id: str, status: StepStatus, **fields: str) -> None:
        rec = msgspec.structs.replace(
            self.steps[step_id], status=status, finished_at=self._now(), **fields
        )
        self._set(step_id, rec)

    def add_step(self, rec: StepRecord) -> None:
        """Insert a new step (dynamic DAGs); ``added_at`` defaults to now.

        Raises:
            DuplicateStep: the step id is already used in this DAG.
        """
        if rec.step_id in self.steps:
            raise DuplicateStep(
                f"workflow: duplicate step id {rec.step_id!r} in DAG {self.meta.id!r}",
                dag_id=self.meta.id,
                step_id=rec.step_id,
            )
        if rec.added_at is None:
            rec = msgspec.structs.replace(rec, added_at=self._now())
        self._set(rec.step_id, rec)
        self._order = None
        self._rank = None
        self._dependents = None

    def add_signal(self, rec: SignalRecord) -> bool:
        """Record a delivered signal; first wins: a duplicate returns False, changes nothing."""
        if rec.name in self.signals:
            return False
        self.signals[rec.name] = rec
        return True

    # --- gates --------------------------------------------------------------------------

    def _armed(self, labels: Sequence[str]) -> bool:
        return bool(labels) and not set(labels).isdisjoint(self.meta.active_breakpoints)

    def is_held(self, step_id: str) -> bool:
        """Whether the pause fence holds the step."""
        return self._get(step_id).held

    def before_bp_blocked(self, step_id: str) -> bool:
        """Whether an armed, unreleased before-breakpoint stops the step."""
        rec = self._get(step_id)
        return rec.bp_before is not BPState.RELEASED and self._armed(rec.break_before)

    def undelivered_signals(self, step_id: str) -> list[str]:
        """The step's awaited signal names that have not been delivered, in declared order."""
        return [n for n in self._get(step_id).wait_signals if n not in self.signals]

    def signal_blocked(self, step_id: str) -> bool:
        """Whether the step awaits a signal that has not been delivered."""
        return bool(self.undelivered_signals(step_id))

    def after_bp_holds(self, step_id: str) -> bool:
        """Whether the step is done and holds its dependents at an armed after-breakpoint.

        Failed, skipped and canceled steps never hold: they propagate normally.
        """
        rec = self._get(step_id)
        return (
            rec.status is StepStatus.DONE
            and rec.bp_after is not BPState.RELEASED
            and self._armed(rec.break_after)
        )

    def _all_deps(self, rec: StepRecord) -> list[str]:
        return list(dict.fromkeys([*rec.deps, *rec.optional_deps]))

    def dep_blocks(self, dep_id: str) -> bool:
        """Whether a dependency keeps its dependents waiting (missing, live or after-bp held)."""
        dep = self.steps.get(dep_id)
        return dep is None or not dep.status.terminal or self.after_bp_holds(dep_id)

    def deps_satisfied(self, step_id: str) -> bool:
        """Whether every dependency exists, is terminal and holds at no armed after-breakpoint.

        Failed or skipped required dependencies count as satisfied here; cascade-skip
        decides what happens to the step.
        """
        rec = self._get(step_id)
        if len(rec.deps) + len(rec.optional_deps) < _REMEMBERED_SCAN:
            return not any(self.dep_blocks(d) for d in self._all_deps(rec))
        steps = self._tracked()
        if steps is not self._scan_of:  # the step map was replaced: nothing seen holds
            self._dep_scan.clear()
            self._scan_of = steps
        scan = self._dep_scan.get(step_id)
        if scan is None or scan[0] is not rec:
            deps, start = self._all_deps(rec), 0
        else:
            deps = scan[1]
            start = scan[3] if scan[2] == steps.unsettled else 0
        # The leading dependencies that are settled stay so (unless ``unsettled`` moves),
        # so the next check starts after them.
        i, n = start, len(deps)
        while i < n:
            dep = steps.get(deps[i])
            if dep is None or not _settled(dep):
                break
            i += 1
        self._dep_scan[step_id] = (rec, deps, steps.unsettled, i)
        return not any(self.dep_blocks(deps[j]) for j in range(i, n))

    def or_default_exempt(self, step_id: str) -> frozenset[str]:
        """Upstreams whose failure does not skip the step: it has an or_default Ref to them.

        A required Ref to the same upstream anywhere in the args cancels the exemption,
        since resolve_args would skip the step anyway.
        """
        cached = self._exempt.get(step_id)
        if cached is None:
            refs = [r for r in find_refs(bytes(self._get(step_id).args_json)) if isinstance(r, Ref)]
            soft = {r.step_id for r in refs if r.mode is RefMode.OR_DEFAULT}
            hard = {r.step_id for r in refs if r.mode is RefMode.REQUIRED}
            cached = self._exempt[step_id] = frozenset(soft - hard)
        return cached

    def doomed(self, step_id: str) -> bool:
        """Whether a required dependency failed, was skipped or canceled, without exemption."""
        rec = self._get(step_id)
        exempt = self.or_default_exempt(step_id) if rec.deps else frozenset()
        for dep_id in rec.deps:
            dep = self.steps.get(dep_id)
            if dep is not None and dep.status in _BAD and dep_id not in exempt:
                return True
        return False

    # --- projections --------------------------------------------------------------------

    def _pending(self) -> list[str]:
        return [s for s in self.ordered_ids() if self.steps[s].status is StepStatus.PENDING]

    def ready_to_run(self) -> list[str]:
        """Pending steps that pass every gate and whose deps are all satisfied, in order.

        A step whose required dependency failed (and is not or_default-exempt) is never
        ready: ``apply_cascades`` skips it instead.
        """
        return [
            s
            for s in self._pending()
            if not self.steps[s].held
            and not self.before_bp_blocked(s)
            and not self.signal_blocked(s)
            and self.deps_satisfied(s)
            and not self.doomed(s)
        ]

    def waiting_on_signals(self) -> list[str]:
        """Pending steps whose deps are satisfied and that wait only for a signal now."""
        return [s for s in self._pending() if self.signal_blocked(s) and self.deps_satisfied(s)]

    def blocked_at_before(self) -> list[str]:
        """Pending steps stopped at an armed before-breakpoint after their deps were satisfied."""
        return [s for s in self._pending() if self.before_bp_blocked(s) and self.deps_satisfied(s)]

    def holding_at_after(self) -> list[str]:
        """Done steps holding their dependents at an armed after-breakpoint."""
        return [s for s in self.ordered_ids() if self.after_bp_holds(s)]

    def has_in_flight_steps(self) -> bool:
        """Whether any step is running (so pausing cannot go straight to paused)."""
        return any(r.status is StepStatus.RUNNING for r in self.steps.values())

    def all_steps_terminal(self) -> bool:
        """Whether there are steps and every one is terminal (False for an empty DAG)."""
        return bool(self.steps) and not self._tracked().live

    def derive_final_status(self) -> DAGStatus:
        """``failed`` if a non-optional step failed or was skipped, else ``done``.

        Canceled steps do not count as failures.
        """
        bad = (StepStatus.FAILED, StepStatus.SKIPPED)
        if any(r.status in bad and not r.optional for r in self.steps.values()):
            return DAGStatus.FAILED
        return DAGStatus.DONE

    def terminal(self) -> tuple[DAGStatus, bool]:
        """(status, done): done is true when every step is terminal and the DAG may finish."""
        if not all(r.status.terminal for r in self.steps.values()):
            return DAGStatus.RUNNING, False
        if self.meta.status is DAGStatus.CANCELED:
            return DAGStatus.CANCELED, True
        if self.meta.status in (DAGStatus.PAUSING, DAGStatus.PAUSED):
            return DAGStatus.RUNNING, False
        return self.derive_final_status(), True

    def can_pause(self) -> bool:
        """Whether a pause request is accepted: the DAG must be running."""
        return self.meta.status is DAGStatus.RUNNING

    def can_resume(self) -> bool:
        """Whether a resume request is accepted: the DAG must be paused (seed: not pausing)."""
        return self.meta.status is DAGStatus.PAUSED

    # --- transitions --------------------------------------------------------------------

    def mark_running(self, step_id: str) -> bool:
        """Move a pending, unheld step to running; returns whether it changed.

        Raises:
            StepNotFound: no such step.
        """
        rec = self._get(step_id)
        if rec.status is not StepStatus.PENDING or rec.held:
            return False
        self._set(step_id, msgspec.structs.replace(rec, status=StepStatus.RUNNING))
        return True

    def mark_done(self, step_id: str) -> list[str]:
        """Mark a live step done; returns the ids ready to run now (idempotent).

        A step that is already terminal (done, failed, skipped, canceled) is left alone.

        Raises:
            StepNotFound: no such step.
        """
        if not self._get(step_id).status.terminal:
            self._finish(step_id, StepStatus.DONE, error_kind="", error_message="")
        return self.ready_to_run()

    def mark_failed(self, step_id: str, kind: str, message: str) -> tuple[list[str], list[str]]:
        """Mark a live step failed and cascade-skip; returns (ready now, newly skipped).

        A step that is already terminal keeps its status and error; the cascade from a
        failed, skipped or canceled step is re-applied (idempotent), a done one never.

        Raises:
            StepNotFound: no such step.
        """
        if not self._get(step_id).status.terminal:
            self._finish(step_id, StepStatus.FAILED, error_kind=kind, error_message=message)
        skipped = self._cascade_from([step_id])
        return self.ready_to_run(), skipped

    def mark_skipped(self, step_id: str) -> list[str]:
        """Mark a live step skipped and cascade; returns the ids the cascade skipped.

        Raises:
            StepNotFound: no such step.
        """
        if not self._get(step_id).status.terminal:
            self._finish(step_id, StepStatus.SKIPPED)
        return self._cascade_from([step_id])

    def apply_cascades(self) -> list[str]:
        """Re-apply cascade-skip from every failed/skipped/canceled step; returns newly skipped.

        Recovers a cascade whose persistence was lost (a gap in the Go sweep, closed here).
        """
        return self._cascade_from(self._in_order(self._tracked().bad))

    def has_dependents(self, step_id: str) -> bool:
        """Whether some step depends on ``step_id`` (so it may need its result)."""
        return bool(self._required_dependents().get(step_id))

    def _required_dependents(self) -> dict[str, list[str]]:
        if self._dependents is None:
            index: dict[str, list[str]] = {}
            for sid in self.ordered_ids():
                for dep in dict.fromkeys(self.steps[sid].deps):
                    index.setdefault(dep, []).append(sid)
            self._dependents = index
        return self._dependents

    def _cascade_from(self, roots: list[str]) -> list[str]:
        """Breadth-first, transitive skip of pending/running required dependents."""
        queue = deque(r for r in roots if self.steps[r].status in _BAD)
        skipped: list[str] = []
        dependents = self._required_dependents()
        while queue:
            node = queue.popleft()
            for sid in dependents.get(node, ()):
                if self.steps[sid].status not in _CASCADE_TARGETS:
                    continue
                if node in self.or_default_exempt(sid):
                    continue
                self._finish(sid, StepStatus.SKIPPED)
                skipped.append(sid)
                queue.append(sid)
        return skipped
