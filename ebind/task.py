"""Task[P, R]: the handle ``@app.task`` returns — call locally, or enqueue for a worker."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ebind.context import Context, reset_current, set_current
from ebind.retry import RetryPolicy

if TYPE_CHECKING:
    from ebind.app import App
    from ebind.future import Future
    from ebind.signature import HandlerSpec
    from ebind.sync import SyncTask

__all__ = ["DEFAULT_OPTIONS", "FIRE_AND_FORGET", "Task", "TaskOptions"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOptions:
    """Per-call publish options of ``apply_async`` (all optional)."""

    task_id: str | None = None
    countdown: float | timedelta | None = None
    eta: datetime | None = None
    deadline: datetime | float | None = None
    retry: RetryPolicy | None = None
    target: str | None = None
    ignore_result: bool = False
    rate_key: str | None = None
    concurrency_key: str | None = None


DEFAULT_OPTIONS = TaskOptions()
"""Options of a plain ``delay``/``enqueue`` (shared: TaskOptions is frozen)."""
FIRE_AND_FORGET = TaskOptions(ignore_result=True)
"""Options of ``send``."""


class Task(Generic[P, R]):
    """A registered handler: ``await t(...)`` runs it here, ``delay``/``send`` enqueue it."""

    def __init__(self, app: App, spec: HandlerSpec) -> None:
        self.app = app
        self.spec = spec
        self.__wrapped__ = spec.fn
        self.__doc__ = spec.fn.__doc__

    @property
    def name(self) -> str:
        """The task's primary name (its routing key)."""
        return self.spec.name

    def __repr__(self) -> str:
        return f"<ebind.Task {self.spec.name}>"

    @property
    def sync(self) -> SyncTask[P, R]:
        """The blocking API for sync code: ``task.sync.delay(...).get(timeout=10)``."""
        from ebind.sync import SyncTask

        return SyncTask(self)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the handler in this process (a local Context is supplied when it takes one)."""
        spec = self.spec
        ctx = Context(task_id=f"local-{uuid.uuid4()}", name=spec.name, worker_id="local")
        call_args: list[Any] = [ctx, *args] if spec.wants_context else list(args)
        token = set_current(ctx)
        try:
            result = spec.fn(*call_args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        finally:
            reset_current(token)
        value: R = result
        return value

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Enqueue with these arguments and return a Future for the result."""
        return await self.app._submit(self.spec, self.spec.name, args, kwargs, DEFAULT_OPTIONS)

    async def send(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue fire-and-forget (no response is published); returns the task id."""
        fut: Future[R] = await self.app._submit(
            self.spec, self.spec.name, args, kwargs, FIRE_AND_FORGET
        )
        return fut.id

    async def apply_async(
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
    ) -> Future[R]:
        """Enqueue with options.

        Args:
            args: positional arguments.
            kwargs: keyword arguments (bound to positions before publishing).
            task_id: id and dedupe key (``Nats-Msg-Id``); a repeat inside 5 minutes is dropped.
            countdown: run no earlier than this many seconds from now.
            eta: run no earlier than this aware datetime (producer's clock).
            deadline: aware datetime, or seconds from now, after which the task must not start.
            retry: RetryPolicy for this call, overriding the task's.
            target: run only on a worker that claims this target.
            ignore_result: publish no response (fire-and-forget).
            rate_key: count this call against the task's rate limit for this key
                (instead of the key its ``rate_key`` argument gives, or the task-wide one).
            concurrency_key: the key this call counts against, instead of the one the
                task's ``concurrency_key`` computes.
        """
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
        )
        return await self.app._submit(self.spec, self.spec.name, args, kwargs or {}, options)
