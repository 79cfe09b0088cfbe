"""The DAG builder: ``DAG.step(...)`` records steps, ``await dag.submit(wf)`` starts them.

Submit order: every step record is created first (create-only), then the meta record
(create-only) commits the DAG, then ready roots are dispatched. A crash before the meta
write leaves no DAG (re-submitting the same definition succeeds: identical step records
are accepted); a crash after it leaves a complete DAG whose roots the reconciliation sweep
dispatches. The meta create is also the lock that makes a second submit of an id fail
with StaleRevision.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ebind.crashpoints import crashpoint
from ebind.errors import DAGNotFound, DuplicateStep, InvalidArguments, StaleRevision
from ebind.logging import get_logger
from ebind.retry import RetryPolicy
from ebind.streams import check_id, check_target
from ebind.validate import MAX_NESTING, too_deep
from ebind.workflow import _keys
from ebind.workflow._args import bind_step_args, spec_of, task_name_of
from ebind.workflow._lanes import in_lanes
from ebind.workflow._transient import is_transient
from ebind.workflow.engine import Loaded
from ebind.workflow.graph import graph_of, validate_graph
from ebind.workflow.lifecycle import LiveEntry, encode_live, new_run_id
from ebind.workflow.ref import find_refs, make_ref, make_ref_or_default
from ebind.workflow.resubmit import StepConflict, step_conflict
from ebind.workflow.state import DAGState
from ebind.workflow.types import (
    DAGMeta,
    DAGStatus,
    PlacementMode,
    PlacementSpec,
    Ref,
    SignalRef,
    StepRecord,
    StepStatus,
)

if TYPE_CHECKING:
    from ebind.workflow.workflow import Workflow

__all__ = ["DAG", "Step", "build_record", "clean_labels", "placement_of"]

_log = get_logger("ebind.workflow.dag")
_enc = msgspec.json.Encoder()
_T = TypeVar("_T")
# Tries of each submit write while the store elects a leader (backing off to 2 s: ~20 s).
_SUBMIT_ATTEMPTS = 14
# Step records written at once by submit (a bound on requests in flight, not on size).
_SUBMIT_IN_FLIGHT = 256


class Step:
    """A node of a DAG; use ``ref()`` / ``ref_or_default(v)`` to feed its result downstream."""

    def __init__(self, dag_id: str, step_id: str, fn: object = None) -> None:
        self._dag_id = dag_id
        self._id = step_id
        self.fn = fn

    @property
    def id(self) -> str:
        """The step id, unique within its DAG."""
        return self._id

    @property
    def dag_id(self) -> str:
        """The id of the DAG this step belongs to."""
        return self._dag_id

    def ref(self) -> Ref:
        """A required reference: dependents are skipped if this step fails or is skipped."""
        return make_ref(self._id)

    def ref_or_default(self, default: Any) -> Ref:
        """A reference that substitutes ``default`` if this step fails or is skipped."""
        try:
            raw = _enc.encode(default)
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidArguments(f"default for step {self._id!r} is not JSON: {exc}") from exc
        return make_ref_or_default(self._id, raw)

    def __repr__(self) -> str:
        return f"Step({self._id!r}, dag={self._dag_id!r})"


def _ids(items: Iterable[Step | str] | Step | str, what: str) -> list[str]:
    if isinstance(items, Step | str):
        items = [items]
    out = []
    for item in items:
        sid = item.id if isinstance(item, Step) else item
        out.append(check_id(sid, f"{what} step id"))
    return list(dict.fromkeys(out))


def _labels(items: Iterable[str] | str, what: str) -> tuple[str, ...]:
    if isinstance(items, str):
        items = [items]
    out = []
    for label in items:
        if not _nonblank(label):
            raise InvalidArguments(f"{what} label must be a non-empty string, got {label!r}")
        out.append(label)
    return tuple(dict.fromkeys(out))


def _nonblank(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def clean_labels(items: Iterable[str] | str, what: str = "DAG") -> list[str]:
    """Validated, deduplicated labels in first-seen order."""
    return list(_labels(items, what))


def placement_of(
    target: str | None, colocate_with: Step | str | None, follow_target_of: Step | str | None
) -> tuple[PlacementSpec | None, list[str]]:
    """The PlacementSpec for one step's placement options and the dependency it implies."""
    given = [x for x in (target, colocate_with, follow_target_of) if x is not None]
    if len(given) > 1:
        raise InvalidArguments("use only one of target=, colocate_with= and follow_target_of=")
    if target is not None:
        return PlacementSpec(mode=PlacementMode.DIRECT, target=check_target(target)), []
    if colocate_with is not None:
        (sid,) = _ids(colocate_with, "colocate_with")
        return PlacementSpec(mode=PlacementMode.COLOCATE_WITH, step_id=sid), [sid]
    if follow_target_of is not None:
        (sid,) = _ids(follow_target_of, "follow_target_of")
        return PlacementSpec(mode=PlacementMode.FOLLOW_TARGET_OF, step_id=sid), [sid]
    return None, []


