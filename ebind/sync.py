"""The blocking API: enqueue, wait and drive workflows from Django, Flask, scripts, sync handlers.

``task.sync.delay(1, 2)`` returns a :class:`SyncResult` whose ``get(timeout=)`` blocks for the
value, the way Celery's ``add.delay(1, 2).get()`` does; ``app.sync`` offers the App-level calls
(enqueue by name, results of earlier tasks, DAG submit / result / signal).

Every call runs the async API on an event loop and waits for it from the calling thread:

- the App's own loop when it is connected on a loop running in another thread (a sync
  handler in a worker's thread pool, a sync endpoint of an async web app), so the worker's
  connection serves it and its loop never blocks;
- otherwise one background loop per process (a daemon thread started on first use, closed at
  interpreter exit), on which the App connects once and stays connected. Many threads share
  that one connection; nothing connects per call.

After ``fork`` (gunicorn or uWSGI prefork) the child drops the parent's loop and connection
without touching them (the parent keeps using the socket) and connects afresh on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import enum
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ebind.errors import EbindError, NotConnected, TaskTimeout
from ebind.future import check_timeout
from ebind.logging import get_logger
from ebind.task import DEFAULT_OPTIONS, TaskOptions

if TYPE_CHECKING:
    from ebind.app import App
    from ebind.future import Future
    from ebind.retry import RetryPolicy
    from ebind.task import Task
    from ebind.workflow.dag import DAG, Step
    from ebind.workflow.types import DAGMeta

__all__ = [
    "Route",
    "SyncApp",
    "SyncCallInEventLoop",
    "SyncResult",
    "SyncTask",
    "abandon",
    "route",
    "runs_blocking_api",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
log = get_logger("ebind.sync")

# Bounds the goodbye at interpreter exit: a server that is gone must not hold the exit up.
_CLOSE_TIMEOUT = 5.0
# A waiting thread looks this often whether the loop serving its call still runs: a loop
# stopped mid-call would otherwise leave it blocked for good.
_LOOP_CHECK = 1.0
# How long past its own timeout a call may take before its loop counts as blocked.
_LOOP_GRACE = 5.0


class SyncCallInEventLoop(EbindError, RuntimeError):
    """A blocking call was made from a thread running an event loop (it would stall that loop)."""


class _Runtime:
    """The process's background event loop and the Apps it connected (reset after fork)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.apps: list[App] = []
        self.pid = os.getpid()

    def ensure_loop(self) -> asyncio.AbstractEventLoop:
        loop = self.loop
        if loop is not None:
            return loop
        with self.lock:
            if self.loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=_serve, args=(loop, ready), name="ebind-sync", daemon=True
                )
                thread.start()
                ready.wait()
                self.loop, self.thread = loop, thread
                log.debug("sync.loop_started", pid=self.pid)
            return self.loop

    def connect(self, app: App) -> asyncio.AbstractEventLoop:
        loop = self.ensure_loop()
        with self.lock:  # many threads' first calls: one connect
            if app._nc is None:
                asyncio.run_coroutine_threadsafe(app.connect(), loop).result()
                if app not in self.apps:
                    self.apps.append(app)
        return loop

    def close(self) -> None:
        """Close the Apps this runtime connected and stop its loop (at interpreter exit)."""
        loop, thread = self.loop, self.thread
        if loop is None or thread is None or self.pid != os.getpid():
            return
        for app in self.apps:
            if app._loop is not loop:
                continue  # reconnected elsewhere meanwhile: not ours to close
            cf = asyncio.run_coroutine_threadsafe(app.close(), loop)
            try:
                cf.result(_CLOSE_TIMEOUT)
            except Exception as exc:  # exiting anyway
                cf.cancel()
                log.debug("sync.close_failed", app=app.name, error=repr(exc))
        self.apps.clear()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CLOSE_TIMEOUT)
        if not thread.is_alive():
            loop.close()
        self.loop = self.thread = None


def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


_runtime = _Runtime()
# What a forked child inherited and must never close or collect: closing a transport
# unregisters its socket from the epoll instance the parent shares, which would break the
# parent's connection.
_abandoned: list[object] = []


def _after_fork_in_child() -> None:
    global _runtime
    old = _runtime
    for app in old.apps:
        abandon(app)
    _abandoned.append((old.loop, old.thread))
    _runtime = _Runtime()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(lambda: _runtime.close())


def abandon(app: App) -> None:
    """Drop ``app``'s connection unclosed and keep it from the collector (a fork's copy)."""
    _abandoned.append(app._forget_connection())


