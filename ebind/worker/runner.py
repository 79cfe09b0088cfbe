"""One delivery, start to finish: decode → checks → middleware chain → respond → ack / nak / term.

The decisions come from :mod:`ebind.worker.outcome`; this module only does the IO. On the
hot path the only awaits that can suspend are the handler itself (responses, acks and naks
are core publishes that only buffer).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ebind import observe
from ebind._jsreq import requests_for
from ebind.client import SubjectMoved
from ebind.context import Context, set_current
from ebind.crashpoints import crashpoint
from ebind.direct import ack
from ebind.dlq import publish_dead_letter
from ebind.errors import NonRetryable
from ebind.horizon import TaskHorizon, horizon_error, is_expired
from ebind.logging import get_logger
from ebind.payload import ErrorRedactor, PayloadCodec, open_args, redact, seal
from ebind.periodic import HEADER_SCHEDULE, firing_envelope, planted_repeat
from ebind.progress import ProgressPublisher
from ebind.retry import RetryPolicy
from ebind.revoke import revoked_error
from ebind.streams import RESP_STREAM, TASKS_STREAM, delete_message, dlq_subject
from ebind.validate import admit_envelope, invalid
from ebind.wire import (
    DLQEntry,
    ErrorKind,
    TaskEnvelope,
    TaskError,
    TaskResponse,
    decode_response,
    encoder,
)
from ebind.worker.blocking import Watched
from ebind.worker.fence import answers_run, response_fence
from ebind.worker.hook import StepFailedEarlier, StepUnproven
from ebind.worker.middleware import (
    LOG_CLAIMED,
    OUTCOME_LISTENERS,
    Handler,
    PlainChain,
    attempt_line_listener,
    emit_attempt_line,
    notify_outcome,
    plain_chain,
)
from ebind.worker.outcome import AttemptError, DeadLetter, Retry, crash_looped, decide
from ebind.worker.outcome import effective_policy as _effective_policy
from ebind.worker.procpool import EncodedResult, ProcessPool
from ebind.worker.revoked import Revocations

_STARTED = "ebind.started_monotonic"

if TYPE_CHECKING:
    from ebind.limits.concurrency import ConcurrencyGate, SlotHeld
    from ebind.signature import HandlerSpec
    from ebind.signing import Signer
    from ebind.worker.admission import RateAdmission
    from ebind.worker.hook import StepHook

__all__ = ["AttemptRunner", "delivery_count"]

log = get_logger("ebind.worker")
task_log = get_logger("ebind.task")

UNKNOWN_HANDLER_DELIVERIES = 3
"""Deliveries of an unknown task name nak'd (for rolling deploys) before it is dead-lettered."""
UNKNOWN_HANDLER_DELAY = 2.0
HOOK_RETRY_DELAY = 1.0
"""Minimum delay before a delivery whose step hook or DLQ publish failed comes back."""
HOOK_EXTRA_DELIVERIES = 5
"""Deliveries past the attempt cap after which a failing ``on_step_failed`` stops holding the
message: the DLQ entry is written and the message terminated (the sweep reconciles the step)."""
RESULT_OVERHEAD = 1024
"""Room kept for the TaskResponse / KV framing around a result when checking max_payload."""
DLQ_PUBLISH_TIMEOUT = 5.0
RESPOND_PATIENCE = 60.0
"""Seconds a worker keeps trying to store the response of a task that succeeded."""
RESPOND_RETRY_DELAY = 0.25
RESPOND_RETRY_MAX_DELAY = 5.0
FENCE_TRIES = 3
"""Conditional response publishes before giving up on a subject that keeps moving."""
HEADER_SEQUENCE = "Nats-Sequence"

_NO_RETRY = RetryPolicy.none()
_NON_RETRYABLE: tuple[type[BaseException], ...] = (NonRetryable,)


def _ack_field(msg: Any, offset: int) -> int | None:
    """Field ``offset`` after the consumer name in the ack subject (None if unparsable).

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``, or with
    ``<domain>.<hash>`` after ``ACK`` (11+ tokens); read without building Metadata.
    """
    fields: tuple[int | None, ...] | None = getattr(msg, "_ebind_ack_fields", None)
    if fields is None:
        fields = _ack_fields(msg.reply or "")
        with contextlib.suppress(AttributeError):  # without a __dict__: parsed each time
            msg._ebind_ack_fields = fields  # parsed once per delivery
    return fields[offset]


def _ack_fields(reply: str) -> tuple[int | None, ...]:
    """The delivered count, stream and consumer sequences and timestamp of an ack subject."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        first = 4
    elif len(tokens) >= 11:
        first = 6
    else:
        return (None, None, None, None)
    try:
        return (
            int(tokens[first]),
            int(tokens[first + 1]),
            int(tokens[first + 2]),
            int(tokens[first + 3]),
        )
    except ValueError:
        return tuple(_int(t) for t in tokens[first : first + 4])


def _int(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def delivery_count(msg: Any) -> int:
    """``num_delivered`` from the ack subject (1-based)."""
    got = _ack_field(msg, 0)
    if got is not None:
        return got
    try:
        return int(msg.metadata.num_delivered)
    except Exception:
        return 1


def stream_seq(msg: Any) -> int:
    """The message's stream sequence from its ack subject (0 when it has none)."""
    got = _ack_field(msg, 1)
    if got is not None:
        return got
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:
        return 0


def stream_time(msg: Any) -> datetime | None:
    """When the stream stored this message (the ack subject's nanosecond timestamp)."""
    got = _ack_field(msg, 3)
    if got is None or got <= 0:
        return None
    return datetime.fromtimestamp(got / 1e9, UTC)


def outcome_msg_id(msg: Any, kind: str) -> str | None:
    """``Nats-Msg-Id`` for an outcome (a dead letter) of this message (None if unknown).

    Every delivery of one message shares it, so when a first delivery's publish lands
    late (buffered through a reconnect, after its confirmation timed out) and a
    redelivery publishes again, the stream keeps one. A DLQ requeue is a new message
    with a new sequence, so its outcome is kept too.
    """
    seq = stream_seq(msg)
    return f"{msg.subject}:{seq}:{kind}" if seq else None


def _now() -> datetime:
    return datetime.now(UTC)