def build_record(
    dag_id: str,
    step_id: str,
    fn: object,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None = None,
    *,
    optional: bool = False,
    retry: RetryPolicy | None = None,
    after: Iterable[Step | str] = (),
    after_any: Iterable[Step | str] = (),
    placement: tuple[PlacementSpec | None, list[str]] = (None, []),
    break_before: Iterable[str] | str = (),
    break_after: Iterable[str] | str = (),
    wait_for_signals: Iterable[str] | str = (),
    implicit_deps: Sequence[str] = (),
) -> StepRecord:
    """Validate one step's definition and build its pending StepRecord."""
    check_id(step_id, "step id")
    name = task_name_of(fn)
    values = bind_step_args(fn, args, kwargs)
    args_json = _step_args_json(step_id, values)
    refs = find_refs(values)
    ref_deps = [p.step_id for p in refs if isinstance(p, Ref)]
    for sid in ref_deps:
        check_id(sid, "referenced step id")
    signal_names = [p.name for p in refs if isinstance(p, SignalRef)]
    waits = [*_signal_names(wait_for_signals), *signal_names]
    for n in waits:
        _keys.check_signal_name(n)
    spec, place_deps = placement
    deps = tuple(dict.fromkeys([*implicit_deps, *ref_deps, *_ids(after, "after"), *place_deps]))
    optional_deps = tuple(d for d in _ids(after_any, "after_any") if d not in deps)
    spec_ = spec_of(fn)
    timeout = spec_.timeout if spec_ is not None else None
    return StepRecord(
        dag_id=dag_id,
        step_id=step_id,
        fn_name=name,
        args_json=msgspec.Raw(args_json),
        deps=deps,
        optional_deps=optional_deps,
        status=StepStatus.PENDING,
        optional=optional,
        break_before=_labels(break_before, "break_before"),
        break_after=_labels(break_after, "break_after"),
        wait_signals=tuple(dict.fromkeys(waits)),
        policy=retry,
        placement=spec,
        timeout=timeout,
        queue=spec_.queue if spec_ is not None else "",
        priority=spec_.priority if spec_ is not None else "",
        added_at=datetime.now(UTC),
    )


ARGS_NESTING = MAX_NESTING - 1
"""Deepest nesting of a step's arguments: the task message around them is one level more."""


def _step_args_json(step_id: str, values: Any) -> bytes:
    """The step's arguments as JSON; InvalidArguments if a worker would refuse their depth."""
    try:
        data = _enc.encode(values)
    except RecursionError:
        data = b""
    if not data or too_deep(data, ARGS_NESTING):
        raise InvalidArguments(
            f"step {step_id!r}: its arguments nest deeper than {ARGS_NESTING} levels; a "
            "worker refuses such a task message, so the step could never run"
        )
    return data


