"""Process pools for sync handlers, with hard time limits that kill a stuck child.

A sync handler in the worker's thread pool shares one GIL with every other handler and,
past its timeout, keeps its thread until it returns (a thread cannot be interrupted). A
handler that runs in a :class:`ProcessPool` child instead runs on its own core, and a call
past its limit is ended by SIGKILL of the child, which is then replaced.

The parent keeps every NATS connection: a call sends the task name, its decoded arguments
and a picklable copy of the Context's fields down a pipe; the child answers with the
encoded result (bytes) or a ``TaskError``. Children are started with the ``forkserver``
method (``spawn`` where that is missing), never ``fork``: a fork of the worker would copy
its event loop and threads in whatever state they are in. Each child imports the App the
way ``ebind worker -A`` does, from an explicit ``pkg.module:app`` path and the parent's
``sys.path``, runs one call at a time and is replaced after ``max_tasks_per_child`` calls.

The rules (which pool runs a handler, option checks, how a child's death reads) are pure
functions in :mod:`ebind.pools`; :class:`ProcessPool` is the IO around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ebind.logging import get_logger
from ebind.pools import (
    PoolSettings,
    death_error,
    limit_at_dispatch,
    runs_in_process,
    start_method,
)
from ebind.wire import ErrorKind, TaskError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import BaseContext
    from multiprocessing.process import BaseProcess

    from ebind.context import Context
    from ebind.signature import HandlerSpec

__all__ = [
    "ChildBootError",
    "ContextFields",
    "EncodedResult",
    "HardLimitExceeded",
    "ProcessPool",
    "pool_for",
]

log = get_logger("ebind.worker")

BOOT_TIMEOUT = 60.0
"""Seconds a new child may take to import the App before it counts as failed."""
REAP_TIMEOUT = 5.0
"""Seconds the parent waits for a killed or retired child to be reaped."""


# ---------------------------------------------------------------------- crossing the pipe
class ContextFields(msgspec.Struct, frozen=True):
    """The picklable part of a :class:`~ebind.context.Context` (no logger, no extras)."""

    task_id: str
    name: str
    attempt: int
    dag_id: str
    step_id: str
    worker_id: str
    target: str
    deadline: datetime | None

    @classmethod
    def of(cls, ctx: Context) -> ContextFields:
        """The fields of ``ctx`` that can cross a pipe."""
        return cls(
            ctx.task_id,
            ctx.name,
            ctx.attempt,
            ctx.dag_id,
            ctx.step_id,
            ctx.worker_id,
            ctx.target,
            ctx.deadline,
        )

    def context(self) -> Context:
        """A fresh Context in the child, with its own task logger."""
        from ebind.context import Context

        logger = get_logger(
            "ebind.task", task_id=self.task_id, task_name=self.name, attempt=self.attempt
        )
        return Context(**msgspec.structs.asdict(self), log=logger)


@dataclass(frozen=True, slots=True)
class EncodedResult:
    """A handler's result already encoded (by the child): the runner stores it as is."""

    data: bytes


class HardLimitExceeded(TimeoutError):
    """A process-pool call ran past its limit; its child was killed."""

    _ebind_limit = True  # read by the runner: this is the worker's limit, not the handler's

    def __init__(self, *, by_deadline: bool) -> None:
        super().__init__()
        self.by_deadline = by_deadline
        """The task's deadline, cut shorter while the call waited for a child, bound it."""


class ChildBootError(RuntimeError):
    """A child process could not import the App."""


# ---------------------------------------------------------------------- the child
_TASK_ERRORS = msgspec.msgpack.Encoder()