def _raw_subject_name(subject: str) -> str:
    # TASKS.<name> / TASKS_TARGET.<token>.<name> / TASKQ.<queue>.<band>.<name>: the name
    # part is already a valid subject tail.
    if subject.startswith("TASKS_TARGET."):
        parts = subject.split(".", 2)
        return parts[2] if len(parts) == 3 and parts[2] else "_undecodable"
    if subject.startswith("TASKQ."):
        parts = subject.split(".", 3)
        return parts[3] if len(parts) == 4 and parts[3] else "_undecodable"
    name = subject.partition(".")[2]
    return name or "_undecodable"


class AttemptRunner:
    """Processes deliveries for one worker (holds no per-message state)."""

    def __init__(
        self,
        app: Any,
        *,
        worker_id: str,
        chain: Handler,
        hook: StepHook | None,
        default_policy: RetryPolicy,
        executor: ThreadPoolExecutor,
        max_payload: int,
        block_warn: float = 0.5,
    ) -> None:
        self.app = app
        self.block_warn = block_warn
        self.worker_id = worker_id
        self.chain = chain
        self.hook = hook
        self.default_policy = default_policy
        self.executor = executor
        self.max_payload = max_payload
        self.on_stuck: Callable[[asyncio.Future[Any]], None] | None = None
        """Told about a sync handler's thread still running past its timeout (the worker
        counts it against its capacity until the thread returns)."""
        self.procpool: ProcessPool | None = None
        self.revocations: Revocations | None = None
        self.concurrency: ConcurrencyGate | None = None
        """Slot leases of tasks with a concurrency limit (set by the worker when any has one)."""
        """Revoked task ids and the running attempts to cancel (set by the worker)."""
        """Child processes for sync handlers that run there (set by the worker)."""
        self.admission: RateAdmission | None = None
        """Holds or defers deliveries of rate-limited tasks (set when any task has a limit)."""
        self._registry = app.registry
        # Message trust (ebind/signing.py, ebind/payload.py); None switches each off.
        self._signer: Signer | None = getattr(app, "signer", None)
        self._codec: PayloadCodec | None = getattr(app, "payload_codec", None)
        self._redactor: ErrorRedactor | None = getattr(app, "redact_error", None)
        # Fixed once the App is connected: retention.tasks, kept under the server's max_age.
        self._horizon = float(getattr(app, "tasks_horizon", 0.0) or 0.0)
        self._horizon_ns = int(self._horizon * 1e9)
        self._nc = app.nc
        self._js = app.js
        # The worker's loop when built inside it (asking for the running loop is a getpid
        # system call on Python 3.11); None asks each time.
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._progress = ProgressPublisher(app.js)
        from ebind.codec import decode_args, encode_result  # pure module, imported once

        self._decode_args: Callable[[HandlerSpec, Any], list[Any]] = decode_args
        self._encode_result: Callable[[HandlerSpec, Any], bytes] = encode_result
        self._base: Handler | None = None
        """The handler :meth:`base_handler` built (a plain chain must wrap this one)."""
        self._plain_of: Handler | None = None
        self._plain_cache: PlainChain | None = None
        self.on_answering: Callable[[Any], None] | None = None
        """Called with a delivery whose task finished, before its response is stored."""

    # ------------------------------------------------------------------ the delivery
    async def process(self, msg: Any) -> None:
        """Handle one delivery; only cancellation (shutdown past its grace) escapes."""
        attempt = delivery_count(msg)
        if attempt > 1:
            observe.emit(observe.REDELIVERED, delivery=attempt)
        admitted = self._admitted(msg, attempt)
        if isinstance(admitted, TaskError):
            await self._dead_letter_raw(msg, attempt, admitted)
            planted = planted_repeat(msg)
            if planted is not None:
                await self._remove_planted(planted)
            return
        env = admitted
        try:
            spec = self._plain_spec(msg, env)
            if spec is not None:
                await self._run_plain(msg, env, spec)
            else:
                await self._process(msg, env, attempt)
        except BaseException:
            # Cancelled at shutdown (the worker nak'd the message first) or crashed (the
            # worker naks it): either way the delivery comes back without an outcome.
            self._release(env, 0.0)
            raise

    def _plain_spec(self, msg: Any, env: TaskEnvelope) -> HandlerSpec | None:
        """The handler of a delivery every check before its run would let through, else None.

        Such a delivery takes :meth:`_run_plain`, one frame instead of the full path's
        layers. It is the first delivery (no earlier response to look for, no attempt cap
        it could exceed), not a DAG step, without deadline or time limit, of a task without
        rate or concurrency limit or process pool, within the tasks horizon, surely not
        revoked, and the chain only logs and recovers. Anything else returns None and takes
        :meth:`_process`, which runs every check.
        """
        plain = self._plain
        if (
            plain is None
            or env.attempt != 1
            or env.dag_id
            or env.step_id
            or env.deadline is not None
            or env.timeout
        ):
            return None
        spec: HandlerSpec | None = self._registry.get(env.name)
        if (
            spec is None
            or spec.timeout is not None
            or spec.rate_limit is not None
            or spec.concurrency is not None
            or (not spec.is_async and self.procpool is not None and self.procpool.takes(spec))
            or self._expiry_unsure(msg)
            or self._start_checked(msg, env, spec)
        ):
            return None
        return spec

    @property
    def _plain(self) -> PlainChain | None:
        """What the chain adds for a plain task, when it is only log and recover around the base."""
        chain = self.chain
        if chain is not self._plain_of:
            self._plain_of = chain
            got = plain_chain(chain)
            self._plain_cache = got if got is not None and got.base is self._base else None
        return self._plain_cache

    async def _run_plain(self, msg: Any, env: TaskEnvelope, spec: HandlerSpec) -> None:
        """A plain delivery (see :meth:`_plain_spec`): the full path's steps, in one frame.

        The chain's log and recover, the revocable attempt and the base handler inline:
        the same outcome for every result, error and revocation. A failure takes the full
        path's :meth:`_failed`.
        """
        ctx = self._context(env)
        plain = self._plain_cache
        assert plain is not None
        start = time.perf_counter()
        if plain.logs:
            ctx.extras[LOG_CLAIMED] = True
        set_current(ctx)
        revocations = self.revocations
        current: asyncio.Task[Any] | None = None
        if revocations is not None:
            # A revocation cancels this very task; a sync handler's thread sees ctx.revoked.
            current = asyncio.current_task(self._loop) if spec.is_async else None
            revocations.running(env.id, ctx, current)
        error: TaskError | None = None
        result = wire = b""
        try:
            result = self._encoded(spec, await self._plain_call(spec, ctx, env))
        except AttemptError as exc:
            error = exc.error
        except BaseException as exc:
            error = self._plain_error(exc, spec, ctx, current)
        finally:
            if revocations is not None:
                revocations.finished(env.id)
        if ctx.revoked and revocations is not None:
            error = revoked_error(env.id)
        if error is None:
            crashpoint("worker.after_handler")
            wire, problem = self._wire_result(env, result)
            if problem is not None:
                error = TaskError(kind=ErrorKind.ENCODE.value, message=problem, retryable=False)
        if error is not None:
            await self._plain_failed(msg, env, ctx, spec, error, start)
            return
        # Outcome listeners (log line, metrics) run before the reply, as on the full path.
        _plain_succeeded(ctx, plain.logs, start)
        if self.on_answering is not None:
            self.on_answering(msg)
        if env.reply_to and not (
            await self._respond(env, result=wire, error=None)
            or await self._respond_again(env, wire)
        ):
            policy = _effective_policy(env.retry_policy, spec.retry, self.default_policy)
            await self._nak(msg, env, max(HOOK_RETRY_DELAY, policy.next_delay(env.attempt)))
            return
        crashpoint("worker.after_response")
        await ack(msg)

    def _plain_call(self, spec: HandlerSpec, ctx: Context, env: TaskEnvelope) -> Awaitable[Any]:
        """The base handler's call without a time limit; raises AttemptError on bad arguments."""
        try:
            payload = open_args(self._codec, bytes(env.payload), f"arguments of task {env.name!r}")
            args = self._decode_args(spec, payload)
        except Exception as exc:
            kind = getattr(exc, "kind", None) or ErrorKind.DECODE.value
            raise AttemptError(TaskError(kind=kind, message=str(exc), retryable=False)) from exc
        if spec.wants_context:
            args.insert(0, ctx)
        if spec.is_async:
            return Watched(
                spec.fn(*args), task_name=spec.name, task_id=env.id, limit=self.block_warn
            )
        return _invoke(spec, args, None, self.executor, env.id, self.block_warn, self.on_stuck)

    async def _plain_failed(
        self,
        msg: Any,
        env: TaskEnvelope,
        ctx: Context,
        spec: HandlerSpec,
        error: TaskError,
        start: float,
    ) -> None:
        """A plain delivery's failure, handed to the full path's :meth:`_failed`."""
        plain = self._plain_cache
        if plain is not None and plain.logs:
            # The log middleware's listener, first as it would be, for the outcome below.
            listeners = ctx.extras.setdefault(OUTCOME_LISTENERS, [])
            listeners.insert(0, attempt_line_listener(ctx, start))
        policy = _effective_policy(env.retry_policy, spec.retry, self.default_policy)
        await self._failed(msg, env, ctx, policy, error, False)

    def _encoded(self, spec: HandlerSpec, value: Any) -> bytes:
        """The handler's return value as JSON; raises AttemptError (kind ``encode``)."""
        if isinstance(value, EncodedResult):  # encoded by a pool child
            return value.data
        try:
            return self._encode_result(spec, value)
        except Exception as exc:
            raise AttemptError(
                TaskError(
                    kind=ErrorKind.ENCODE.value,
                    message=f"result of {spec.name} could not be encoded as JSON: {exc}",
                    retryable=False,
                )
            ) from exc

    def _plain_error(
        self,
        exc: BaseException,
        spec: HandlerSpec,
        ctx: Context,
        current: asyncio.Task[Any] | None,
    ) -> TaskError:
        """The error the chain would report for what a plain task's handler raised.

        Re-raises a cancellation that is not this attempt's revocation (a shutdown).
        """
        from ebind.worker.outcome import classify

        # The base handler maps its dont_retry types first (a TimeoutError without a time
        # limit is left to recover), then recover maps the rest; a cancellation passes.
        if (
            spec.dont_retry
            and isinstance(exc, spec.dont_retry)
            and not isinstance(exc, TimeoutError)
        ):
            return classify(exc, dont_retry=spec.dont_retry)
        if isinstance(exc, asyncio.CancelledError):
            if ctx.revoked and current is not None and current.cancelling() == 1:
                current.uncancel()  # ours alone (a shutdown's cancel on top leaves more)
                return revoked_error(ctx.task_id)
            raise exc
        return classify(exc, non_retryable=_NON_RETRYABLE)

    def _admitted(self, msg: Any, attempt: int) -> TaskEnvelope | TaskError:
        """The delivery's envelope, or the error to dead-letter a message that may not run."""
        if self._signer is not None:
            # Before decoding: nothing an unauthenticated message says is used, not even
            # its reply subject, so it gets no response.
            forged = self._signer.check(msg.subject, msg.data, msg.headers)
            if forged is not None:
                return forged
        planted = planted_repeat(msg)
        if planted is not None:
            return invalid(
                f"fired by a repeating schedule on {planted}, where only one-shot tasks "
                "belong (repeating ones are made with app.schedule, on "
                "TASKS_SCHEDULES.<name>); the schedule is removed"
            )
        # Every field is untrusted: nothing below runs (no hook, no reply) unless the
        # message passes ebind.validate; what fails is dead-lettered on this delivery.
        admitted = admit_envelope(msg.data, msg.subject)
        if isinstance(admitted, TaskError):
            return admitted
        env = msgspec.structs.replace(admitted, attempt=attempt, worker_id=self.worker_id)
        # --- periodic schedules (ebind/periodic.py): every firing carries the schedule's
        # body, so it gets its own id here (<name>-<stream seq>); other messages unchanged ---
        fired = firing_envelope(env, msg)
        if fired is not env and fired.reply_to:
            # The reply subject was checked against the id the message carried, not the
            # firing's new one (schedules never ask for a reply): answer nowhere.
            fired = msgspec.structs.replace(fired, reply_to="")
        return fired

    def _start_checked(self, msg: Any, env: TaskEnvelope, spec: HandlerSpec) -> bool:
        """Whether :meth:`_may_start` could say no: a rate limit, or an id not surely clear.

        The one place that decides whether a delivery's start is checked; a task without
        rate limit whose id is surely not revoked skips the coroutine.
        """
        if spec.rate_limit is not None and self.admission is not None:
            return True
        revocations = self.revocations
        return revocations is not None and not revocations.surely_clear(env.id, _ack_field(msg, 3))

    async def _process(self, msg: Any, env: TaskEnvelope, attempt: int) -> None:
        ctx = self._context(env)
        spec: HandlerSpec | None = self._registry.get(env.name)
        if spec is None:
            await self._unknown_handler(msg, env, ctx)
            return
        is_step = self.hook is not None and bool(env.dag_id and env.step_id)
        if self.hook is None and env.dag_id and env.step_id:
            await self._step_without_hook(msg, env, ctx)
            return
        if env.attempt > 1 and env.reply_to and not is_step and await self._answered(env):
            # An earlier delivery finished and its response was stored after all (e.g.
            # buffered through a reconnect, after its confirmation timed out): that is
            # the task's recorded outcome, so this delivery neither runs nor answers (and
            # is not dead-lettered by the attempt limit or the deadline checked next).
            log.info("task.already_answered", task_id=env.id, task_name=env.name, attempt=attempt)
            await msg.ack()
            return
        policy = _effective_policy(env.retry_policy, spec.retry, self.default_policy)
        early = self._precheck(env, policy, self._expiry(msg, env))
        if early is not None:
            await self._fail_before_run(msg, env, ctx, policy, early)
            return
        if self._start_checked(msg, env, spec) and not await self._may_start(
            msg, env, ctx, policy, spec
        ):
            return
        if is_step and not await self._step_started(msg, env, ctx, policy):
            return
        held: SlotHeld | None = None
        if self.concurrency is not None and spec.concurrency is not None and not is_step:
            go, held = await self._take_slot(msg, env, spec, ctx, policy, is_step)
            if not go:
                return  # handed back to wait for a concurrency slot (not an attempt)
        set_current(ctx)
        try:
            result = await self._attempt(spec, ctx, env, held)
        except AttemptError as exc:
            await self._failed(msg, env, ctx, policy, exc.error, is_step)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a middleware outside `recover` raised
            from ebind.worker.outcome import classify

            await self._failed(msg, env, ctx, policy, classify(exc), is_step)
            return
        await self._succeeded(msg, env, ctx, policy, result, is_step)

    async def _may_start(
        self, msg: Any, env: TaskEnvelope, ctx: Context, policy: RetryPolicy, spec: HandlerSpec
    ) -> bool:
        """Whether the delivery may run now: admitted by its limits, and not revoked.

        False once the delivery is answered, deferred or handed back. Skipped (it would
        answer True) for a task without a rate limit whose id is surely not revoked.
        """
        # A limited task waits here for its token, or as a delayed copy; the revocation
        # check comes after, so a task revoked while it waited does not run.
        admission = self.admission
        if (
            spec.rate_limit is not None
            and admission is not None
            and not await admission.admit(msg, env, spec, stream_seq(msg))
        ):
            return False
        revocations = self.revocations
        if revocations is not None and await revocations.is_revoked(env.id, _ack_field(msg, 3)):
            await self._fail_before_run(msg, env, ctx, policy, revoked_error(env.id))
            return False
        return True

    async def _take_slot(
        self,
        msg: Any,
        env: TaskEnvelope,
        spec: HandlerSpec,
        ctx: Context,
        policy: RetryPolicy,
        is_step: bool,
    ) -> tuple[bool, SlotHeld | None]:
        """A concurrency slot when the task has a limit; ``(False, None)`` once handed back."""
        gate = self.concurrency
        if gate is None or spec.concurrency is None or is_step:
            return True, None
        held = await gate.admit(msg, env, spec.concurrency, ctx)
        if held is None:
            return False, None
        revocations = self.revocations
        # revoked while it waited: it must not run
        if (
            held.waited
            and revocations is not None
            and await revocations.is_revoked(env.id, _ack_field(msg, 3))
        ):
            gate.release(held)
            await self._fail_before_run(msg, env, ctx, policy, revoked_error(env.id))
            return False, None
        return True, held

    def _attempt(
        self, spec: HandlerSpec, ctx: Context, env: TaskEnvelope, held: SlotHeld | None
    ) -> Awaitable[bytes]:
        """The chain, revocable when revocations are on, holding its slot when it has one."""
        revocations = self.revocations
        if revocations is None:
            run: Awaitable[bytes] = self.chain(ctx, env)
        else:
            run = self._revocable(revocations, spec, ctx, env)
        if self.concurrency is not None and held is not None:
            run = self.concurrency.guard(held, ctx, self._cancellable(spec), run)
        return run

    def _cancellable(self, spec: HandlerSpec) -> bool:
        """Whether cancelling an attempt of ``spec`` stops its handler.

        An async handler stops at its next await; a process-pool call kills its child. A
        thread cannot be interrupted: its handler sees ``ctx.revoked`` instead.
        """
        procs = self.procpool
        return spec.is_async or (procs is not None and procs.takes(spec))

    async def _revocable(
        self, revocations: Revocations, spec: HandlerSpec, ctx: Context, env: TaskEnvelope
    ) -> bytes:
        """Run the chain so a revocation can cancel it (async) or flag it (sync handlers)."""
        # A revocation cancels this very task (no extra task per attempt; a process-pool
        # call then kills its child); a sync handler's thread cannot be interrupted, so it
        # sees ctx.revoked instead.
        current = asyncio.current_task(self._loop) if self._cancellable(spec) else None
        revocations.running(env.id, ctx, current)
        try:
            result = await self.chain(ctx, env)
        except asyncio.CancelledError:
            # Ours alone (a shutdown's cancel on top leaves the count above one): absorb it.
            if ctx.revoked and current is not None and current.cancelling() == 1:
                current.uncancel()
                raise AttemptError(revoked_error(env.id)) from None
            raise
        except Exception:
            if ctx.revoked:
                raise AttemptError(revoked_error(env.id)) from None
            raise
        finally:
            revocations.finished(env.id)
        if ctx.revoked:
            raise AttemptError(revoked_error(env.id))
        return result

    def _context(self, env: TaskEnvelope) -> Context:
        return Context(
            task_id=env.id,
            name=env.name,
            attempt=env.attempt,
            dag_id=env.dag_id,
            step_id=env.step_id,
            worker_id=self.worker_id,
            target=env.target,
            deadline=env.deadline,
            # get_logger with initial values is a lazy proxy: nothing is built unless used.
            log=get_logger("ebind.task", task_id=env.id, task_name=env.name, attempt=env.attempt),
            # Lets the fallback attempt line report a duration when no log middleware ran.
            extras={_STARTED: time.monotonic()},
            progress_sink=self._progress.for_task(env.id, env.reply_to, env.name),
        )

    def _task_horizon(self, msg: Any, env: TaskEnvelope) -> TaskHorizon | None:
        """When this message became ready (its stream time, else ``enqueued_at``) + horizon."""
        if not self._horizon:
            return None
        ready_at = stream_time(msg) or env.enqueued_at
        return None if ready_at is None else TaskHorizon(ready_at, self._horizon)

    def _expiry_unsure(self, msg: Any) -> bool:
        """False when the message is surely within the tasks horizon (or there is none)."""
        if not self._horizon:
            return False
        stored_ns = _ack_field(msg, 3)
        return not (stored_ns and time.time_ns() < stored_ns + self._horizon_ns)

    def _expiry(self, msg: Any, env: TaskEnvelope) -> TaskError | None:
        """The ``expired`` error when this message is past the tasks horizon, else None."""
        if not self._expiry_unsure(msg):
            return None  # the hot path: integers only, no datetime built
        horizon = self._task_horizon(msg, env)
        if horizon is not None and is_expired(horizon.ready_at, horizon.seconds, _now()):
            return horizon_error(horizon.ready_at, horizon.seconds)
        return None

    def _precheck(
        self, env: TaskEnvelope, policy: RetryPolicy, expired: TaskError | None
    ) -> TaskError | None:
        if expired is not None:
            return expired
        if env.deadline is not None and env.deadline <= _now():
            return _late_start(env.deadline)
        return crash_looped(policy, env.attempt)

    # ------------------------------------------------------------------ base handler
    def base_handler(self) -> Handler:
        """The innermost handler: decode args, call the function, encode the result."""
        registry = self._registry
        decode_args = self._decode_args
        encoded = self._encoded
        executor = self.executor
        block_warn = self.block_warn
        codec = self._codec

        async def call(ctx: Context, env: TaskEnvelope) -> bytes:
            spec: HandlerSpec = registry.get(env.name)
            try:
                payload = open_args(codec, bytes(env.payload), f"arguments of task {env.name!r}")
                args = decode_args(spec, payload)
            except Exception as exc:
                kind = getattr(exc, "kind", None) or ErrorKind.DECODE.value
                raise AttemptError(TaskError(kind=kind, message=str(exc), retryable=False)) from exc
            if spec.wants_context:
                args.insert(0, ctx)
            if env.deadline is not None and env.deadline <= _now():
                # Passed while the task waited for a rate-limit token or a concurrency slot.
                raise AttemptError(_late_start(env.deadline))
            timeout, by_deadline = _time_limit(spec, env)
            try:
                value = await _invoke(
                    spec, args, timeout, executor, env.id, block_warn, self.on_stuck, self.procpool
                )
            except TimeoutError as exc:
                if timeout is None or not getattr(exc, "_ebind_limit", False):
                    raise
                # A process-pool call may find its deadline binding only after waiting for a child.
                by_deadline = by_deadline or bool(getattr(exc, "by_deadline", False))
                raise AttemptError(_timeout_error(timeout, by_deadline)) from exc
            except spec.dont_retry as exc:
                from ebind.worker.outcome import classify

                raise AttemptError(classify(exc, dont_retry=spec.dont_retry)) from exc
            return encoded(spec, value)

        self._base = call
        return call

    # ------------------------------------------------------------------ outcomes
    async def _succeeded(
        self,
        msg: Any,
        env: TaskEnvelope,
        ctx: Context,
        policy: RetryPolicy,
        result: bytes,
        is_step: bool,
    ) -> None:
        crashpoint("worker.after_handler")
        wire, problem = self._wire_result(env, result)
        if problem is not None:
            err = TaskError(kind=ErrorKind.ENCODE.value, message=problem, retryable=False)
            await self._failed(msg, env, ctx, policy, err, is_step)
            return
        if is_step and self.hook is not None:
            try:
                await self.hook.on_step_done(env, result)
            except Exception as exc:
                await self._hook_failed(msg, env, ctx, policy, "on_step_done", exc)
                return
        # Outcome listeners (log line, metrics) run before the reply, so whoever sees the
        # result also sees the attempt recorded.
        self._outcome(ctx, "succeeded", None)
        if self.on_answering is not None:
            self.on_answering(msg)
        if env.reply_to and not await self._respond_stored(env, wire):
            # Acking now would lose the result: give the message back so the task runs
            # again (the crash-loop guard bounds how often).
            await self._nak(msg, env, max(HOOK_RETRY_DELAY, policy.next_delay(env.attempt)))
            return
        crashpoint("worker.after_response")
        await ack(msg)

    def _wire_result(self, env: TaskEnvelope, result: bytes) -> tuple[bytes, str | None]:
        """The result as it leaves the process, and why it cannot (None when it can)."""
        try:
            # Sealed when the App has a payload codec (the size check must see the token,
            # which is larger than the plaintext).
            wire = result if self._codec is None else seal(self._codec, result)
        except Exception as exc:
            return result, f"the payload codec could not seal the result: {exc}"
        if len(wire) + RESULT_OVERHEAD > self.max_payload:
            return wire, (
                f"result of {env.name} is {len(wire)} bytes; the server's max_payload is "
                f"{self.max_payload} bytes (return a reference, e.g. an object-store key)"
            )
        return wire, None

    async def _respond_stored(self, env: TaskEnvelope, result: bytes) -> bool:
        """Store the response of a task that succeeded, retrying for up to RESPOND_PATIENCE.

        A response that could not be stored must not cost an attempt: with a one-attempt
        policy the redelivery would end as ``worker_lost`` for a task that succeeded. The
        message stays held (keepalives go on) while EBIND_RESP elects a leader or the link
        comes back; before publishing again the worker checks whether an earlier publish
        was stored after all, and it never publishes while disconnected, so the stream keeps
        one response.
        """
        return await self._respond(env, result=result, error=None) or await self._respond_again(
            env, result
        )

    async def _respond_again(
        self, env: TaskEnvelope, result: bytes | None, error: TaskError | None = None
    ) -> bool:
        """:meth:`_respond_stored` after its first publish failed: wait, check, publish again."""
        delay = RESPOND_RETRY_DELAY
        deadline = time.monotonic() + RESPOND_PATIENCE
        while time.monotonic() + delay <= deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESPOND_RETRY_MAX_DELAY)
            if not self._nc.is_connected:
                continue  # a publish now would only be buffered beside the first one
            if await self._answered(env):
                log.info("worker.response_landed_late", task_id=env.id, task_name=env.name)
                return True
            if await self._respond(env, result=result, error=error):
                return True
        return False

    async def _failed(
        self,
        msg: Any,
        env: TaskEnvelope,
        ctx: Context,
        policy: RetryPolicy,
        error: TaskError,
        is_step: bool,
    ) -> None:
        error = self._redact(error)  # before any log line, record, dead letter or response
        decision = decide(
            error, policy, env.attempt, horizon=self._task_horizon(msg, env), now=_now()
        )
        if isinstance(decision, Retry):
            await self._nak(msg, env, decision.delay)
            self._outcome(ctx, "retrying", error)
            return
        assert isinstance(decision, DeadLetter)
        await self._terminal(msg, env, ctx, policy, decision.error, is_step)

    async def _terminal(
        self,
        msg: Any,
        env: TaskEnvelope,
        ctx: Context,
        policy: RetryPolicy,
        error: TaskError,
        is_step: bool,
    ) -> None:
        """Hook (fenced), DLQ entry (awaited), outcome, response, then term — in that order.

        The response goes out only once the dead letter is stored: a client that sees
        TaskFailed finds the entry, and a failed DLQ publish (nak, rerun) never answers twice.
        """
        if is_step and self.hook is not None:
            try:
                await self.hook.on_step_failed(env, error)
                crashpoint("step.after_failed")
            except Exception as exc:
                cap = max(policy.maximum_attempts, 1) + HOOK_EXTRA_DELIVERIES
                if policy.maximum_attempts == 0 or env.attempt < cap:
                    await self._hook_failed(msg, env, ctx, policy, "on_step_failed", exc)
                    return
                log.error(
                    "worker.hook_gave_up",
                    task_id=env.id,
                    dag_id=env.dag_id,
                    step_id=env.step_id,
                    attempt=env.attempt,
                    error=str(exc),
                )
        if not is_step and env.reply_to and await self._answered(env):
            # Another delivery of this run recorded its outcome while this one was stale.
            self._fenced(env, "dead_lettered")
            self._outcome(ctx, "skipped", None)
            await msg.ack()
            return
        if not await self._store_dead_letter(msg, env, ctx, policy, error, env.attempt):
            return
        crashpoint("worker.after_dlq")
        # Recorded before the answer: a waiter that sees the failure finds it counted.
        self._outcome(ctx, "dead_lettered", error)
        if env.reply_to and not (
            await self._respond(env, result=None, error=error)
            or await self._respond_again(env, None, error)
        ):
            # Retried like a result for RESPOND_PATIENCE; a redelivery would run the handler
            # again (a NonRetryable one too), so the dead letter stays the only record.
            log.error(
                "worker.failure_unanswered",
                task_id=env.id,
                task_name=env.name,
                error_kind=error.kind,
                note="the results stream refused the failure response; the dead letter "
                "records the failure",
            )
        await msg.term()

    async def _fail_before_run(
        self, msg: Any, env: TaskEnvelope, ctx: Context, policy: RetryPolicy, error: TaskError
    ) -> None:
        error = self._redact(error)
        is_step = self.hook is not None and bool(env.dag_id and env.step_id)
        # A DAG step claims its record for this attempt first, so the attempt-fenced failure
        # below is accepted (and a stale message for a finished step is just dropped).
        if is_step and not await self._step_started(msg, env, ctx, policy):
            return
        await self._terminal(msg, env, ctx, policy, error, is_step)

    async def _unknown_handler(self, msg: Any, env: TaskEnvelope, ctx: Context) -> None:
        error = TaskError(
            kind=ErrorKind.UNKNOWN_HANDLER.value,
            message=(
                f"no handler registered for {env.name!r} on worker {self.worker_id} "
                f"(after {env.attempt} deliveries)"
            ),
            retryable=False,
        )
        if env.attempt < UNKNOWN_HANDLER_DELIVERIES:
            # Rolling deploys: give a worker that knows the name a chance to take it.
            await self._nak(msg, env, UNKNOWN_HANDLER_DELAY)
            self._outcome(ctx, "retrying", error)
            return
        await self._fail_before_run(msg, env, ctx, _NO_RETRY, error)

    async def _step_without_hook(self, msg: Any, env: TaskEnvelope, ctx: Context) -> None:
        """A DAG step reached a worker that cannot check it is the scheduler's dispatch.

        Run as a plain task it would run with whatever arguments the message carries and
        never complete its step, so it is nak'd for a worker with the step hook to take;
        past the same window as an unknown task name it is dead-lettered.
        """
        if env.attempt < UNKNOWN_HANDLER_DELIVERIES:
            await self._nak(msg, env, UNKNOWN_HANDLER_DELAY)
            self._outcome(ctx, "retrying", None)
            return
        why = StepUnproven(
            f"DAG step {env.dag_id!r}/{env.step_id!r} reached only workers without the "
            f"workflow step hook ({env.attempt} deliveries); none could check its dispatch"
        )
        await self._dead_letter_raw(msg, env.attempt, _unproven(why))

    async def _step_started(
        self, msg: Any, env: TaskEnvelope, ctx: Context, policy: RetryPolicy
    ) -> bool:
        assert self.hook is not None
        try:
            started = await self.hook.on_step_started(env)
        except StepUnproven as exc:
            # Not the scheduler's dispatch: it must not touch the step (no on_step_failed,
            # no response), only leave its bytes in the DLQ.
            await self._dead_letter_raw(msg, env.attempt, _unproven(exc))
            return False
        except StepFailedEarlier as exc:
            await self._dead_letter_failed_step(msg, env, ctx, policy, exc)
            return False
        except Exception as exc:
            await self._hook_failed(msg, env, ctx, policy, "on_step_started", exc)
            return False
        if not started:
            # Stale delivery (step finished, or owned by a newer attempt): drop it.
            await msg.ack()
            self._outcome(ctx, "skipped", None)
        return bool(started)

    async def _dead_letter_failed_step(
        self,
        msg: Any,
        env: TaskEnvelope,
        ctx: Context,
        policy: RetryPolicy,
        failed: StepFailedEarlier,
    ) -> None:
        """Store the dead letter of a step this dispatch already failed, then terminate it.

        The earlier delivery stopped between the failed record and its dead letter. The
        message id is the one that delivery used, so an entry it did store is kept once.
        """
        final_attempt = failed.attempt or env.attempt
        if not await self._store_dead_letter(msg, env, ctx, policy, failed.error, final_attempt):
            return
        self._outcome(ctx, "dead_lettered", failed.error)
        await msg.term()

    async def _store_dead_letter(
        self,
        msg: Any,
        env: TaskEnvelope,
        ctx: Context,
        policy: RetryPolicy,
        error: TaskError,
        final_attempt: int,
    ) -> bool:
        """Store the task's dead letter under its message's id; False once it was nak'd instead.

        Every delivery of one message uses the same id, so a redelivery that stores it
        again after an earlier delivery did leaves one entry.
        """
        entry = DLQEntry(
            error=error,
            final_attempt=final_attempt,
            dead_lettered_at=_now(),
            task=env,
            subject=msg.subject,
        )
        if await self._publish_dlq(env.name, entry, ctx, outcome_msg_id(msg, "dlq")):
            return True
        await self._nak(msg, env, max(HOOK_RETRY_DELAY, policy.next_delay(env.attempt)))
        self._outcome(ctx, "failed", error)
        return False

    async def _hook_failed(
        self,
        msg: Any,
        env: TaskEnvelope,
        ctx: Context,
        policy: RetryPolicy,
        where: str,
        exc: Exception,
    ) -> None:
        error = TaskError(kind="hook", message=f"step hook {where} failed: {exc}", retryable=True)
        await self._nak(msg, env, max(HOOK_RETRY_DELAY, policy.next_delay(env.attempt)))
        self._outcome(ctx, "failed", error)

    async def _nak(self, msg: Any, env: TaskEnvelope, delay: float) -> None:
        """Hand the delivery back for redelivery in ``delay`` seconds, releasing its step claim."""
        self._release(env, delay)
        await msg.nak(delay=delay)

    def _release(self, env: TaskEnvelope, redeliver_in: float) -> None:
        """Tell the step hook this delivery ends without an outcome (DAG steps only).

        A claim left behind would keep the step in this worker's liveness record forever.
        """
        if self.hook is None or not (env.dag_id and env.step_id):
            return
        release = getattr(self.hook, "on_step_released", None)
        if release is None:
            return
        try:
            release(env, redeliver_in)
        except Exception:
            log.exception("worker.step_release_failed", dag_id=env.dag_id, step_id=env.step_id)

    async def _answered(self, env: TaskEnvelope) -> bool:
        """Whether EBIND_RESP holds a response to this run of the task.

        Asked by redeliveries before they run and before any dead letter; any trouble
        reading means "no" (run it, record it).
        """
        try:
            got = await requests_for(self._nc).get_last(RESP_STREAM, env.reply_to)
            if got is None:
                return False
            resp = decode_response(got.data)
        except Exception as exc:
            log.info("worker.answered_check_failed", task_id=env.id, error=repr(exc))
            return False
        return answers_run(resp, env)

    async def _expected_seq(self, env: TaskEnvelope) -> int | None:
        """``response_fence`` for the newest message on the task's response subject."""
        got = await requests_for(self._nc).get_last(RESP_STREAM, env.reply_to)
        if got is None:
            return 0
        seq = int((got.headers or {}).get(HEADER_SEQUENCE, 0))
        return response_fence(bytes(got.data), seq, env)

    def _fenced(self, env: TaskEnvelope, outcome: str) -> None:
        log.warning(
            "task.outcome_fenced",
            task_id=env.id,
            task_name=env.name,
            attempt=env.attempt,
            worker_id=self.worker_id,
            outcome=outcome,
            reason="this run's outcome is already recorded (the delivery went stale)",
        )

    # ------------------------------------------------------------------ publishing
    async def _respond(
        self, env: TaskEnvelope, *, result: bytes | None, error: TaskError | None
    ) -> bool:
        """Publish the response and wait until EBIND_RESP stored it; False if it did not."""
        resp = TaskResponse(
            task_id=env.id,
            result=msgspec.Raw(result) if result is not None else None,
            error=error,
            attempts=env.attempt,
            completed_at=_now(),
            token=env.reply_token,
        )
        data = encoder.encode(resp)
        expected: int | None = 0
        for _ in range(FENCE_TRIES):
            try:
                await self.app.publish_response(env.reply_to, data, expected_last_seq=expected)
                return True
            except SubjectMoved:
                try:
                    expected = await self._expected_seq(env)
                except Exception as exc:
                    log.warning("worker.respond_failed", task_id=env.id, error=repr(exc))
                    return False
                if expected is None:
                    self._fenced(env, "failed" if error is not None else "succeeded")
                    return True  # recorded already: acking loses nothing
            except Exception as exc:
                log.warning("worker.respond_failed", task_id=env.id, error=str(exc))
                return False
        log.warning("worker.respond_failed", task_id=env.id, error="response subject kept moving")
        return False

    async def answer_failed(self, env: TaskEnvelope, error: TaskError) -> bool:
        """Publish a failure response to ``env``'s (validated) reply subject."""
        return await self._respond(env, result=None, error=error)

    async def _publish_dlq(
        self, name: str, entry: DLQEntry, ctx: Context | None, msg_id: str | None
    ) -> bool:
        try:
            await publish_dead_letter(
                self._js, dlq_subject(name), entry, msg_id=msg_id, timeout=DLQ_PUBLISH_TIMEOUT
            )
        except Exception as exc:
            log.error(
                "worker.dlq_publish_failed",
                task_id=ctx.task_id if ctx else None,
                task_name=name,
                error=str(exc),
            )
            return False
        observe.emit(observe.DEAD_LETTERED, kind=entry.error.kind)
        return True

    async def _dead_letter_raw(self, msg: Any, attempt: int, error: TaskError) -> None:
        """Dead-letter a message that may not run, keeping its bytes; never answers it."""
        error = self._redact(error)
        entry = DLQEntry(
            error=error,
            final_attempt=attempt,
            dead_lettered_at=_now(),
            raw=bytes(msg.data),
            subject=msg.subject,
            raw_headers=bytes(getattr(msg, "header_block", None) or b""),
        )
        name = _raw_subject_name(msg.subject)
        if not await self._publish_dlq(name, entry, None, outcome_msg_id(msg, "dlq")):
            await msg.nak(delay=HOOK_RETRY_DELAY)
            return
        await msg.term()
        log.error(
            "task.dead_lettered",
            task_id=None,
            task_name=None,
            attempt=attempt,
            duration_ms=None,
            worker_id=self.worker_id,
            error_kind=error.kind,
            error=error.message[:500],
            subject=msg.subject,
        )

    async def _remove_planted(self, subject: str) -> None:
        """Delete the repeating schedule stored on ``subject`` (never a ``TASKS_SCHEDULES`` one).

        Only the schedule message itself, read back first: the newest message there must
        still be a repeating schedule (a one-shot task stored there since is left alone,
        and the next firing tries again). Its firings are dead-lettered unrun either way,
        so the schedule's body is on record.
        """
        from nats.js.errors import NotFoundError

        try:
            raw = await self._js.get_last_msg(TASKS_STREAM, subject)
            spec = (raw.headers or {}).get(HEADER_SCHEDULE, "")
            if not spec or spec.startswith("@at "):
                return
            await delete_message(self._nc, TASKS_STREAM, int(raw.seq))
        except NotFoundError:
            return  # removed already (another worker got a firing too)
        except Exception as exc:  # the next firing tries again
            log.warning("schedule.planted_not_removed", subject=subject, error=repr(exc))
            return
        log.warning("schedule.planted_removed", subject=subject, schedule=spec[:64])

    def _redact(self, error: TaskError) -> TaskError:
        """The error with its text passed through ``redact_error`` before it is stored."""
        if self._redactor is None:
            return error
        return msgspec.structs.replace(error, message=redact(self._redactor, error.message))

    def _outcome(self, ctx: Context, outcome: str, error: TaskError | None) -> None:
        notify_outcome(ctx, outcome, error)
        if not ctx.extras.get(LOG_CLAIMED) and outcome != "succeeded":
            # No log middleware wrote the line: failures are still reported, once.
            started = ctx.extras.get(_STARTED)
            elapsed = None if started is None else (time.monotonic() - started) * 1000
            emit_attempt_line(ctx, outcome, error, elapsed)