def _signal_names(names: Iterable[str] | str) -> list[str]:
    if isinstance(names, str):
        names = [names]
    out = list(names)
    for n in out:
        if not _nonblank(n):
            raise InvalidArguments(f"signal name must be a non-empty string, got {n!r}")
    return out


class DAG:
    """A workflow under construction: add steps, then ``await dag.submit(wf)`` once."""

    def __init__(
        self, id: str | None = None, retry: RetryPolicy | None = None, labels: Iterable[str] = ()
    ) -> None:
        self._id = check_id(id, "DAG id") if id is not None else uuid.uuid4().hex
        self._retry = retry
        self._labels = tuple(_labels(labels, "DAG"))
        self._records: dict[str, StepRecord] = {}
        self._submitted = False

    @property
    def id(self) -> str:
        """The DAG id (a uuid unless given)."""
        return self._id

    @property
    def labels(self) -> tuple[str, ...]:
        """The DAG's immutable labels."""
        return self._labels

    @property
    def records(self) -> list[StepRecord]:
        """The step records built so far, in insertion order."""
        return list(self._records.values())

    def step(
        self,
        step_id: str,
        fn: object,
        *args: Any,
        kwargs: Mapping[str, Any] | None = None,
        optional: bool = False,
        retry: RetryPolicy | None = None,
        after: Iterable[Step | str] = (),
        after_any: Iterable[Step | str] = (),
        target: str | None = None,
        colocate_with: Step | str | None = None,
        follow_target_of: Step | str | None = None,
        break_before: Iterable[str] | str = (),
        break_after: Iterable[str] | str = (),
        wait_for_signals: Iterable[str] | str = (),
    ) -> Step:
        """Add a step running task ``fn`` (a handle or a registered name) with ``args``.

        Raises:
            DuplicateStep: ``step_id`` is already used in this DAG.
            InvalidArguments: a bad id, option, or argument for the handler's signature.
        """
        if step_id in self._records:
            raise DuplicateStep(
                f"workflow: duplicate step id {step_id!r} in DAG {self._id!r}",
                dag_id=self._id,
                step_id=step_id,
            )
        rec = build_record(
            self._id,
            step_id,
            fn,
            args,
            kwargs,
            optional=optional,
            retry=retry or self._retry,
            after=after,
            after_any=after_any,
            placement=placement_of(target, colocate_with, follow_target_of),
            break_before=break_before,
            break_after=break_after,
            wait_for_signals=wait_for_signals,
        )
        self._records[step_id] = rec
        return Step(self._id, step_id, fn)

    async def submit(self, wf: Workflow, active_breakpoints: Iterable[str] = ()) -> None:
        """Persist the DAG and dispatch its ready roots.

        Step records left by an earlier submit of the same definition under this id that
        died before writing its meta are reused (see :mod:`ebind.workflow.resubmit`).

        Raises:
            CycleError: the dependencies form a cycle (nothing is persisted).
            InvalidArguments: no steps, or a dependency names no step.
            StaleRevision: this DAG (or another with its id) was already submitted.
        """
        if self._submitted:
            raise StaleRevision(f"workflow: DAG {self._id!r} already submitted", dag_id=self._id)
        if not self._records:
            raise InvalidArguments(f"workflow: DAG {self._id!r} has no steps")
        validate_graph(graph_of(self._records.values()), dag_id=self._id)
        armed = clean_labels(active_breakpoints, "active_breakpoints")
        self._submitted = True
        run = new_run_id()
        while True:
            self._records = {
                sid: msgspec.structs.replace(r, run_id=run) for sid, r in self._records.items()
            }
            created = datetime.now(UTC)
            # The live-index entry is written before the meta (beside the steps, in the same
            # round trip): a crash before the meta leaves an entry the sweep drops later,
            # never a live DAG the sweep cannot see.
            entry = encode_live(LiveEntry(at=created, run_id=run))
            try:
                revs, _ = await asyncio.gather(
                    _create_steps(wf, self._id, list(self._records.values())),
                    _transient_retry(functools.partial(wf.store.put_live, self._id, entry)),
                )
            except _AdoptRun as adopt:
                run = adopt.run_id  # write every step again under the older, smaller run
                continue
            break
        crashpoint("submit.after_steps")
        meta = DAGMeta(
            id=self._id,
            status=DAGStatus.RUNNING,
            created_at=created,
            default_policy=self._retry,
            active_breakpoints=armed,
            labels=list(self._labels),
            run_id=run,
        )
        meta_rev = await _create_meta(wf, meta)
        _log.info("dag.submitted", dag_id=self._id, steps=len(self._records))
        signals = []
        if any(r.wait_signals for r in self._records.values()):
            signals = await wf.store.list_signals(self._id)
        state = DAGState(meta, dict(self._records), {s.name: s for s in signals})
        try:
            await wf.engine.advance(Loaded(state, revs, meta_rev))
        except StaleRevision:
            # The scheduler (or a sweep) is already driving the DAG; it owns the rest.
            _log.debug("dag.submit_handover", dag_id=self._id)