def _child_main(conn: Connection, app_path: str, sys_path: list[str]) -> None:
    """Entry point of a child: import the App, then answer calls until the pipe closes."""
    # The parent owns the child's lifetime: a terminal's Ctrl-C or a supervisor's SIGTERM
    # to the process group must not kill a call the parent is still waiting for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        app = _import_app(app_path)
    except BaseException as exc:
        conn.send(("boot_failed", f"cannot import the App {app_path!r} in a child: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            name, args, fields = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed the pipe (retired this child) or died
        conn.send(_child_call(app, name, args, fields))


def _die_with_parent() -> None:
    # Linux: SIGKILL this child when its parent goes (the forkserver, which exits with the
    # worker), so a worker killed with -9 leaves no handler running behind it.
    _drop_forkserver_alive_fd()
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _drop_forkserver_alive_fd() -> None:
    # The forkserver hands every child a copy of the fd whose EOF tells it the worker is
    # gone (so children could start children). A child holding it keeps the forkserver,
    # and so this child, alive after the worker is killed: close it (ebind children
    # never start processes through the forkserver).
    with contextlib.suppress(Exception):
        from multiprocessing import forkserver

        server: Any = getattr(forkserver, "_forkserver", None)
        fd = getattr(server, "_forkserver_alive_fd", None)
        if isinstance(fd, int):
            os.close(fd)
            server._forkserver_alive_fd = None


def _import_app(app_path: str) -> Any:
    from ebind.cli.worker import load_app

    try:
        return load_app(app_path)
    except Exception as exc:
        message = getattr(exc, "format_message", None)
        raise ChildBootError(message() if callable(message) else str(exc)) from exc


def _child_call(
    app: Any, name: str, args: list[Any], fields: ContextFields | None
) -> tuple[str, bytes]:
    """Run one call in the child: ``("ok", encoded result)`` or ``("err", TaskError)``."""
    from ebind.codec import encode_result
    from ebind.context import set_current
    from ebind.errors import NonRetryable
    from ebind.worker.outcome import classify

    spec: HandlerSpec | None = app.registry.get(name)
    if spec is None:
        why = f"the App imported by the child process has no handler {name!r}"
        return _refused(ErrorKind.UNKNOWN_HANDLER, why)
    if fields is not None:
        ctx = fields.context()
        set_current(ctx)
        args = [ctx, *args]
    try:
        value = spec.fn(*args)
    except BaseException as exc:
        error = classify(exc, dont_retry=spec.dont_retry, non_retryable=(NonRetryable,))
        return "err", _TASK_ERRORS.encode(error)
    finally:
        set_current(None)
    try:
        return "ok", encode_result(spec, value)
    except Exception as exc:
        return _refused(
            ErrorKind.ENCODE, f"result of {spec.name} could not be encoded as JSON: {exc}"
        )


def _refused(kind: ErrorKind, message: str) -> tuple[str, bytes]:
    """A non-retryable failure answered by the child."""
    return "err", _TASK_ERRORS.encode(TaskError(kind=kind.value, message=message))


# ---------------------------------------------------------------------- the parent
def _deadline_of(args: list[Any], spec: HandlerSpec) -> datetime | None:
    """The running task's deadline (from its Context, passed or current)."""
    from ebind.context import current_context

    ctx = args[0] if spec.wants_context else current_context()
    return getattr(ctx, "deadline", None)


class _Child:
    """One live child process and the parent's end of its pipe."""

    __slots__ = ("calls", "conn", "proc")

    def __init__(self, proc: BaseProcess, conn: Connection) -> None:
        self.proc = proc
        self.conn = conn
        self.calls = 0

    @property
    def pid(self) -> int:
        """The child's process id."""
        return int(self.proc.pid or 0)

    def kill(self) -> None:
        """SIGKILL the child and close the pipe (reaping is :meth:`reap`)."""
        with contextlib.suppress(Exception):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.conn.close()

    def reap(self) -> int | None:
        """Wait (blocking, bounded) for the child to exit; its exit code."""
        self.proc.join(REAP_TIMEOUT)
        if self.proc.exitcode is None:
            self.kill()
            self.proc.join(REAP_TIMEOUT)
        return self.proc.exitcode


def _start_child(mp: BaseContext, app_path: str, sys_path: list[str]) -> _Child:
    """Start a child and wait for its "ready" (blocking: run in a thread)."""
    parent_end, child_end = mp.Pipe(duplex=True)
    proc = mp.Process(  # type: ignore[attr-defined]
        target=_child_main,
        args=(child_end, app_path, sys_path),
        name="ebind-pool-child",
        daemon=True,
    )
    proc.start()
    child_end.close()  # so the parent's end reads EOF once the child is gone
    child = _Child(proc, parent_end)
    try:
        if not parent_end.poll(BOOT_TIMEOUT):
            raise ChildBootError(f"a child did not import the App {app_path!r} in {BOOT_TIMEOUT}s")
        status, detail = parent_end.recv()
    except ChildBootError:
        child.kill()
        child.reap()
        raise
    except (EOFError, OSError):
        code = child.reap()  # before any kill, so its own exit status is read
        raise ChildBootError(
            f"a child exited with code {code} while importing {app_path!r}"
        ) from None
    if status != "ready":
        child.kill()
        child.reap()
        raise ChildBootError(str(detail))
    return child


class ProcessPool:
    """Child processes running sync handlers one call at a time, killed past their limit.

    Args:
        app_path: ``pkg.module:app`` the children import (as ``ebind worker -A`` does).
        settings: the worker's checked pool options.
        sys_path: import path given to every child (the parent's by default).
    """

    def __init__(
        self, app_path: str, settings: PoolSettings, *, sys_path: list[str] | None = None
    ) -> None:
        self.app_path = app_path
        self.settings = settings
        self._sys_path = list(sys.path if sys_path is None else sys_path)
        if os.getcwd() not in self._sys_path:
            self._sys_path.insert(0, os.getcwd())
        import multiprocessing  # only once a pool starts: a thread-pool worker never needs it

        method = start_method(multiprocessing.get_all_start_methods())
        self._mp = multiprocessing.get_context(method)
        if method == "forkserver":
            # Imported once in the forkserver, so a replacement child (after a kill) forks
            # with ebind loaded: ~40 ms to ready here instead of ~180 ms.
            self._mp.set_forkserver_preload(["ebind.worker.procpool"])
        self.start_method = method
        """The multiprocessing start method children are created with."""
        # None: a slot whose child was killed or retired (a new one starts when it is used).
        self._idle: asyncio.Queue[_Child | None] = asyncio.Queue()
        for _ in range(settings.processes):
            self._idle.put_nowait(None)
        self._live: dict[int, _Child] = {}
        self._retiring: set[_Child] = set()  # pipe closed, not yet reaped
        self._closed = False
        self.replaced = 0
        """Children killed (past a limit, died, cancelled) or retired after their quota."""

    def takes(self, spec: HandlerSpec) -> bool:
        """Whether ``spec`` runs in this pool's children."""
        return runs_in_process(spec.is_async, spec.pool, self.settings.pool)

    @property
    def pids(self) -> frozenset[int]:
        """Process ids of the children alive now."""
        return frozenset(self._live)

    async def start(self) -> None:
        """Start every child now; a bad App path then fails at startup, not in each task."""
        slots = [self._idle.get_nowait() for _ in range(self._idle.qsize())]
        try:
            started = await asyncio.gather(
                *(self._ensure(c) for c in slots), return_exceptions=True
            )
        except BaseException:
            for c in slots:
                self._idle.put_nowait(c)
            raise
        failure: BaseException | None = None
        for got in started:
            if isinstance(got, BaseException):
                failure = failure or got
                self._idle.put_nowait(None)
            else:
                self._idle.put_nowait(got)
        if failure is not None:
            raise failure

    async def _ensure(self, child: _Child | None) -> _Child:
        if child is not None and child.proc.is_alive():
            return child
        if child is not None:
            self._retire(child)
        new = await asyncio.to_thread(_start_child, self._mp, self.app_path, self._sys_path)
        self._live[new.pid] = new
        log.info("worker.pool_child_started", pid=new.pid, start_method=self.start_method)
        return new

    async def call(
        self, spec: HandlerSpec, args: list[Any], limit: float | None, task_id: str
    ) -> EncodedResult:
        """Run ``spec`` with ``args`` in a child; the encoded result.

        Raises AttemptError for the handler's own failures, a dead child or arguments that
        cannot be sent; HardLimitExceeded once the child ran past ``limit`` and was killed.
        """
        from ebind.worker.outcome import AttemptError

        if self._closed:
            raise RuntimeError("the process pool is closed")
        fields = ContextFields.of(args[0]) if spec.wants_context else None
        payload = args[1:] if spec.wants_context else args
        # The wait for a free child counts against the task's deadline (not its timeout).
        deadline = _deadline_of(args, spec)
        patience = limit_at_dispatch(None, deadline, datetime.now(UTC))
        try:
            slot = await asyncio.wait_for(self._idle.get(), patience)
        except TimeoutError:
            raise HardLimitExceeded(by_deadline=True) from None
        given = limit
        limit = limit_at_dispatch(limit, deadline, datetime.now(UTC))
        by_deadline = limit != given
        if limit is not None and limit <= 0:
            self._idle.put_nowait(slot)
            raise HardLimitExceeded(by_deadline=True)
        child: _Child | None = None
        try:
            try:
                child = await self._ensure(slot)
            except ChildBootError as exc:
                raise AttemptError(
                    TaskError(kind=ErrorKind.WORKER_LOST.value, message=str(exc), retryable=True)
                ) from exc
            try:
                child.conn.send((spec.name, payload, fields))
            except (EOFError, OSError, BrokenPipeError):
                pass  # the child is gone: the read below reports how it died
            except Exception as exc:
                raise AttemptError(
                    TaskError(
                        kind=ErrorKind.ENCODE.value,
                        message=f"arguments of {spec.name} could not be sent to the child "
                        f"process: {exc}",
                        retryable=False,
                    )
                ) from exc
            child.calls += 1
            answer = await self._answer(child, spec, limit, task_id, by_deadline)
        except BaseException:
            # Killed, dead or cancelled mid-call: the child may still be running the
            # handler, so it never serves another call.
            self._idle.put_nowait(None)
            if child is not None and child.pid in self._live:
                await self._kill(child)
            raise
        quota = self.settings.max_tasks_per_child
        if quota is not None and child.calls >= quota:
            self._retire(child)
            child = None
        self._idle.put_nowait(child)
        status, data = answer
        if status == "ok":
            return EncodedResult(data)
        raise AttemptError(msgspec.msgpack.decode(data, type=TaskError))

    async def _answer(
        self,
        child: _Child,
        spec: HandlerSpec,
        limit: float | None,
        task_id: str,
        by_deadline: bool,
    ) -> tuple[str, bytes]:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        fd = child.conn.fileno()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, ready)
        try:
            try:
                await asyncio.wait_for(readable, limit)
            except TimeoutError:
                log.warning(
                    "worker.pool_child_killed",
                    task_name=spec.name,
                    task_id=task_id,
                    pid=child.pid,
                    timeout=limit,
                    note="the handler ran past its limit; its child process was killed "
                    "and is replaced",
                )
                raise HardLimitExceeded(by_deadline=by_deadline) from None
        finally:
            loop.remove_reader(fd)
        try:
            got: tuple[str, bytes] = child.conn.recv()
        except (EOFError, OSError):
            # Died on its own: reap it before anything else, so its own exit status is read.
            self._live.pop(child.pid, None)
            self.replaced += 1
            code = await asyncio.to_thread(child.reap)
            child.kill()
            from ebind.worker.outcome import AttemptError

            error = death_error(code, spec.name)
            log.error("worker.pool_child_died", task_name=spec.name, task_id=task_id, error=error)
            raise AttemptError(error) from None
        return got

    async def _kill(self, child: _Child) -> None:
        """SIGKILL ``child`` and reap it off the loop."""
        self._live.pop(child.pid, None)
        self.replaced += 1
        child.kill()
        await asyncio.to_thread(child.reap)

    def _retire(self, child: _Child) -> None:
        """Close an idle child's pipe (it exits on EOF) and reap it in the background."""
        self._live.pop(child.pid, None)
        self.replaced += 1
        with contextlib.suppress(Exception):
            child.conn.close()
        self._retiring.add(child)
        reaped = asyncio.get_running_loop().run_in_executor(None, child.reap)
        reaped.add_done_callback(lambda _: self._retiring.discard(child))

    def close(self) -> None:
        """Kill every child and reap it (the worker calls this once handlers are done)."""
        self._closed = True
        children = [*self._live.values(), *self._retiring]
        self._live.clear()
        self._retiring.clear()
        for child in children:
            child.kill()
        for child in children:
            with contextlib.suppress(Exception):
                child.reap()


async def pool_for(app: Any, settings: PoolSettings, app_path: str | None) -> ProcessPool | None:
    """The pool a worker needs: None when no sync handler of ``app`` runs in a child.

    With ``pool="process"`` the children start now; a pool only for tasks that opted in
    starts each child when a call first needs it.
    """
    registry = app.registry
    specs = [registry.get(name) for name in registry.primary_names()]
    wanted = [
        s.name
        for s in specs
        if s is not None and runs_in_process(s.is_async, s.pool, settings.pool)
    ]
    if not wanted:
        return None
    if not app_path:
        raise ValueError(
            f"tasks {wanted} run in child processes, which import the App themselves: "
            "give the Worker app_path='pkg.module:app' (ebind worker -A passes its own)"
        )
    pool = ProcessPool(app_path, settings)
    if settings.pool == "process":
        try:
            await pool.start()
        except BaseException:
            pool.close()  # children that did start are killed, not left behind
            raise
    return pool