def _plain_succeeded(ctx: Context, logs: bool, start: float) -> None:
    """A plain attempt's success line (when the chain logs), then any other listener."""
    if logs:
        emit_attempt_line(ctx, "succeeded", None, (time.perf_counter() - start) * 1000.0)
    if OUTCOME_LISTENERS in ctx.extras:
        notify_outcome(ctx, "succeeded", None)


def _unproven(exc: Exception) -> TaskError:
    """The dead-letter error of a DAG step message that is not the scheduler's dispatch."""
    return TaskError(kind=ErrorKind.STEP_UNPROVEN.value, message=str(exc), retryable=False)


def _late_start(deadline: datetime) -> TaskError:
    return TaskError(
        kind=ErrorKind.DEADLINE.value,
        message=f"deadline {deadline.isoformat()} passed before the task started",
        retryable=False,
    )


def _time_limit(spec: HandlerSpec, env: TaskEnvelope) -> tuple[float | None, bool]:
    """Seconds the handler may run and whether the task's deadline (not its timeout) binds.

    The message's timeout can only shorten the one this worker registered: a producer
    with other (or stale) code must not lift the worker's limit, the kill of a process-pool
    child included.
    """
    limits = [t for t in (env.timeout, spec.timeout) if t]
    timeout = min(limits) if limits else None
    if env.deadline is None:
        return timeout, False
    remaining = (env.deadline - _now()).total_seconds()
    if timeout is None or remaining < timeout:
        return max(remaining, 0.001), True
    return timeout, False


