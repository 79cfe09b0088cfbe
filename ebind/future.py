"""Future[R]: the handle on a task's eventual result."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from ebind.codec import decode_result
from ebind.errors import (
    InvalidArguments,
    NotConnected,
    PermissionDenied,
    ResultExpired,
    TaskFailed,
    TaskTimeout,
    WrongEventLoop,
)
from ebind.logging import get_logger
from ebind.payload import PayloadUnreadable, unseal
from ebind.progress import Progress, read_progress
from ebind.wire import ErrorKind, TaskError, TaskResponse

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ebind.client import ResponseRouter
    from ebind.revoke import Revocation

__all__ = ["Future", "check_timeout"]

R = TypeVar("R")
log = get_logger("ebind.client")

# How long a waiter trusts the subscription before asking the stream; doubles up to the cap.
# Reconnects and slow-consumer drops wake waiters at once, so this is only a last resort.
_FIRST_CHECK = 5.0
_MAX_CHECK = 60.0


def check_timeout(timeout: object, parameter: str = "timeout") -> float | None:
    """``timeout`` as seconds to wait (None: no bound); InvalidArguments unless a finite >= 0."""
    if timeout is None:
        return None
    # A NaN deadline never compares as passed, so the wait would never end.
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidArguments(
            f"{parameter} must be a number of seconds or None, got {type(timeout).__name__} "
            f"{timeout!r}",
            parameter=parameter,
        )
    if not math.isfinite(timeout) or timeout < 0:
        raise InvalidArguments(
            f"{parameter} must be a finite number of seconds >= 0, got {timeout!r}; "
            "pass None to wait without a bound",
            parameter=parameter,
        )
    return float(timeout)


class Future(Generic[R]):
    """A task's pending result: ``await fut.result(timeout=None)``."""

    # One per delay(): slots skip the per-instance dict.
    __slots__ = (
        "_check_first",
        "_client_id",
        "_id",
        "_ignored",
        "_name",
        "_result_type",
        "_revoker",
        "_router",
        "_token",
        "_waiter",
    )

    def __init__(
        self,
        router: ResponseRouter,
        task_id: str,
        *,
        name: str | None = None,
        result_type: Any = Any,
        client_id: str | None = None,
        check_stream_first: bool = False,
        revoker: Callable[[str], Awaitable[Revocation]] | None = None,
        token: str = "",
        ignored: bool = False,
    ) -> None:
        self._router = router
        self._ignored = ignored  # sent with ignore_result=True: no response will come
        self._id = task_id
        self._token = token
        self._name = name
        self._result_type = result_type
        self._client_id = client_id
        self._check_first = check_stream_first
        self._waiter = router.waiter(task_id, token)
        self._revoker = revoker

    def __del__(self) -> None:
        # Drop the router's waiter of a Future nobody holds (send(), or a result never
        # awaited). __del__ costs nothing until then; a weakref.finalize per Future cost
        # a finalizer object and registry entry on every enqueue.
        waiter = getattr(self, "_waiter", None)
        if waiter is not None and not waiter.done():
            self._router.forget(self._id, waiter, getattr(self, "_token", ""))

    @property
    def id(self) -> str:
        """The task id."""
        return self._id

    @property
    def token(self) -> str:
        """The secret the task's response must echo ("" when unknown: any answer is taken).

        Keep it with the id to rebuild this Future elsewhere: ``app.future(id, token=...)``.
        It is "" when the publish was a duplicate (a task with this id was sent before, so
        the stored task carries that call's token, which this one cannot know).
        """
        return self._token

    def _duplicate(self) -> None:
        """The publish found this id stored already: take that task's answer, whatever token.

        That task may have finished before this Future existed, so its stored answer is
        read at once rather than after the first wait.
        """
        self._token = ""
        self._check_first = True
        self._router.lenient(self._id)

    @property
    def name(self) -> str | None:
        """The task name, when known."""
        return self._name

    async def revoke(self) -> Revocation:
        """Revoke this task cluster-wide (see ``App.revoke``); its waiter gets ``revoked``."""
        if self._revoker is None:
            raise RuntimeError("this Future was not made by an App, so it cannot revoke")
        return await self._revoker(self._id)

    def done(self) -> bool:
        """True once the response has arrived (``result()`` then returns at once)."""
        return self._waiter.done()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<ebind.Future {self._name or '?'} {self._id} {state}>"

    # The public API fixes result(timeout=...), the Celery/concurrent.futures shape.
    async def result(self, timeout: float | None = None) -> R:  # noqa: ASYNC109
        """Wait for the result; raises TaskFailed, or TaskTimeout after ``timeout`` seconds.

        Raises ResultExpired when the response was stored but removed after the results
        retention (the server's removal marker says so) before this waiter read it.
        Raises PermissionDenied when this NATS user may not read the task's stored response (the
        result of another client id).
        Raises NotConnected when the App's connection this Future waits on was closed (ask
        again with ``app.future(task_id, token=fut.token)``), WrongEventLoop when awaited on
        another event loop than that connection's, and InvalidArguments for a ``timeout``
        that is not None or a finite number >= 0, or for a task sent with
        ``ignore_result=True`` (no result is stored for it).
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        if self._ignored:
            raise InvalidArguments(
                f"task {self._name or ''} {self._id} was sent with ignore_result=True: no "
                "result is stored for it, so there is none to wait for"
            )
        if self._waiter.done():  # the common case once tasks run: nothing to wait for
            return self._decode(self._waiter.result())
        router = self._router
        loop = asyncio.get_running_loop()
        if loop is not router._loop:
            raise WrongEventLoop(
                f"the Future of task {self._name or ''} {self._id} belongs to a connection on "
                "another event loop; await it on that loop, or ask again on this loop's "
                "connection with app.future(task_id, token=fut.token)"
            )
        deadline = None if timeout is None else loop.time() + timeout
        if self._check_first:
            await self._check_stream()
        check = _FIRST_CHECK
        while not self._waiter.done():
            if router.closed:
                raise NotConnected(
                    f"task {self._name or ''} {self._id}: the connection this Future waited on "
                    "was closed, so its response cannot arrive here; ask again on the App's "
                    "current connection with app.future(task_id, token=fut.token) "
                    "(app.sync.future in blocking code)"
                )
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TaskTimeout(
                    f"no result for task {self._name or ''} {self._id} within {timeout}s; it may "
                    "still run: wait again with fut.result() or app.future(task_id)",
                    task_id=self._id,
                )
            slice_ = check if remaining is None else min(check, remaining)
            # Wakes on the response, on a possible miss (reconnect) or after the slice.
            await self._router.sleep(self._waiter, slice_)
            if not self._waiter.done():
                await self._check_stream()
                check = min(check * 2, _MAX_CHECK)
        return self._decode(self._waiter.result())

    async def progress(self) -> Progress | None:
        """The latest progress the task reported (validated), or None if it reported none."""
        client = self._client_id or self._router.client_id
        return await read_progress(self._router._nc, self._id, client)

    async def _check_stream(self) -> None:
        try:
            resp = await self._router.fetch(self._id, self._client_id, self._token)
        except (ResultExpired, PermissionDenied):
            raise  # asking again cannot help
        except Exception as exc:  # the server may be away; the next check retries
            log.debug("task.response_check_failed", task_id=self._id, error=repr(exc))
            return
        if resp is not None and not self._waiter.done():
            self._waiter.set_result(resp)

    def _decode(self, resp: TaskResponse) -> R:
        if resp.error is not None:
            raise TaskFailed(resp.error, task_id=self._id, task_name=self._name or "")
        raw = None if resp.result is None else bytes(resp.result)
        codec = self._router.codec
        if codec is not None and raw is not None:
            try:
                raw = unseal(codec, raw, f"result of task {self._name or ''} {self._id}")
            except PayloadUnreadable as exc:
                error = TaskError(kind=ErrorKind.DECODE.value, message=str(exc))
                raise TaskFailed(error, task_id=self._id, task_name=self._name or "") from exc
        try:
            value: R = decode_result(self._result_type, raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            error = TaskError(
                kind=ErrorKind.DECODE.value,
                message=f"result does not match the return annotation: {exc}",
            )
            raise TaskFailed(error, task_id=self._id, task_name=self._name or "") from exc
        return value