def runs_blocking_api(loop: asyncio.AbstractEventLoop) -> bool:
    """True when ``loop`` is this process's background loop of the blocking API."""
    return loop is _runtime.loop


class Route(enum.Enum):
    """Where a blocking call runs, decided by :func:`route`."""

    APP_LOOP = "app_loop"
    """On the loop the App connected on, running in another thread (a worker's loop)."""
    BACKGROUND = "background"
    """On the process's background loop, connecting the App there first if needed."""
    IN_LOOP = "in_loop"
    """Refused: this thread runs an event loop, which the wait would stall."""
    STOPPED_LOOP = "stopped_loop"
    """Refused: the App is connected on a loop that no longer runs."""


def route(
    *,
    connected: bool,
    app_loop_running: bool,
    app_loop_is_current: bool,
    thread_has_loop: bool,
) -> Route:
    """Decide where a blocking call on an App runs (``connected`` in this very process)."""
    if connected:
        if app_loop_is_current:
            return Route.IN_LOOP
        return Route.APP_LOOP if app_loop_running else Route.STOPPED_LOOP
    return Route.IN_LOOP if thread_has_loop else Route.BACKGROUND


def _loop_for(app: App) -> asyncio.AbstractEventLoop:
    """The loop to run ``app``'s calls on, connecting it on the background loop when needed."""
    running = _thread_loop()
    if app._nc is not None and app._connected_pid != os.getpid():
        # Connected by the parent before a fork: that connection is the parent's.
        abandon(app)
    loop = app._loop
    connected = app._nc is not None and loop is not None
    decision = route(
        connected=connected,
        app_loop_running=loop is not None and loop.is_running(),
        app_loop_is_current=connected and loop is running,
        thread_has_loop=running is not None,
    )
    if decision is Route.APP_LOOP and loop is not None:
        return loop
    if decision is Route.BACKGROUND:
        return _runtime.connect(app)
    if decision is Route.STOPPED_LOOP:
        raise NotConnected(
            f"App {app.name!r} is connected on an event loop that is not running; close it "
            "there (`await app.close()`) or keep that loop running while blocking calls wait"
        )
    raise SyncCallInEventLoop(_in_loop_message())


def _thread_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _in_loop_message() -> str:
    return (
        "a blocking ebind call was made from a thread running an event loop, which it would "
        "stall; in async code use the async API (`await task.delay(...)`, "
        "`await fut.result()`)"
    )


