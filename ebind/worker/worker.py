"""Worker: pulls task messages, runs them with bounded concurrency, and stops gracefully.

Untargeted tasks travel in lanes, one per (queue, priority band, task name), each with its
own durable shared by every worker serving it (:mod:`ebind.queues`): a worker creates
durables only for the handlers it has, in the queues it serves, so it never receives a
task it cannot run. Each claim has its own durable (``ebind-targets-<b64(claim)>``) shared
by the workers holding it. Higher bands are pulled and started first. All
consumers of a worker draw from one concurrency budget, so no message is requested before
a slot can take it, and every message held is kept alive with in-progress acks every
third of the shortest ack_wait in force (the worker's own or a durable's, see
:mod:`ebind.worker.ackwait`) until it finishes. A durable keeps the ack_wait it was created
with: a worker started with another value never changes it for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ebind import observe
from ebind._aio import raise_if_cancelling
from ebind._denied import guarded
from ebind.errors import PermissionDenied
from ebind.expirer import Expirer
from ebind.hooks import WorkerHooks
from ebind.logging import get_logger
from ebind.pools import check_pool_settings
from ebind.queues import DEFAULT_QUEUE, LEGACY_FILTER, Lane, check_queue, lanes_for
from ebind.retry import RetryPolicy
from ebind.streams import TASKS_STREAM, WORKER_DURABLE, check_target, target_durable, target_filter
from ebind.worker import advisory
from ebind.worker.ackwait import differs, durable_ack_wait, keepalive_interval
from ebind.worker.beacon import Beacon
from ebind.worker.claims import Claims, ClaimSource
from ebind.worker.gate import RankedSlots
from ebind.worker.health import (
    DEFAULT_HEALTH_HOST,
    HealthEndpoint,
    HealthLimits,
    StallTracker,
    check_port,
    serve_health,
)
from ebind.worker.middleware import Middleware, chain
from ebind.worker.prefetch import DEFAULT_PREFETCH, SlotPace, check_prefetch, held_ahead
from ebind.worker.procpool import ProcessPool, pool_for
from ebind.worker.pull import Budget, Puller
from ebind.worker.revoked import Revocations
from ebind.worker.runner import AttemptRunner

if TYPE_CHECKING:
    from ebind.worker.hook import StepHook

__all__ = ["Worker"]

log = get_logger("ebind.worker")

DEFAULT_MAX_PAYLOAD = 1024 * 1024
TARGET_INACTIVE_THRESHOLD = 3600.0
"""A claim durable nobody pulls from for this long is removed by the server."""
SHARED_PULL_EXPIRES = 1.0
"""Longest lifetime of the shared puller's requests: while open they promise free slots, so
claim pullers wait on them for at most this long when targeted work arrives in a burst."""
RECREATE_BACKOFF = (0.2, 5.0)
"""First and largest delay between attempts to re-create a vanished consumer (seconds)."""
BLOCK_WARN = 0.5
"""Seconds an async handler may run without awaiting before ``worker.handler_blocked_loop``."""
ACK_WAIT_RECHECK = 30.0
"""Seconds between re-reads of the durables' ack_wait (an operator may edit a durable)."""