class _AdoptRun(Exception):
    """Raised by a step create to restart submit under an abandoned submit's run id."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


async def _transient_retry(call: Callable[[], Awaitable[_T]]) -> _T:
    """``call()``, retried with backoff while the store has no leader or times out.

    Only for create-only writes: a retry of one that landed after all meets the record
    and the caller recognizes it as its own.
    """
    for i in range(_SUBMIT_ATTEMPTS):
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or i == _SUBMIT_ATTEMPTS - 1:
                raise
            _log.info("dag.submit_retry", error=repr(exc))
            await asyncio.sleep(min(0.1 * 2**i, 2.0))
    raise AssertionError("unreachable")


async def _create_meta(wf: Workflow, meta: DAGMeta) -> int:
    """Create the meta record (the commit point), tolerating our own landed retry."""
    try:
        return await _transient_retry(lambda: wf.store.put_meta(meta.id, meta, 0))
    except StaleRevision:
        existing, rev = await wf.store.get_meta(meta.id)
        if existing != meta:
            raise
        return rev


async def _meta_exists(wf: Workflow, dag_id: str) -> bool:
    try:
        await wf.store.get_meta(dag_id)
    except DAGNotFound:
        return False
    return True


async def _create_steps(wf: Workflow, dag_id: str, records: list[StepRecord]) -> dict[str, int]:
    """Create every step record (create-only), many in flight at once.

    The writes are independent and nothing reads them before the meta record exists, so
    their order does not matter; one at a time would cost a round trip per step.
    """

    async def create(rec: StepRecord) -> int:
        try:
            return await _transient_retry(lambda: wf.store.put_step(dag_id, rec.step_id, rec, 0))
        except StaleRevision:
            existing, rev = await wf.store.get_step(dag_id, rec.step_id)
            has_meta = existing.run_id != rec.run_id and await _meta_exists(wf, dag_id)
            verdict = step_conflict(existing, rec, has_meta)
            if verdict is StepConflict.OWN:
                return rev
            if verdict is StepConflict.TAKE_OVER:
                _log.info("dag.submit_takes_over", dag_id=dag_id, step_id=rec.step_id)
                return await wf.store.put_step(dag_id, rec.step_id, rec, rev)
            if verdict is StepConflict.ADOPT:
                raise _AdoptRun(existing.run_id) from None
            raise StaleRevision(
                f"workflow: DAG {dag_id!r} already exists (step {rec.step_id!r})",
                dag_id=dag_id,
                step_id=rec.step_id,
            ) from None

    got = await in_lanes(create, records, _SUBMIT_IN_FLIGHT)
    revs: dict[str, int] = {}
    for rec, out in zip(records, got, strict=True):
        if isinstance(out, BaseException):
            adopt = [o for o in got if isinstance(o, _AdoptRun)]
            raise min(adopt, key=lambda a: a.run_id) if adopt else out
        revs[rec.step_id] = out
    return revs