def _wait(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float | None = None
) -> T:
    """Run ``coro`` on ``loop`` and block for its outcome.

    ``timeout`` is the call's own bound (the coroutine enforces it): past it and a grace the
    loop counts as blocked. A loop that stops meanwhile raises NotConnected.
    """
    if _thread_loop() is not None:
        # Waiting here would stall this thread's loop, or deadlock when it is ``loop``.
        coro.close()
        raise SyncCallInEventLoop(_in_loop_message())
    cf: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
    deadline = None if timeout is None else time.monotonic() + timeout + _LOOP_GRACE
    try:
        while True:
            left = _LOOP_CHECK if deadline is None else deadline - time.monotonic()
            try:
                return cf.result(max(0.0, min(_LOOP_CHECK, left)))
            except concurrent.futures.TimeoutError:
                if cf.done():  # the call's own TaskTimeout, or it finished just now
                    return cf.result(0)
            if not loop.is_running():
                raise NotConnected(
                    "the event loop serving this blocking call stopped while it waited; "
                    "connect again (app.sync.connect()) and repeat the call"
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise TaskTimeout(
                    f"the event loop serving this blocking call did not answer within "
                    f"{timeout}s (plus {_LOOP_GRACE}s): it is blocked; the call may still run"
                )
    except BaseException:
        # Interrupted here (KeyboardInterrupt), or given up: stop the call on the loop too.
        cf.cancel()
        raise


def _call(app: App, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make()`` builds on ``app``'s loop and return its result."""
    return _wait(_loop_for(app), make())


def _release(_: object) -> None:
    """Run on a loop only to drop the last reference to its argument there."""


class SyncResult(Generic[R]):
    """A task's pending result for blocking code: ``res.get(timeout=10)``, ``res.ready()``."""

    __slots__ = ("_future", "_loop", "_pid")

    def __init__(self, future: Future[R], loop: asyncio.AbstractEventLoop) -> None:
        self._future = future
        self._loop = loop
        self._pid = os.getpid()

    def __del__(self) -> None:
        # The Future's own cleanup touches its loop's waiter table, so its last reference
        # must drop on that loop's thread, not in whichever thread dropped this handle.
        fut = getattr(self, "_future", None)
        if fut is None or fut.done() or self._pid != os.getpid():
            return
        with contextlib.suppress(RuntimeError):  # a closed loop has no waiter left to drop
            self._loop.call_soon_threadsafe(_release, fut)

    @property
    def id(self) -> str:
        """The task id."""
        return self._future.id

    @property
    def name(self) -> str | None:
        """The task name, when known."""
        return self._future.name

    @property
    def token(self) -> str:
        """The secret the task's response must echo (keep it with the id; see ``Future.token``)."""
        return self._future.token

    @property
    def future(self) -> Future[R]:
        """The async Future behind this handle (await it only on its own loop)."""
        return self._future

    def ready(self) -> bool:
        """True once the response has arrived (``get()`` then returns at once)."""
        return self._future.done()

    def get(self, timeout: float | None = None) -> R:
        """Block until the result; raises TaskFailed, or TaskTimeout after ``timeout`` seconds.

        Raises NotConnected when the handle's connection is gone (closed, its loop stopped,
        or left in the parent process by fork), InvalidArguments for a ``timeout`` that is
        not None or a finite number >= 0.
        """
        wait = check_timeout(timeout)
        self._check_connected()
        return _wait(self._loop, self._future.result(wait), wait)

    def _check_connected(self) -> None:
        """Raise NotConnected when no response can reach this handle any more."""
        if self._pid != os.getpid():
            gone = "it was left in the parent process by fork"
        elif not self._loop.is_running():
            gone = "its event loop stopped"
        elif self._future._router.closed:
            gone = "it was closed (app.sync.close())"
        else:
            return
        raise NotConnected(
            f"the result handle of task {self.id} belongs to a connection that is gone: "
            f"{gone}; ask again on the App's current connection with "
            "app.sync.future(task_id, token=handle.token)"
        )

    def __repr__(self) -> str:
        state = "ready" if self.ready() else "pending"
        return f"<ebind.SyncResult {self.name or '?'} {self.id} {state}>"


class SyncTask(Generic[P, R]):
    """The blocking face of a Task: ``task.sync.delay(...)`` returns a SyncResult."""

    __slots__ = ("_task",)

    def __init__(self, task: Task[P, R]) -> None:
        self._task = task

    def __repr__(self) -> str:
        return f"<ebind.SyncTask {self._task.name}>"

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> SyncResult[R]:
        """Enqueue with these arguments; returns once the server stored the task."""
        app, spec = self._task.app, self._task.spec
        loop = _loop_for(app)
        fut = _wait(loop, app._submit(spec, spec.name, args, kwargs, DEFAULT_OPTIONS))
        return SyncResult(fut, loop)

    def send(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue fire-and-forget (no response is published); returns the task id."""
        return _call(self._task.app, lambda: self._task.send(*args, **kwargs))

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        deadline: datetime | float | None = None,
        retry: RetryPolicy | None = None,
        target: str | None = None,
        ignore_result: bool = False,
        rate_key: str | None = None,
        concurrency_key: str | None = None,
        queue: str | None = None,
        priority: str | None = None,
    ) -> SyncResult[R]:
        """Enqueue with options (those of the async ``Task.apply_async``)."""
        options = TaskOptions(
            task_id=task_id,
            countdown=countdown,
            eta=eta,
            deadline=deadline,
            retry=retry,
            target=target,
            ignore_result=ignore_result,
            rate_key=rate_key,
            concurrency_key=concurrency_key,
            queue=queue,
            priority=priority,
        )
        app, spec = self._task.app, self._task.spec
        loop = _loop_for(app)
        fut = _wait(loop, app._submit(spec, spec.name, args, kwargs or {}, options))
        return SyncResult(fut, loop)

    def delay_many(self, calls: Iterable[Sequence[Any]]) -> list[SyncResult[R]]:
        """Enqueue one task per argument tuple, publishing them concurrently, in order.

        Like ``Task.starmap``: every PubAck is checked; a PublishFailed raised for one
        carries the Futures of the tasks that were stored on ``.accepted``.
        """
        task = self._task
        batch = [tuple(args) for args in calls]
        loop = _loop_for(task.app)

        async def publish_all() -> list[Future[R]]:
            return await task.starmap(batch)

        return [SyncResult(f, loop) for f in _wait(loop, publish_all())]


class SyncApp:
    """The blocking face of an App (``app.sync``): producing, results and workflow basics."""

    __slots__ = ("_app",)

    def __init__(self, app: App) -> None:
        self._app = app

    def __repr__(self) -> str:
        return f"<ebind.SyncApp {self._app.name!r}>"

    def connect(self) -> None:
        """Connect now (otherwise the first call does); fails early on a bad URL or credentials."""
        _loop_for(self._app)

    def close(self) -> None:
        """Close the connection the blocking API opened (the next call connects again).

        An App connected by other code (a worker, an async web app) is left to that code:
        closing it from a handler would cut the worker's own connection.
        """
        app, runtime = self._app, _runtime
        loop = runtime.loop
        if app._nc is None or loop is None or app._loop is not loop:
            return
        _wait(loop, app.close())
        with runtime.lock:
            if app in runtime.apps:
                runtime.apps.remove(app)

    def enqueue(self, task: str | Task[Any, Any], /, *args: Any, **kwargs: Any) -> SyncResult[Any]:
        """Enqueue by handle or name; a name not registered here is sent unvalidated."""
        app = self._app
        loop = _loop_for(app)
        return SyncResult(_wait(loop, app.enqueue(task, *args, **kwargs)), loop)

    def send(self, task: str | Task[Any, Any], /, *args: Any, **kwargs: Any) -> str:
        """Enqueue fire-and-forget by handle or name; returns the task id."""
        return _call(self._app, lambda: self._app.send(task, *args, **kwargs))

    def apply_async(
        self,
        task: str | Task[Any, Any],
        /,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> SyncResult[Any]:
        """``apply_async`` by handle or name (the options of ``Task.apply_async``)."""
        app = self._app
        loop = _loop_for(app)
        return SyncResult(_wait(loop, app.apply_async(task, args, kwargs, **options)), loop)

    def future(
        self,
        task_id: str,
        *,
        name: str | None = None,
        client_id: str | None = None,
        token: str | None = None,
    ) -> SyncResult[Any]:
        """A handle on a task enqueued earlier (Celery's ``AsyncResult(task_id)``).

        ``token`` is the enqueuing handle's ``token``: with it only that task's own
        response is taken (see ``App.future``).
        """
        app = self._app
        loop = _loop_for(app)

        async def make() -> Future[Any]:  # its waiter belongs to the loop
            return app.future(task_id, name=name, client_id=client_id, token=token)

        return SyncResult(_wait(loop, make()), loop)

    def gather(self, results: Iterable[SyncResult[R]], timeout: float | None = None) -> list[R]:
        """Every result, in order, waiting on all at once; ``timeout`` bounds the whole wait.

        Raises NotConnected, as ``SyncResult.get`` does, for a handle whose connection is gone.
        """
        timeout = check_timeout(timeout)
        handles = list(results)
        if not handles:
            return []
        loop = handles[0]._loop
        for h in handles:
            if h._loop is not loop:
                raise NotConnected(
                    f"the result handle of task {h.id} belongs to another connection; "
                    "gather the handles of one App at a time"
                )
            h._check_connected()

        async def wait_all() -> list[R]:
            async with asyncio.timeout(timeout):
                return list(await asyncio.gather(*(h._future.result() for h in handles)))

        try:
            return _wait(loop, wait_all(), timeout)
        except TimeoutError as exc:
            if isinstance(exc, TaskTimeout):
                raise
            pending = [h.id for h in handles if not h.ready()]
            raise TaskTimeout(
                f"{len(pending)} of {len(handles)} results did not arrive within {timeout}s "
                f"(first pending: {pending[0] if pending else '?'}); they may still run",
                task_id=pending[0] if pending else "",
            ) from None

    # --- workflow basics -------------------------------------------------------------
    def submit(self, dag: DAG, active_breakpoints: Iterable[str] = ()) -> str:
        """Submit a DAG built with ``ebind.workflow.DAG``; returns its id."""
        app = self._app

        async def submit() -> str:
            await dag.submit(app.workflow, active_breakpoints)
            return dag.id

        return _call(app, submit)

    def result(self, dag_id: str, step: Step | str, timeout: float | None = None) -> Any:
        """Block for a step's result (see ``Workflow.result``; TimeoutError after ``timeout``)."""
        return _call(self._app, lambda: self._app.workflow.result(dag_id, step, timeout))

    def wait(self, dag_id: str, timeout: float | None = None) -> DAGMeta:
        """Block until the DAG finished (done, failed or canceled); returns its meta."""
        return _call(self._app, lambda: self._app.workflow.wait(dag_id, timeout=timeout))

    def signal(self, dag_id: str, name: str, payload: Any = None) -> bool:
        """Deliver signal ``name`` to a DAG's waiting steps (see ``Workflow.signal``)."""
        return _call(self._app, lambda: self._app.workflow.signal(dag_id, name, payload))

    def cancel(self, dag_id: str) -> None:
        """Cancel a DAG: pending steps canceled now, running ones may finish."""
        _call(self._app, lambda: self._app.workflow.cancel(dag_id))