class Worker:
    """Consumes tasks for ``app``; ``await run()`` until ``await stop()`` or cancellation.

    Args:
        app: a connected ``ebind.App``.
        concurrency: handlers running at once (also the most messages held at once);
            16 by default, ``processes`` with ``pool="process"``.
        claims: extra targets to execute, or a (sync/async) callable re-read every
            ``claims_refresh`` seconds. The worker always claims its ``worker_id`` and
            ``worker:<worker_id>``.
        worker_id: identity; a random one when None.
        middleware: wrapped around every handler, first = outermost.
        scheduler: run the workflow scheduler (and its context middleware) in this worker.
        ack_wait: seconds the server waits for an ack before redelivering, on durables this
            worker creates; an existing durable keeps its own, and the worker keeps its
            messages alive for the shorter of the two.
        shutdown_grace: seconds ``stop()`` lets running handlers finish.
        default_retry: policy for tasks whose envelope and handler name none.
        hook: StepHook for DAG steps; defaults to the app's workflow hook when available.
        pull_expires: lifetime of each pull request (short, so a lost one costs little).
        claims_refresh: seconds between reads of a callable ``claims``.
        health_port: serve ``/livez`` and ``/readyz`` on this port while running (0: any
            free port, see ``health.port``); None serves nothing.
        health_host: address the health endpoints bind (loopback by default).
        health_limits: stall and liveness thresholds of those endpoints.
        pool: "thread" runs sync handlers in a thread pool, "process" in child processes
            (killed past their timeout); ``@app.task(pool=...)`` overrides it per task.
        processes: child processes (one per CPU by default).
        max_tasks_per_child: calls after which a child is replaced (None: never).
        app_path: ``pkg.module:app`` the children import; needed once any handler runs
            in a child (``ebind worker -A`` passes its own).
        queues: queues to take tasks from (every handler of the app, in each of them);
            None serves the default queue plus every queue a handler names.
        prefetch: deliveries held per slot at most (4 by default); short tasks are held
            ahead of free slots, up to what the slots start within about 10 ms, and a
            finished task waiting for its result to be stored no longer takes a slot.
            1 holds only what runs.
    """

    def __init__(
        self,
        app: Any,
        *,
        concurrency: int | None = None,
        claims: ClaimSource = (),
        worker_id: str | None = None,
        middleware: Sequence[Middleware] = (),
        scheduler: bool = True,
        ack_wait: float = 30.0,
        shutdown_grace: float = 30.0,
        default_retry: RetryPolicy | None = None,
        hook: StepHook | None = None,
        pull_expires: float = 5.0,
        claims_refresh: float = 2.0,
        health_port: int | None = None,
        health_host: str = DEFAULT_HEALTH_HOST,
        health_limits: HealthLimits | None = None,
        pool: str = "thread",
        processes: int | None = None,
        max_tasks_per_child: int | None = None,
        app_path: str | None = None,
        queues: Sequence[str] | None = None,
        prefetch: int = DEFAULT_PREFETCH,
    ) -> None:
        self.queues: tuple[str, ...] | None = (
            tuple(dict.fromkeys(check_queue(q) for q in queues)) if queues else None
        )
        """Queues given to serve (None: the default queue and those the handlers name)."""
        self.pool_settings = check_pool_settings(
            pool, processes, max_tasks_per_child, cpu_count=os.cpu_count()
        )
        """Where sync handlers run (checked options)."""
        self.app_path = app_path
        self.procpool: ProcessPool | None = None
        """The running process pool, when any handler runs in a child."""
        if pool == "process" and not app_path:
            raise ValueError(
                "pool='process' needs app_path='pkg.module:app': each child process imports "
                "the App itself (ebind worker -A passes its own)"
            )
        if concurrency is None:
            concurrency = self.pool_settings.processes if pool == "process" else 16
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if ack_wait <= 0 or shutdown_grace < 0:
            raise ValueError("ack_wait must be > 0 and shutdown_grace >= 0 (seconds)")
        self.app = app
        self.worker_id = check_target(worker_id) if worker_id else uuid.uuid4().hex
        self.concurrency = concurrency
        self.prefetch = check_prefetch(prefetch)
        """Deliveries held per slot at most (1: only what runs)."""
        self.ack_wait = float(ack_wait)
        self.shutdown_grace = float(shutdown_grace)
        self.scheduler = scheduler
        self.default_retry = default_retry or RetryPolicy()
        self.pull_expires = min(pull_expires, max(self.ack_wait, 1.0))
        self.claims_refresh = claims_refresh
        self._claims = Claims(claims, self.worker_id)
        # App-level middleware (app.middleware) runs inside the middleware given here.
        self._middleware = [*middleware, *getattr(app, "middleware", ())]
        self._hook = hook
        # id(message) -> (message, monotonic arrival); nats-py's Msg is an unhashable dataclass
        self._held: dict[int, tuple[Any, float]] = {}
        self._slot_since: dict[int, float] = {}  # id(message) -> monotonic time its slot was taken
        # id(message) of finished tasks whose response is being stored: their slot is given
        # back early (a slot is for running handlers); they stay in the intake until acked.
        self._answering: set[int] = set()
        self._pace = SlotPace()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pullers: dict[str, Puller] = {}  # claim -> puller
        self._lanes: dict[str, Puller] = {}  # lane durable -> puller
        self._recovering: dict[str, asyncio.Task[None]] = {}  # durable -> re-create task
        self._durable_ack_wait: dict[str, float] = {}  # durable -> ack_wait on the server
        self._stopping = False
        self._stop_requested: asyncio.Event | None = None
        self._running = False
        self._ready = asyncio.Event()
        self._runner: AttemptRunner | None = None
        self._budget: Budget | None = None
        self._stuck = 0
        self._watcher: advisory.MaxDeliveriesWatcher | None = None
        self.health_port = None if health_port is None else check_port(health_port)
        self.health_host = health_host
        self.health_limits = health_limits or HealthLimits()
        self.loop_stalls = StallTracker(self.health_limits.stall_window)
        """Event-loop stalls measured by the keepalive loop and the health probe."""
        self.health: HealthEndpoint | None = None
        """The running health endpoint (with ``health_port``), else None."""

    @property
    def stuck_threads(self) -> int:
        """Sync handlers still running past their timeout; each holds a slot until it returns."""
        return self._stuck

    def _thread_stuck(self, fut: asyncio.Future[Any]) -> None:
        # The thread is busy whatever the task's outcome says: taking its slot out of the
        # budget keeps the worker from pulling tasks that would wait for a thread and then
        # "time out" without ever starting.
        budget = self._budget
        if budget is None:
            return
        self._stuck += 1
        budget.held += 1
        slots = self._slots
        slots.take()  # held messages must not start while no thread can run them
        log.error(
            "worker.threads_stuck",
            worker_id=self.worker_id,
            stuck=self._stuck,
            concurrency=self.concurrency,
            note="sync handlers past their timeout keep their threads; give such tasks a "
            "shorter blocking call or a separate worker process",
        )

        def returned(_: asyncio.Future[Any]) -> None:
            self._stuck -= 1
            slots.release()
            budget.release()
            log.info("worker.stuck_thread_returned", worker_id=self.worker_id, stuck=self._stuck)

        fut.add_done_callback(returned)

    @property
    def keepalive_interval(self) -> float:
        """Seconds between in-progress acks: a third of the shortest ack_wait in force."""
        return keepalive_interval(self.ack_wait, self._durable_ack_wait.values())

    @property
    def is_running(self) -> bool:
        """``run()`` is active (it may be stopping)."""
        return self._running

    @property
    def is_stopping(self) -> bool:
        """A stop was requested or is under way."""
        return self._stopping

    @property
    def is_consuming(self) -> bool:
        """Setup finished: the consumers exist and tasks are being pulled."""
        return self._ready.is_set()

    @property
    def unavailable_consumers(self) -> tuple[str, ...]:
        """Durables being re-created, or whose server answers "no responders"."""
        recovering = {d for d, t in self._recovering.items() if not t.done()}
        backing_off = {p.durable for p in self._all_pullers() if p.unavailable}
        return tuple(sorted(recovering | backing_off))

    def _gauges(self) -> dict[str, float]:
        return {observe.GAUGE_STUCK_THREADS: float(self._stuck)}

    @property
    def claims(self) -> frozenset[str]:
        """The claims currently consumed."""
        return frozenset(c for c in self._pullers if c != "")

    @property
    def served_queues(self) -> tuple[str, ...]:
        """The queues this worker takes tasks from."""
        if self.queues is not None:
            return self.queues
        named = {getattr(s, "queue", "") or DEFAULT_QUEUE for s in _specs(self.app)}
        return tuple(sorted(named | {DEFAULT_QUEUE}))

    @property
    def lanes(self) -> tuple[Lane, ...]:
        """Every lane (queue, band, task name) this worker pulls from, highest band first."""
        return tuple(lanes_for(_names(self.app), self.served_queues))

    @property
    def in_flight(self) -> int:
        """Handlers running now."""
        slots = getattr(self, "_slots", None)
        waiting = slots.waiting if slots is not None else 0
        return len(self._held) - waiting - len(self._answering)

    @property
    def is_leader(self) -> bool:
        """Whether this worker runs the workflow scheduler and holds its leadership."""
        if not (self.scheduler and self._running):
            return False
        wf = _workflow(self.app)
        elector = getattr(wf, "elector", None)
        return bool(elector is not None and elector.is_leader())

    @property
    def queued(self) -> int:
        """Deliveries held for a free slot (held ahead, see ``prefetch``)."""
        slots = getattr(self, "_slots", None)
        return slots.waiting if slots is not None else 0

    @property
    def held_count(self) -> int:
        """Messages received and not yet finished (running or waiting for a slot)."""
        return len(self._held)

    def _all_pullers(self) -> list[Puller]:
        return [*self._pullers.values(), *self._lanes.values()]

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Consume until :meth:`stop` (graceful) or cancellation (in-flight work nak'd)."""
        if self._running:
            raise RuntimeError("this Worker is already running")
        self._running = True
        # Kept for the task started per delivery (asking for the running loop is a getpid
        # system call on Python 3.11).
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        background: list[asyncio.Task[Any]] = []
        started_hooks: WorkerHooks | None = None
        executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="ebind-task")
        drop_gauges = observe.add_gauge_source(self._gauges)
        try:
            if self.health_port is not None:
                # Before setup, so probes answer (not ready) while consumers are created.
                self.health = await serve_health(
                    self, port=self.health_port, host=self.health_host, limits=self.health_limits
                )
            self.procpool = await pool_for(self.app, self.pool_settings, self.app_path)
            hooks = getattr(self.app, "worker_hooks", None)  # @app.on_worker_startup/_shutdown
            if hooks is not None:
                await hooks.run_startup(self)
                started_hooks = hooks
            await self._setup(executor)
            background.append(asyncio.create_task(self._keepalive(), name="ebind-keepalive"))
            beacon = Beacon(self)
            # The first record before "ready", so `ebind worker ls` lists a ready worker.
            await beacon.write()
            background.append(asyncio.create_task(beacon.run(), name="ebind-beacon"))
            # Always: besides re-reading dynamic claims it re-creates claim consumers whose
            # creation failed (e.g. during a cluster leader election).
            background.append(asyncio.create_task(self._claims_loop(), name="ebind-claims"))
            sched = self._scheduler_coro()
            if sched is not None:
                background.append(asyncio.create_task(sched, name="ebind-scheduler"))
            if self.scheduler:  # tasks nobody takes are expired by one scheduler worker
                background.append(
                    asyncio.create_task(Expirer(self.app).run(), name="ebind-expirer")
                )
            self._ready.set()
            log.info(
                "worker.ready",
                worker_id=self.worker_id,
                concurrency=self.concurrency,
                claims=sorted(self.claims),
                ack_wait=self.ack_wait,
                scheduler=sched is not None,
            )
            await self._stop_requested.wait()
            await self._shutdown(self.shutdown_grace, background)
        except asyncio.CancelledError:
            # Cancelled: no grace, but still hand every held message back promptly.
            await asyncio.shield(self._shutdown(0.0, background))
            raise
        finally:
            if started_hooks is not None:
                await started_hooks.run_shutdown(self)
            drop_gauges()
            if self.health is not None:
                await self.health.close()
                self.health = None
            executor.shutdown(wait=False, cancel_futures=True)
            if self.procpool is not None:  # after the handlers: kills and reaps the children
                self.procpool.close()
            self._running = False
            self._ready.clear()
            log.info("worker.stopped", worker_id=self.worker_id)

    async def wait_ready(self) -> None:
        """Return once the worker's consumers exist and it is taking tasks."""
        await self._ready.wait()

    async def stop(self) -> None:
        """Stop fetching, let running handlers finish within ``shutdown_grace``, then return."""
        self.request_stop()

    def request_stop(self) -> None:
        """Synchronous :meth:`stop` for signal handlers."""
        self._stopping = True
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def _setup(self, executor: ThreadPoolExecutor) -> None:
        app = self.app
        hook = self._hook
        middleware = list(self._middleware)
        wf = _workflow(app)
        if wf is not None:
            if hook is None:
                hook = wf.hook()
            if self.scheduler:
                middleware.insert(0, wf.context_middleware())
        self._hook = hook
        bound = getattr(hook, "set_concurrency", None)
        if callable(bound):  # its liveness record never lists more than this worker can run
            bound(self.worker_id, self.concurrency)
        runner = AttemptRunner(
            app,
            worker_id=self.worker_id,
            chain=_placeholder,
            hook=hook,
            default_policy=self.default_retry,
            executor=executor,
            max_payload=int(getattr(app, "max_payload", 0) or DEFAULT_MAX_PAYLOAD),
            # Report a handler holding the loop well before keepalives (ack_wait/3) suffer.
            block_warn=min(BLOCK_WARN, self.ack_wait / 3),
        )
        runner.chain = chain(middleware, runner.base_handler())
        self._runner = runner
        self._budget = Budget(self.concurrency)
        if self.prefetch > 1:
            runner.on_answering = self._answering_started
        runner.on_stuck = self._thread_stuck
        runner.procpool = self.procpool
        # Before any consumer: a revocation written from now on is in the local set (until
        # the stored ones are listed below, every task is checked against the bucket).
        runner.revocations = Revocations(app.nc)
        await runner.revocations.subscribe()
        if any(app.registry.get(n).rate_limit for n in app.registry.primary_names()):
            from ebind.worker.admission import RateAdmission

            runner.admission = RateAdmission(
                app, worker_id=self.worker_id, concurrency=self.concurrency
            )
        registry = app.registry
        if any(getattr(registry.get(n), "concurrency", None) for n in registry.names()):
            from ebind.limits.concurrency import ConcurrencyGate

            runner.concurrency = ConcurrencyGate(app, self.worker_id, self.concurrency)
        self._slots = RankedSlots(self.concurrency)
        # Max-deliveries advisories become dead letters (the finite max_deliver backstop).
        self._watcher = advisory.MaxDeliveriesWatcher(app, runner.answer_failed)
        await self._watcher.start()
        await self._retire_legacy_durable()
        for lane in self.lanes:
            await self._consume_retrying("", lane.durable, lane.subject, lane=lane)
        if runner.concurrency is not None:
            # after the durables, so a user who may not run workers is refused there first; a
            # notice in the moment between is missed and its newer task waits for the run
            await runner.concurrency.start()
        await self._claims.refresh(strict=True)
        await self._sync_claims()
        await runner.revocations.load(app.js)

    def _scheduler_coro(self) -> Any:
        if not self.scheduler:
            return None
        wf = _workflow(self.app)
        if wf is None:
            log.warning(
                "worker.scheduler_unavailable",
                reason="ebind.workflow does not provide run_scheduler yet; running tasks only",
            )
            return None
        return wf.run_scheduler()

    # ------------------------------------------------------------------ consumers
    def _consumer_config(self, claim: str, durable: str, filter_subject: str) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig

        return ConsumerConfig(
            durable_name=durable,
            name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            # A finite backstop (read at call time so tests can lower it); existing durables
            # get it too, the server lets max_deliver change on update.
            max_deliver=advisory.TASK_MAX_DELIVER,
            filter_subject=filter_subject,
            inactive_threshold=TARGET_INACTIVE_THRESHOLD if claim else None,
        )

    async def _existing_ack_wait(self, durable: str) -> float | None:
        """The ack_wait ``durable`` has on the server, or None when it does not exist."""
        from nats.js.errors import NotFoundError

        try:
            info = await guarded(
                self.app.js,
                f"$JS.API.CONSUMER.INFO.{TASKS_STREAM}.{durable}",
                self.app.js.consumer_info(TASKS_STREAM, durable),
                f"read the durable consumer {durable}",
            )
        except NotFoundError:
            return None
        except PermissionDenied:
            # Not allowed to read it: the create below says what this user lacks.
            return None
        return float(info.config.ack_wait or 0.0) or None

    def _note_ack_wait(self, durable: str, actual: float) -> None:
        """Record ``durable``'s ack_wait; log once when it is not this worker's own."""
        before = self._durable_ack_wait.get(durable)
        self._durable_ack_wait[durable] = actual
        if differs(self.ack_wait, actual) and (before is None or differs(before, actual)):
            log.warning(
                "worker.ack_wait_differs",
                worker_id=self.worker_id,
                durable=durable,
                own_ack_wait=self.ack_wait,
                durable_ack_wait=actual,
                keepalive_interval=self.keepalive_interval,
                note="the durable keeps the ack_wait it was created with, shared by every "
                "worker; this worker sends in-progress acks for the shorter of the two",
            )

    async def _retire_legacy_durable(self) -> None:
        """Delete the shared ``TASKS.>`` durable of older releases: it overlaps every lane.

        The server refuses consumers of a work-queue stream whose filters overlap, so no
        lane could be created beside it. Messages it delivered and nobody acked stay in
        the stream and reach the lanes; its own workers (older releases) stop receiving
        untargeted tasks, which is why every worker is upgraded together.
        """
        from nats.js.errors import NotFoundError

        js = self.app.js
        try:
            info = await guarded(
                js,
                f"$JS.API.CONSUMER.INFO.{TASKS_STREAM}.{WORKER_DURABLE}",
                js.consumer_info(TASKS_STREAM, WORKER_DURABLE),
                f"read the durable consumer {WORKER_DURABLE}",
            )
        except NotFoundError:
            return
        except Exception as exc:  # no right to read it: creating the lanes says more
            log.info("worker.legacy_durable_unread", durable=WORKER_DURABLE, error=repr(exc))
            return
        if (info.config.filter_subject or "") != LEGACY_FILTER:
            return  # someone else's consumer that happens to share the name
        try:
            await guarded(
                js,
                f"$JS.API.CONSUMER.DELETE.{TASKS_STREAM}.{WORKER_DURABLE}",
                js.delete_consumer(TASKS_STREAM, WORKER_DURABLE),
                f"remove the shared durable {WORKER_DURABLE} of an older release",
            )
        except PermissionDenied as exc:
            raise PermissionDenied(
                f"the shared durable {WORKER_DURABLE} of an older ebind release overlaps the "
                "per-task consumers this worker needs, and this NATS user may not remove it; "
                f"an operator removes it once (`nats consumer rm {TASKS_STREAM} "
                f"{WORKER_DURABLE}`, or start one worker with operator rights)",
                subject=exc.subject,
                action=exc.action,
            ) from None
        log.warning(
            "worker.legacy_durable_removed",
            worker_id=self.worker_id,
            durable=WORKER_DURABLE,
            pending=int(info.num_pending or 0),
            unacked=int(info.num_ack_pending or 0),
            note="the shared durable of older releases overlaps the per-task lanes; its "
            "queued messages now reach the lanes, and workers of older releases still "
            "running receive no untargeted tasks until they are upgraded",
        )

    async def _consume(
        self, claim: str, durable: str, filter_subject: str, *, lane: Lane | None = None
    ) -> None:
        config = self._consumer_config(claim, durable, filter_subject)
        # An existing durable keeps its ack_wait: the other workers on it count on it.
        config.ack_wait = durable_ack_wait(await self._existing_ack_wait(durable), self.ack_wait)
        info = await guarded(
            self.app.js,
            (
                f"$JS.API.CONSUMER.CREATE.{TASKS_STREAM}.{durable}",
                f"$JS.API.CONSUMER.DURABLE.CREATE.{TASKS_STREAM}.{durable}",
            ),
            self.app.js.add_consumer(TASKS_STREAM, config=config),
            f"create or update the durable consumer {durable}",
        )
        actual = getattr(getattr(info, "config", None), "ack_wait", None)
        self._note_ack_wait(durable, float(actual or config.ack_wait))
        assert self._budget is not None
        if lane is not None:
            # What already waits in the lane, so the highest band is served from the start.
            pending = int(getattr(info, "num_pending", 0) or 0)
            if pending > 0:
                self._budget.reserved[durable] = min(pending, self.concurrency)
        puller = Puller(
            self.app.nc,
            stream=TASKS_STREAM,
            durable=durable,
            budget=self._budget,
            on_msg=self._received,
            # Claim requests promise at most one slot each, so they may live long; counted
            # lane requests promise free slots, so they are kept short (see the constant),
            # while a lane's idle probe promises none and lives as long as a claim's.
            expires=self.pull_expires if claim else min(self.pull_expires, SHARED_PULL_EXPIRES),
            min_one=bool(claim),
            on_gone=lambda p: self._consumer_gone(p, config),
            rank=lane.rank if lane is not None else None,
            # Shorter than ack_wait: a worker frozen right after taking a message (a pause,
            # a long GC) must not hold a probe that takes that message's redelivery too.
            idle_expires=min(self.pull_expires, max(self.ack_wait / 2, 0.5)),
        )
        await puller.start()
        if lane is not None:
            self._lanes[durable] = puller
        else:
            self._pullers[claim] = puller

    def _consumer_gone(self, puller: Puller, config: Any) -> None:
        """The server says ``puller``'s consumer is gone or unreachable: check, re-create."""
        durable = puller.durable
        running = self._recovering.get(durable)
        if self._stopping or (running is not None and not running.done()):
            return
        task = asyncio.create_task(self._recreate(puller, config), name=f"ebind-recreate-{durable}")
        self._recovering[durable] = task

    async def _recreate(self, puller: Puller, config: Any) -> None:
        """Re-create a deleted consumer (deleted by hand, or its stream recreated).

        Repeated "no responders" also land here; then the consumer still exists (its
        stream elects a leader) and the puller just keeps backing off. A missing stream is
        not re-created here (that would hide lost state): the worker logs loudly and keeps retrying.
        """
        from nats.js.errors import NotFoundError

        durable = config.durable_name
        delay, cap = RECREATE_BACKOFF
        # Stop once the puller is dropped (its claim went away) or the worker stops.
        while not self._stopping and puller in self._all_pullers():
            try:
                try:
                    await self.app.js.consumer_info(TASKS_STREAM, durable)
                    return  # it exists: a leader election, the puller's backoff handles it
                except NotFoundError:
                    pass
                await self.app.js.add_consumer(TASKS_STREAM, config=config)
                log.warning(
                    "worker.consumer_recreated",
                    worker_id=self.worker_id,
                    durable=durable,
                    reason="the consumer was deleted while the worker ran",
                )
                puller.revived()
                return
            except Exception as exc:
                log.error(
                    "worker.consumer_recreate_failed",
                    worker_id=self.worker_id,
                    durable=durable,
                    stream=TASKS_STREAM,
                    error=repr(exc),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, cap)

    async def _consume_retrying(
        self, claim: str, durable: str, filter_subject: str, *, lane: Lane | None = None
    ) -> None:
        """:meth:`_consume`, retried with backoff while the server cannot answer.

        A worker started while a node is down or a stream elects its leader must wait for
        the cluster rather than die.
        """
        delay, cap = RECREATE_BACKOFF
        while True:
            try:
                await self._consume(claim, durable, filter_subject, lane=lane)
                return
            except PermissionDenied:
                raise  # waiting cannot help: the user lacks the right
            except Exception as exc:
                if self._stopping:
                    raise
                log.warning(
                    "worker.consumer_setup_retrying",
                    worker_id=self.worker_id,
                    durable=durable,
                    error=repr(exc),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, cap)

    async def _sync_claims(self) -> None:
        wanted = self._claims.current
        for claim in sorted(wanted - self._pullers.keys()):
            try:
                await self._consume(claim, target_durable(claim), target_filter(claim))
            except Exception:
                log.exception("worker.claim_consume_failed", worker_id=self.worker_id, claim=claim)
        for claim in sorted(set(self._pullers) - wanted - {""}):
            puller = self._pullers.pop(claim)
            self._durable_ack_wait.pop(puller.durable, None)
            await puller.stop()
            log.info("worker.claim_dropped", worker_id=self.worker_id, claim=claim)

    async def _recheck_ack_wait(self) -> None:
        """Re-read every held durable's ack_wait (an operator or an older worker may change it)."""
        for puller in self._all_pullers():
            try:
                actual = await self._existing_ack_wait(puller.durable)
            except Exception as exc:
                log.info("worker.ack_wait_read_failed", durable=puller.durable, error=repr(exc))
                continue
            if actual is not None:
                self._note_ack_wait(puller.durable, actual)

    async def _claims_loop(self) -> None:
        next_recheck = time.monotonic() + ACK_WAIT_RECHECK
        while not self._stopping:
            await asyncio.sleep(self.claims_refresh)
            if self._stopping:
                return
            if self._claims.dynamic:
                await self._claims.refresh()
            await self._sync_claims()
            if time.monotonic() >= next_recheck:
                next_recheck = time.monotonic() + ACK_WAIT_RECHECK
                await self._recheck_ack_wait()
            raise_if_cancelling()  # nats-py may swallow the stop's cancel (Python 3.11)

    # ------------------------------------------------------------------ messages
    def _received(self, msg: Any, puller: Puller) -> None:
        if self._stopping:
            # Arrived after stop began: hand it straight back for another worker.
            puller.finished(started=False)
            self._nak_now(msg)
            return
        assert self._budget is not None and self._runner is not None
        self._budget.held += 1
        self._held[id(msg)] = (msg, time.monotonic())
        if self._slots.try_acquire():
            # The common case, a free slot: the task runs the delivery itself and a done
            # callback does what _run_one's finally does (one coroutine fewer per task).
            self._slot_since[id(msg)] = time.monotonic()
            puller.started()
            task = self._loop.create_task(self._runner.process(msg))
            task.add_done_callback(functools.partial(self._ran, msg, puller))
        else:
            task = self._loop.create_task(self._run_one(msg, puller))
            task.add_done_callback(self._tasks.discard)
        self._tasks.add(task)

    def _ran(self, msg: Any, puller: Puller, task: asyncio.Task[None]) -> None:
        """A delivery that started at once is done: :meth:`_run_one`'s ending, as a callback."""
        self._tasks.discard(task)
        answered = id(msg) in self._answering
        if not answered:
            self._free_slot(msg)
        if not task.cancelled():  # cancelled: shutdown past its grace nak'd it first
            exc = task.exception()
            if exc is not None:
                log.error(
                    "worker.delivery_crashed",
                    worker_id=self.worker_id,
                    subject=msg.subject,
                    exc_info=exc,
                )
                self._nak_now(msg, 1.0)
        self._held.pop(id(msg), None)
        if answered:
            self._answering.discard(id(msg))
        assert self._budget is not None
        self._budget.release()
        puller.finished(started=True)

    async def _run_one(self, msg: Any, puller: Puller) -> None:
        assert self._runner is not None and self._budget is not None
        started = False
        try:
            await self._slots.acquire(puller.rank)
            started = True
            self._slot_since[id(msg)] = time.monotonic()
            puller.started()
            try:
                await self._runner.process(msg)
            finally:
                if id(msg) not in self._answering:
                    self._free_slot(msg)
        except asyncio.CancelledError:
            pass  # shutdown past its grace: the message was nak'd before cancelling
        except Exception:
            log.exception("worker.delivery_crashed", worker_id=self.worker_id, subject=msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
        finally:
            self._held.pop(id(msg), None)
            self._answering.discard(id(msg))
            self._budget.release()
            puller.finished(started=started)

    def _free_slot(self, msg: Any) -> None:
        """Give the slot of ``msg`` back, and hold as many deliveries ahead as its pace allows."""
        self._slots.release()
        since = self._slot_since.pop(id(msg), None)
        if since is None or self.prefetch == 1:
            return
        pace = self._pace.record(time.monotonic() - since)
        budget = self._budget
        if budget is not None:
            ahead = held_ahead(self.concurrency, pace, self.prefetch)
            if ahead != budget.ahead:
                budget.hold_ahead(ahead)

    def _answering_started(self, msg: Any) -> None:
        """The task of ``msg`` finished and only storing its response and the ack remain.

        Its slot goes to a held delivery at once, so a worker waiting on the server's
        confirmations keeps running tasks meanwhile. The delivery stays in the intake until
        it is acked: what a worker holds (running, waiting or being answered) stays within
        ``prefetch`` per slot, also while responses are slow to store.
        """
        key = id(msg)
        if key in self._answering or key not in self._slot_since:
            return
        self._answering.add(key)
        self._free_slot(msg)

    def _nak_now(self, msg: Any, delay: float | None = None) -> None:
        async def nak() -> None:
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)

        task = asyncio.create_task(nak())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keepalive(self) -> None:
        """In-progress acks every third of the shortest ack_wait in force; reports loop stalls."""
        interval = self.keepalive_interval
        next_tick = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            interval = self.keepalive_interval  # a durable's ack_wait may have been re-read
            now = time.monotonic()
            late = now - next_tick
            self.loop_stalls.record(late, now)
            if late > interval:
                # Something blocked the event loop (a sync call inside an async handler, or
                # a GIL-holding C call); keepalives were late and messages may be redelivered.
                log.warning(
                    "worker.loop_stalled",
                    worker_id=self.worker_id,
                    stalled_ms=round(late * 1000),
                    held=len(self._held),
                )
            next_tick = now + interval
            for msg, since in list(self._held.values()):
                if now - since >= interval / 2:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    # ------------------------------------------------------------------ shutdown
    async def _stop_revocations(self) -> None:
        revocations = getattr(self._runner, "revocations", None)
        if revocations is not None:
            await revocations.stop()
        gate = getattr(self._runner, "concurrency", None)
        if gate is not None:
            await gate.stop()

    async def _stop_intake(self, background: list[asyncio.Task[Any]]) -> None:
        """No more deliveries; background work but the keepalive ends (held ones still run)."""
        for puller in self._all_pullers():
            await puller.stop()
        for task in background:
            if task.get_name() != "ebind-keepalive":
                task.cancel()

    async def _shutdown(self, grace: float, background: list[asyncio.Task[Any]]) -> None:
        self._stopping = True
        await self._stop_revocations()
        for task in self._recovering.values():
            task.cancel()
        await self._stop_intake(background)
        pending = {t for t in self._tasks if not t.done()}
        if pending and grace > 0:
            log.info(
                "worker.draining", worker_id=self.worker_id, in_flight=len(pending), grace=grace
            )
            _, pending = await asyncio.wait(pending, timeout=grace)
        if pending:
            unfinished = [m for m, _ in self._held.values()]
            log.warning(
                "worker.shutdown_abandoned",
                worker_id=self.worker_id,
                unfinished=len(unfinished),
                grace=grace,
            )
            # Nak first (no delay) so the messages are redelivered promptly elsewhere, then
            # cancel the handlers: their late ack/respond must not race the redelivery.
            for msg in unfinished:
                with contextlib.suppress(Exception):
                    await msg.nak()
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(BaseException):
                await task
        if self._watcher is not None:
            await self._watcher.stop()
        await Beacon(self).remove()
        with contextlib.suppress(Exception):
            await self.app.nc.flush(timeout=2)


async def _placeholder(ctx: Any, env: Any) -> bytes:  # replaced in _setup
    raise RuntimeError("worker chain not built")


def _specs(app: Any) -> list[Any]:
    """The app's handler specs (each once)."""
    registry = getattr(app, "registry", None)
    if registry is None:
        return []
    found = {id(s): s for s in (registry.get(n) for n in registry.names()) if s is not None}
    return list(found.values())


def _names(app: Any) -> list[str]:
    """Every task name (aliases too) the app has a handler for."""
    registry = getattr(app, "registry", None)
    return list(registry.names()) if registry is not None else []


def _workflow(app: Any) -> Any:
    """``app.workflow`` when the workflow engine provides the worker seams, else None."""
    try:
        wf = app.workflow
    except (AttributeError, ImportError, NotImplementedError):
        return None
    if wf is None or not all(
        callable(getattr(wf, n, None)) for n in ("hook", "context_middleware", "run_scheduler")
    ):
        return None
    return wf