def _timeout_error(limit: float, by_deadline: bool) -> TaskError:
    if by_deadline:
        return TaskError(
            kind=ErrorKind.DEADLINE.value,
            message="the task's deadline passed while its handler was running",
            retryable=False,
        )
    return TaskError(
        kind=ErrorKind.TIMEOUT.value,
        message=f"handler did not finish within its timeout of {limit:g}s",
        retryable=True,
    )


class _LimitExceededError(TimeoutError):
    _ebind_limit = True
    # The future of a sync handler's thread still running past its limit (None: stopped):
    # what holds a resource for that call (a concurrency slot) keeps it until it ends.
    ebind_still_running: asyncio.Future[Any] | None = None


async def _invoke(
    spec: HandlerSpec,
    args: list[Any],
    limit: float | None,
    executor: ThreadPoolExecutor,
    task_id: str,
    block_warn: float,
    on_stuck: Callable[[asyncio.Future[Any]], None] | None = None,
    procs: ProcessPool | None = None,
) -> Any:
    if procs is not None and procs.takes(spec):
        return await procs.call(spec, args, limit, task_id)  # killed past the limit
    if spec.is_async:
        run = Watched(spec.fn(*args), task_name=spec.name, task_id=task_id, limit=block_warn)
        if limit is None:
            return await run
        cm = asyncio.timeout(limit)
        try:
            async with cm:
                return await run
        except TimeoutError as exc:
            if cm.expired():
                raise _LimitExceededError() from exc
            raise
    loop = asyncio.get_running_loop()
    # copy_context() after set_current(): the thread sees current_context() and contextvars.
    fut = loop.run_in_executor(executor, contextvars.copy_context().run, spec.fn, *args)
    try:
        # shield: neither a timeout nor a cancel (a shutdown past its grace) may cancel the
        # future: it completes when the thread returns, which is what frees what it holds.
        if limit is None:
            return await asyncio.shield(fut)
        return await asyncio.wait_for(asyncio.shield(fut), limit)
    except asyncio.CancelledError as exc:
        if not fut.done():
            exc.ebind_still_running = fut  # type: ignore[attr-defined]
            # Nobody awaits its outcome any more: read it so asyncio does not report it.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise
    except TimeoutError as exc:
        if fut.done() and not fut.cancelled() and fut.exception() is not None:
            raise  # the handler itself raised TimeoutError
        log.warning(
            "worker.sync_handler_overran",
            task_name=spec.name,
            task_id=task_id,
            timeout=limit,
            note="the thread keeps running and holds a slot until it returns; a thread "
            "cannot be interrupted",
        )
        if on_stuck is not None and not fut.done():
            on_stuck(fut)
        err = _LimitExceededError()
        err.ebind_still_running = None if fut.done() else fut
        raise err from exc
