"""App: the connection, the task registry, and the producer API (enqueue, send, futures)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, Self, TypeVar, overload

import msgspec

from ebind._denied import Denials, attach_denials
from ebind.client import Publisher, ResponseRouter
from ebind.codec import encode_args, encode_raw_args
from ebind.config import connect_wait_setting
from ebind.context import Context
from ebind.errors import (
    InvalidArguments,
    InvalidName,
    NotConnected,
    PublishFailed,
    WrongEventLoop,
)
from ebind.future import Future
from ebind.hooks import WorkerHook, WorkerHooks
from ebind.ids import new_reply_token, new_task_id
from ebind.limits.concurrency_rules import Concurrency, call_key, check_key, task_limit
from ebind.logging import get_logger, redact
from ebind.payload import PayloadCodec, check_codec, check_redactor, codec_from_env, seal
from ebind.queues import wire_priority, wire_queue
from ebind.ratelimit import check_rate_key, key_argument
from ebind.registry import Registry
from ebind.retention import Retention
from ebind.retry import RetryPolicy
from ebind.signature import HandlerSpec, inspect_handler
from ebind.signing import Signer, keys_from_env
from ebind.streams import (
    RESP_STREAM,
    TASKS_STREAM,
    check_id,
    check_target,
    check_task_name,
    ensure_streams,
    resp_subject,
)
from ebind.task import DEFAULT_OPTIONS, FIRE_AND_FORGET, Task, TaskOptions
from ebind.validate import check_future_ids, reply_token_problem
from ebind.wire import TaskEnvelope

if TYPE_CHECKING:
    from ebind._jsreq import PubAck
    from ebind.dlq import DeadLetters
    from ebind.periodic import ScheduleInfo
    from ebind.revoke import Revocation
    from ebind.sync import SyncApp
    from ebind.worker import Worker
    from ebind.worker.middleware import Middleware
    from ebind.workflow.workflow import Workflow

__all__ = ["DEFAULT_NATS_URL", "App", "resolve_servers"]

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound=WorkerHook)
log = get_logger("ebind.app")

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
ENV_NATS_URL = "EBIND_NATS_URL"
ENV_CLIENT_ID = "EBIND_CLIENT_ID"
ENV_INBOX_PREFIX = "EBIND_NATS_INBOX_PREFIX"
MIN_SERVER_VERSION = (2, 12, 0)  # message schedules (countdown/eta) need 2.12


def resolve_servers(nats_url: str | Sequence[str] | None) -> list[str]:
    """``nats_url`` → ``$EBIND_NATS_URL`` → ``nats://127.0.0.1:4222``; commas separate URLs."""
    if nats_url is None:
        nats_url = os.environ.get(ENV_NATS_URL) or DEFAULT_NATS_URL
    from ebind.connection import register_url_secrets

    # Before the split: a password holding a comma must be known whole to be masked.
    register_url_secrets([nats_url] if isinstance(nats_url, str) else list(nats_url))
    urls = nats_url.split(",") if isinstance(nats_url, str) else list(nats_url)
    servers = [u.strip() for u in urls if u and u.strip()]
    if not servers:
        raise InvalidArguments(
            "nats_url is empty; pass a URL like 'nats://127.0.0.1:4222' or set $EBIND_NATS_URL",
            parameter="nats_url",
        )
    return servers


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` with options returns."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, R]], /
    ) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[Context, P], R], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


class App:
    """An ebind application: register tasks with ``@app.task``, connect, enqueue.

    Args:
        name: application name (shown in logs and as the NATS client name).
        nats_url: URL, list of URLs or comma-separated URLs; None reads ``$EBIND_NATS_URL``
            and falls back to ``nats://127.0.0.1:4222``.
        replicas: replicas of every stream and KV bucket ebind creates (3 in a cluster).
        publish_timeout: seconds to wait for the server to confirm a publish.
        retention: how long tasks, results, dead letters and DAG history are kept; None
            reads ``$EBIND_RETENTION_*`` over the defaults of :class:`ebind.Retention`.
        signing_keys: HMAC keys (bytes or str, 16+ bytes): the first signs every task
            message this App publishes; its workers accept only messages signed with one of
            them (see :mod:`ebind.signing`). None reads ``$EBIND_SIGNING_KEYS``
            (comma-separated); unset means no signing and no verification.
        payload_codec: encrypts task arguments, results and DAG step data at rest (e.g.
            ``ebind.contrib.fernet.FernetCodec``); producers and workers need the same one.
            None uses a FernetCodec of ``$EBIND_FERNET_KEYS`` (comma-separated) when set.
        redact_error: rewrites error texts before they are stored in step records, dead
            letters and responses (e.g. to strip secrets a handler put in an exception).
        client_id: a fixed id for this App's results subject ``RESP.<client_id>.>`` (so a
            NATS user's permissions can name it); None reads ``$EBIND_CLIENT_ID`` and falls
            back to a random id per App.
        **nats_connect_options: passed to ``nats.connect`` (user, password, token,
            nkeys_seed, user_credentials, tls, tls_hostname, ...); they win over the
            ``$EBIND_NATS_*`` variables read by :mod:`ebind.connection`. ``inbox_prefix``
            defaults to ``$EBIND_NATS_INBOX_PREFIX`` when that is set.
    """

    def __init__(
        self,
        name: str = "ebind",
        *,
        nats_url: str | Sequence[str] | None = None,
        replicas: int = 1,
        publish_timeout: float = 5.0,
        retention: Retention | None = None,
        signing_keys: Iterable[bytes | str] | None = None,
        payload_codec: PayloadCodec | None = None,
        redact_error: Callable[[str], str] | None = None,
        client_id: str | None = None,
        connect_wait: float | None = None,
        **nats_connect_options: Any,
    ) -> None:
        _check_settings(name, replicas, publish_timeout)
        if retention is not None and not isinstance(retention, Retention):
            raise InvalidArguments(
                f"retention must be an ebind.Retention, got {type(retention).__name__}"
            )
        self.retention = retention if retention is not None else Retention.from_env()
        # --- message trust (ebind/signing.py, ebind/payload.py) ---
        keys = signing_keys if signing_keys is not None else keys_from_env()
        self.signer = Signer(keys) if keys is not None else None
        self.payload_codec = check_codec(payload_codec) or codec_from_env()
        self.redact_error = check_redactor(redact_error)
        self.stream_configs: dict[str, Any] = {}
        """Each ebind stream's config as found (or created) by the last connect, by name."""
        self.name = name
        self.replicas = replicas
        self.publish_timeout = float(publish_timeout)
        self.servers = resolve_servers(nats_url)
        self.client_id = _client_id(client_id)
        self.registry = Registry()
        self._options = _with_inbox_prefix(nats_connect_options)
        self._denials = Denials()
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._nc: Any = None
        self._js: Any = None
        self._router: ResponseRouter | None = None
        self._publisher: Publisher | None = None
        self._dlq: DeadLetters | None = None
        self._workflow: Workflow | None = None
        self._closing = False
        # --- the blocking API (ebind/sync.py) runs calls on the loop that connected, in
        # the process that connected (a forked child must not use the parent's socket) ---
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected_pid = 0
        # --- envelope hooks (contrib.otel injects trace context): applied in order to every
        # envelope right before it is published, by _submit and publish_task alike ---
        self.publish_hooks: list[Callable[[TaskEnvelope], TaskEnvelope]] = []
        # --- worker configuration (ebind/config.py, ebind/worker/hooks.py): honoured by every
        # Worker of this App, `ebind worker -A` included ---
        self.connect_wait = connect_wait_setting(connect_wait)
        self.middleware: list[Middleware] = []
        """Worker middleware of this App, inside any given to a Worker (first is outermost)."""
        self.worker_options: dict[str, Any] = {}
        """Defaults for ``App.worker()`` / ``ebind worker`` (``config_from_object`` fills it)."""
        self.worker_hooks = WorkerHooks()

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "not connected"
        return f"<ebind.App {self.name!r} {state}, {len(self.registry)} task names>"

    # ------------------------------------------------------------------ connection
    @property
    def is_connected(self) -> bool:
        """True between a successful ``connect()`` and ``close()``."""
        return self._nc is not None and bool(self._nc.is_connected)

    @property
    def nc(self) -> Any:
        """The nats-py client; raises NotConnected before ``connect()``."""
        if self._nc is None:
            raise NotConnected(self._not_connected())
        return self._nc

    @property
    def js(self) -> Any:
        """The JetStream context; raises NotConnected before ``connect()``."""
        if self._js is None:
            raise NotConnected(self._not_connected())
        return self._js

    @property
    def tasks_horizon(self) -> float:
        """Seconds a queued task may wait: ``retention.tasks``, kept under the server's max_age."""
        from ebind.horizon import effective_horizon

        tasks = self.stream_configs.get(TASKS_STREAM)
        return effective_horizon(self.retention.tasks, getattr(tasks, "max_age", None))

    @property
    def max_payload(self) -> int:
        """Largest message the server accepts, headers included."""
        return int(self.nc.max_payload)

    def _not_connected(self) -> str:
        return (
            f"App {self.name!r} is not connected; call `await app.connect()` or use "
            "`async with app:` first"
        )

    def _elsewhere(self) -> str:
        """Why this App cannot serve the running loop, and what to do instead."""
        from ebind.sync import runs_blocking_api

        loop = self._loop
        if self._connected_pid != os.getpid():
            return (
                f"App {self.name!r} holds its parent process's connection (this process was "
                "forked after it connected); call `await app.connect()` here to connect afresh"
            )
        if loop is not None and runs_blocking_api(loop):
            where = "the blocking API's background loop (app.sync / task.sync connected it)"
        elif loop is not None and loop.is_running():
            where = "an event loop running in another thread"
        else:
            where = "an event loop that is no longer running (close an App before its loop ends)"
        return (
            f"App {self.name!r} is connected on another event loop: {where}; a connection "
            "serves only the loop it was opened on. From sync code use app.sync / task.sync; "
            "to use the App from this loop, close it first (app.sync.close() for the blocking "
            "API's connection, else `await app.close()` on its own loop) and connect here"
        )

    def _check_loop(self) -> None:
        """Raise WrongEventLoop when connected on another loop than the running one."""
        if asyncio.get_running_loop() is not self._loop and self._nc is not None:
            raise WrongEventLoop(self._elsewhere())

    async def connect(self) -> None:
        """Connect, check the server version, ensure streams/buckets, subscribe to responses.

        A no-op when already connected on this event loop; raises WrongEventLoop when the
        App is connected on another one (the blocking API's background loop, say). In a
        process forked after the App connected, it leaves the parent's connection untouched
        and connects afresh.
        """
        if self._nc is not None:
            if self._connected_pid == os.getpid():
                self._check_loop()
                return
            from ebind.sync import abandon

            abandon(self)  # the parent's, inherited through fork: this process needs its own
        from ebind.connection import connect_options, open_connection
        from ebind.embed import check_server_version

        # Explicit options win over $EBIND_NATS_*; refused credentials or TLS fail at once.
        explicit, shown = connect_options(self.servers, self._options)
        options = {"name": f"ebind:{self.name}", **explicit, **self._callbacks()}
        # one registry per connection: its listeners belong to this connection's pipelines
        self._denials = Denials()
        nc = await open_connection(self.servers, options, settings=shown, wait=self.connect_wait)
        attach_denials(nc, self._denials)
        try:
            v = nc.connected_server_version
            check_server_version(f"{v.major}.{v.minor}.{v.patch}", MIN_SERVER_VERSION)
            js = nc.jetstream()
            self.stream_configs = await ensure_streams(js, self.replicas, self.retention)
            router = ResponseRouter(nc, js, self.client_id, codec=self.payload_codec)
            await router.start()
            publisher = Publisher(
                nc,
                js,
                timeout=self.publish_timeout,
                signer=self.signer,
                max_ahead=timedelta(seconds=self.tasks_horizon),
            )
            await publisher.start()
        except BaseException:
            await nc.close()
            raise
        self._nc, self._js, self._router = nc, js, router
        self._publisher = publisher
        self._loop, self._connected_pid = asyncio.get_running_loop(), os.getpid()
        log.debug("app.connected", app=self.name, client_id=self.client_id)

    def override_connection(self, options: Mapping[str, Any]) -> None:
        """Let nats-py ``options`` (CLI flags) win over the App's own; credentials as a group."""
        from ebind.connection import merge_options

        self._options = merge_options(self._options, options)

    def _callbacks(self) -> dict[str, Callable[..., Awaitable[None]]]:
        # Log connection events through structlog (URLs redacted) and wake result waiters
        # whenever responses may have been dropped; the caller's own callbacks still run.
        user = self._options

        def wrap(key: str, event: str, level: str, wake: bool) -> Callable[..., Awaitable[None]]:
            async def callback(*args: Any) -> None:
                if args and self._permission_denied(args[0]):
                    if user.get(key) is not None:
                        await user[key](*args)
                    return
                detail = {"error": redact(repr(args[0]))} if args else {}
                # An intentional close() disconnects too; that is not worth a warning.
                lvl = "debug" if self._closing else level
                getattr(log, lvl)(event, app=self.name, **detail)
                if wake and self._router is not None:
                    self._router.missed()
                if user.get(key) is not None:
                    await user[key](*args)

            return callback

        return {
            "error_cb": wrap("error_cb", "nats.error", "warning", True),
            "disconnected_cb": wrap("disconnected_cb", "nats.disconnected", "warning", False),
            "reconnected_cb": wrap("reconnected_cb", "nats.reconnected", "info", True),
            "closed_cb": wrap("closed_cb", "nats.closed", "debug", False),
        }

    def _permission_denied(self, error: object) -> bool:
        """Hand a permission violation to the request it refused; False for other errors."""
        violation = self._denials.notice(error)
        if violation is None:
            return False
        # A denial a caller receives as PermissionDenied needs no warning too.
        getattr(log, "debug" if violation.handled else "warning")(
            "nats.permission_denied",
            app=self.name,
            operation=violation.operation,
            subject=violation.subject,
        )
        return True

    async def close(self) -> None:
        """Flush pending publishes and close the connection (idempotent).

        The workflow engine is bound to this connection, so it is closed too and
        ``app.workflow`` builds a new one after the next ``connect()``.
        """
        nc, router, wf = self._nc, self._router, self._workflow
        self._nc = self._js = self._router = self._publisher = None
        self._workflow = None
        if nc is None:
            return
        self._closing = True
        try:
            if wf is not None:
                # Its background tasks (liveness announcements) use this connection.
                try:
                    await wf.close()
                except Exception as exc:  # closing anyway
                    log.warning("app.workflow_close_failed", error=repr(exc))
            if router is not None:
                await router.stop()
            try:
                await nc.flush(timeout=self.publish_timeout)
            except Exception as exc:  # closing anyway
                log.debug("app.flush_failed", error=repr(exc))
            try:
                await nc.close()
            except (ConnectionError, OSError) as exc:
                # nats-py drains the socket on close; a connection already lost (its server
                # was killed) raises here although there is nothing left to close.
                log.debug("app.close_connection_lost", error=repr(exc))
        finally:
            self._closing = False

    def _forget_connection(self) -> tuple[Any, ...]:
        """Drop the connection without closing it (a forked child's copy); returns what it held."""
        held = (self._nc, self._js, self._router, self._publisher, self._workflow, self._loop)
        self._nc = self._js = self._router = self._publisher = None
        self._workflow = None
        self._loop, self._connected_pid = None, 0
        return held

    @property
    def sync(self) -> SyncApp:
        """The blocking API for sync code: ``app.sync.enqueue(...)``, ``app.sync.submit(dag)``."""
        from ebind.sync import SyncApp

        return SyncApp(self)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ registration
    @overload
    def task(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, R]], /
    ) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[Concatenate[Context, P], R], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        aliases: Iterable[str] = (),
        dont_retry: Iterable[type[BaseException]] = (),
        pool: str | None = None,
        rate_limit: str | None = None,
        rate_key: str | None = None,
        concurrency: int | Concurrency | None = None,
        concurrency_key: str | Callable[..., object] | None = None,
        queue: str | None = None,
        priority: str | None = None,
    ) -> TaskDecorator: ...
    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        aliases: Iterable[str] = (),
        dont_retry: Iterable[type[BaseException]] = (),
        pool: str | None = None,
        rate_limit: str | None = None,
        rate_key: str | None = None,
        concurrency: int | Concurrency | None = None,
        concurrency_key: str | Callable[..., object] | None = None,
        queue: str | None = None,
        priority: str | None = None,
    ) -> Any:
        """Register a handler; use bare (``@app.task``) or with options (``@app.task(...)``).

        ``pool="process"`` runs a sync handler in a worker's child processes (its own GIL,
        killed past its timeout) even when the worker's pool is the thread pool.

        ``rate_limit="100/s"`` (or ``/m``, ``/h``) caps how often the task starts across
        every worker together; ``rate_key="customer_id"`` names the argument whose value
        gets a limit of its own. A limited task waits for its turn; it is never failed.
        ``concurrency=N`` lets at most N calls run at once across the cluster, per key when
        ``concurrency_key`` (an argument name or a function of the arguments) is given.
        ``queue=`` routes its calls to that queue (workers serve it with ``-Q``), and
        ``priority=`` ("high", "normal", "low") puts them in that band; a call may override both.
        """

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            spec = inspect_handler(
                f,
                name=name,
                retry=retry,
                timeout=timeout,
                aliases=aliases,
                dont_retry=dont_retry,
                pool=pool,
                rate_limit=rate_limit,
                rate_key=rate_key,
                queue=queue,
                priority=priority,
            )
            limit = task_limit(concurrency, concurrency_key, [p.name for p in spec.params])
            if limit is not None:
                spec = dataclasses.replace(spec, concurrency=limit)
            self.registry.register(spec)
            handle: Task[Any, Any] = Task(self, spec)
            for n in spec.names:
                self._tasks[n] = handle
            return handle

        return register if fn is None else register(fn)

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        """Every registered name and alias mapped to its Task handle (read-only)."""
        return MappingProxyType(self._tasks)

    # ------------------------------------------------------------------ producing
    async def enqueue(
        self, task: str | Task[Any, Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        """Enqueue by handle or name; a name not registered here is sent unvalidated."""
        spec, name = self._lookup(task)
        return await self._submit(spec, name, args, kwargs, DEFAULT_OPTIONS)

    async def send(self, task: str | Task[Any, Any], /, *args: Any, **kwargs: Any) -> str:
        """Enqueue fire-and-forget by handle or name; returns the task id."""
        spec, name = self._lookup(task)
        fut = await self._submit(spec, name, args, kwargs, FIRE_AND_FORGET)
        return fut.id

    async def apply_async(
        self,
        task: str | Task[Any, Any],
        /,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Future[Any]:
        """``Task.apply_async`` by handle or name (same options)."""
        spec, name = self._lookup(task)
        try:
            opts = TaskOptions(**options)
        except TypeError as exc:
            raise InvalidArguments(f"unknown apply_async option: {exc}") from exc
        return await self._submit(spec, name, args, kwargs or {}, opts)

    def future(
        self,
        task_id: str,
        *,
        name: str | None = None,
        client_id: str | None = None,
        token: str | None = None,
    ) -> Future[Any]:
        """A Future for a task enqueued earlier (by this App, or by ``client_id``'s App).

        ``token`` is the enqueuing Future's :attr:`~ebind.Future.token`: with it, only
        that task's own response is taken; without it, any response stored for the id
        (another producer may send a task with an id it knows).

        Raises:
            InvalidName: ``task_id`` or ``client_id`` is not a plain id (a wildcard such as
                ``*`` would otherwise read another App's result), or ``token`` is not one.
        """
        check_future_ids(task_id, client_id)
        if token is not None and reply_token_problem(token):
            raise InvalidName(
                f"token {token[:80]!r} is not a reply token (hex digits, as Future.token gives)",
                kind="token",
                value=token[:80],
            )
        if self._router is None:
            raise NotConnected(self._not_connected())
        spec = self.registry.get(name) if name else None
        return Future(
            self._router,
            task_id,
            name=name,
            result_type=spec.return_type if spec else Any,
            client_id=client_id,
            check_stream_first=True,
            revoker=self.revoke,
            token=token or "",
        )

    def _lookup(self, task: str | Task[Any, Any]) -> tuple[HandlerSpec | None, str]:
        if isinstance(task, Task):
            return task.spec, task.spec.name
        if not isinstance(task, str):
            raise InvalidArguments(f"expected a task handle or name, got {type(task).__name__}")
        spec = self.registry.get(task)
        # Producers without the code may enqueue any well-formed name (no client validation).
        return spec, spec.name if spec else check_task_name(task)

    async def _submit(
        self,
        spec: HandlerSpec | None,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
    ) -> Future[Any]:
        # Before anything is published: a publish from another loop's thread would race the
        # connection's own, and its PubAck wait would fail although the server stored it.
        if asyncio.get_running_loop() is not self._loop and self._nc is not None:
            raise WrongEventLoop(self._elsewhere())
        env, fut = self._prepare(spec, name, args, kwargs, options)
        assert self._publisher is not None  # _prepare checked the connection
        ack = await self._publisher.publish(env, countdown=options.countdown, eta=options.eta)
        if ack.duplicate:
            fut._duplicate()
        return fut

    async def _submit_many(
        self,
        spec: HandlerSpec | None,
        name: str,
        calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]],
        options: TaskOptions,
    ) -> list[Future[Any]]:
        """Every call published before any PubAck is awaited; every PubAck still checked.

        Raises the first publish's error once all of them are settled; the Futures of the
        publishes the server did confirm are on the error's ``accepted`` (those tasks run).
        """
        self._check_loop()
        prepared = [self._prepare(spec, name, a, kw, options) for a, kw in calls]
        futures = [fut for _, fut in prepared]
        if not prepared:
            return futures
        assert self._publisher is not None  # _prepare checked the connection
        failures = await self._publisher.publish_many(
            [env for env, _ in prepared],
            countdown=options.countdown,
            eta=options.eta,
            on_duplicate=lambda i: futures[i]._duplicate(),
        )
        if failures:
            first = failures[0][1]
            if isinstance(first, PublishFailed):
                refused = {i for i, _ in failures}
                first.accepted = [f for i, f in enumerate(futures) if i not in refused]
                first.unconfirmed = [
                    futures[i]
                    for i, exc in failures
                    if isinstance(exc, PublishFailed) and exc.maybe_stored
                ]
                first.add_note(
                    f"{len(first.accepted)} of {len(futures)} tasks were accepted and will run; "
                    "their Futures are on this error's .accepted"
                )
                if first.unconfirmed:
                    first.add_note(
                        f"{len(first.unconfirmed)} were not confirmed and may or may not be "
                        "stored (they may run); their Futures (ids, tokens) are on "
                        ".unconfirmed: wait on them, or send them again under the same "
                        "task_id (the server drops a duplicate)"
                    )
            raise first
        return futures

    def _prepare(
        self,
        spec: HandlerSpec | None,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
    ) -> tuple[TaskEnvelope, Future[Any]]:
        """The validated, encoded envelope of one call and the Future for its result."""
        if spec is not None:
            payload = encode_args(spec, args, kwargs)
        elif kwargs:
            raise InvalidArguments(
                f"task {name!r} is not registered in this process, so keyword arguments "
                f"{sorted(kwargs)} cannot be bound to positions; pass them positionally",
                task_name=name,
            )
        else:
            payload = encode_raw_args(name, args)
        if self.payload_codec is not None:
            payload = seal(self.payload_codec, payload)
        if self._router is None or self._publisher is None:
            raise NotConnected(self._not_connected())
        task_id = check_id(options.task_id, "task_id") if options.task_id else new_task_id()
        token = "" if options.ignore_result else new_reply_token()
        env = TaskEnvelope(
            id=task_id,
            name=name,
            payload=msgspec.Raw(payload),
            reply_to="" if options.ignore_result else resp_subject(self.client_id, task_id),
            reply_token=token,
            deadline=_deadline(options.deadline),
            enqueued_at=datetime.now(UTC),
            retry_policy=_retry(options.retry) or (spec.retry if spec else None),
            target=check_target(options.target) if options.target is not None else "",
            timeout=spec.timeout if spec else None,
            rate_key=_rate_key(spec, name, args, kwargs, options.rate_key),
            concurrency_key=_concurrency_key(spec, args, kwargs, options.concurrency_key),
            queue=_routed(options.queue, wire_queue, spec.queue if spec else ""),
            priority=_routed(options.priority, wire_priority, spec.priority if spec else ""),
        )
        fut: Future[Any] = Future(
            self._router,
            task_id,
            name=name,
            result_type=spec.return_type if spec else Any,
            revoker=self.revoke,
            token=token,
            ignored=options.ignore_result,
        )
        for hook in self.publish_hooks:  # envelope hooks (see __init__)
            env = hook(env)
        return env, fut

    async def publish_task(
        self,
        env: TaskEnvelope,
        *,
        msg_id: str | None = None,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
    ) -> PubAck:
        """The one publish path: size check, pipelined publish, PubAck awaited with a bound.

        Returns the PubAck: the stream sequence the message got (for a duplicate msg-id,
        that of the message stored first).

        Raises:
            PayloadTooLarge: envelope plus headers exceed the server's max_payload.
            PublishFailed: no confirmation in time; retrying with the same id/msg_id is safe.
            PermissionDenied: this NATS user may not publish to the task's subject.
            WrongEventLoop: the App is connected on another event loop than the running one.
        """
        if self._publisher is None:
            raise NotConnected(self._not_connected())
        self._check_loop()
        for hook in self.publish_hooks:  # envelope hooks (see __init__)
            env = hook(env)
        return await self._publisher.publish(env, msg_id=msg_id, countdown=countdown, eta=eta)

    async def publish_response(
        self, subject: str, data: bytes, *, expected_last_seq: int | None = None
    ) -> None:
        """Publish an encoded TaskResponse and wait until EBIND_RESP stored it (for workers).

        Waiters receive it through their core subscription as soon as the server has it;
        the confirmation only gates the worker's ack, so a response lost in a stream leader
        election makes the task run again instead of vanishing.

        ``expected_last_seq`` stores it only if the subject's newest response has that
        sequence (0: none yet), so a worker whose delivery went stale cannot add a second one.

        Raises:
            PublishFailed: EBIND_RESP did not confirm in time.
            SubjectMoved: ``expected_last_seq`` was given and the subject moved on.
        """
        if self._publisher is None:
            raise NotConnected(self._not_connected())
        await self._publisher.publish_stored(
            subject, data, stream=RESP_STREAM, expected_last_seq=expected_last_seq
        )

    # ------------------------------------------------------------------ other parts
    @property
    def dlq(self) -> DeadLetters:
        """The dead-letter queue (list/show/requeue/purge)."""
        if self._dlq is None:
            from ebind.dlq import DeadLetters

            self._dlq = DeadLetters(self)
        return self._dlq

    @property
    def workflow(self) -> Workflow:
        """The workflow engine bound to this App (created on first use; needs a connection)."""
        if self._workflow is None:
            from ebind.workflow.workflow import Workflow

            self._workflow = Workflow.from_app(self)
        return self._workflow

    def configure_workflow(self, **options: Any) -> Workflow:
        """Build ``app.workflow`` with non-default options (e.g. ``sweep_interval=5.0``).

        Call it after ``connect()`` and before starting workers; the options are those of
        ``ebind.workflow.Workflow``.
        """
        from ebind.workflow.workflow import Workflow

        self._workflow = Workflow.from_app(self, **options)
        return self._workflow

    def worker(self, **options: Any) -> Worker:
        """A Worker for this App (see ``ebind.worker.Worker``); ``worker_options`` are defaults."""
        from ebind.worker import Worker

        return Worker(self, **{**self.worker_options, **options})

    # --- configuration and worker hooks: the logic lives in ebind/config.py and hooks.py ---
    def config_from_object(self, obj: object | str) -> None:
        """Read ``EBIND_*`` settings from a module, ``"module:attr"``, object or mapping."""
        from ebind.config import apply_settings, load_object, parse_settings, settings_of

        apply_settings(self, parse_settings(settings_of(load_object(obj))))

    def config_from_env(self, environ: Mapping[str, str] | None = None) -> None:
        """Read the ``EBIND_*`` environment variables that name settings (others are ignored)."""
        from ebind.config import PREFIX, apply_settings, parse_settings

        env = os.environ if environ is None else environ
        given = {k: v for k, v in env.items() if k.startswith(PREFIX) and v != ""}
        apply_settings(self, parse_settings(given, strict=False))

    def on_worker_startup(self, hook: H) -> H:
        """Decorator: run ``hook(worker)`` before a worker of this App takes its first task."""
        return self.worker_hooks.on_startup(hook)

    def on_worker_shutdown(self, hook: H) -> H:
        """Decorator: run ``hook(worker)`` after a worker of this App has stopped."""
        return self.worker_hooks.on_shutdown(hook)

    # --- periodic schedules: thin delegates, the logic lives in ebind/periodic.py ---
    async def schedule(
        self,
        name: str,
        task: str | Task[Any, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        every: timedelta | float | None = None,
        cron: str | None = None,
        tz: str | None = None,
        target: str | None = None,
    ) -> ScheduleInfo:
        """Create or replace the server-side periodic schedule ``name`` (see ebind.periodic)."""
        from ebind.periodic import create_schedule

        return await create_schedule(
            self, name, task, args, kwargs, every=every, cron=cron, tz=tz, target=target
        )

    async def schedules(self) -> list[ScheduleInfo]:
        """Every periodic schedule, sorted by name."""
        from ebind.periodic import list_schedules

        return await list_schedules(self)

    list_schedules = schedules

    async def revoke(self, task_id: str) -> Revocation:
        """Revoke ``task_id`` cluster-wide and durably: it never runs, or running is cancelled."""
        from ebind.revoke import revoke

        if not self.is_connected:
            raise NotConnected(self._not_connected())
        return await revoke(self, task_id)

    async def unschedule(self, name: str) -> bool:
        """Remove the periodic schedule ``name``; False when there was none."""
        from ebind.periodic import remove_schedule

        return await remove_schedule(self, name)


def _check_settings(name: object, replicas: object, publish_timeout: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InvalidArguments(f"App name must be a non-empty string, got {name!r}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 5:
        raise InvalidArguments(
            f"replicas must be an integer from 1 to 5, got {replicas!r} (3 for a cluster)"
        )
    if not (isinstance(publish_timeout, int | float) and 0 < publish_timeout < math.inf):
        raise InvalidArguments(f"publish_timeout must be > 0 seconds, got {publish_timeout!r}")


def _client_id(client_id: str | None) -> str:
    chosen = client_id if client_id is not None else os.environ.get(ENV_CLIENT_ID) or None
    return uuid.uuid4().hex if chosen is None else check_id(chosen, "client_id")


def _with_inbox_prefix(options: dict[str, Any]) -> dict[str, Any]:
    prefix = options.get("inbox_prefix", os.environ.get(ENV_INBOX_PREFIX) or None)
    if not isinstance(prefix, str):
        return options  # unset, or bytes that nats-py takes as they are
    from ebind.permissions import check_inbox_prefix

    return {**options, "inbox_prefix": check_inbox_prefix(prefix, shared_ok=True)}


def _deadline(deadline: datetime | float | None) -> datetime | None:
    if deadline is None:
        return None
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None or deadline.utcoffset() is None:
            raise InvalidArguments(
                f"deadline {deadline.isoformat()} has no time zone; pass an aware datetime "
                "or seconds from now",
                parameter="deadline",
            )
        return deadline.astimezone(UTC)
    if isinstance(deadline, bool) or not isinstance(deadline, int | float):
        raise InvalidArguments(
            f"deadline must be an aware datetime or seconds from now, got {deadline!r}",
            parameter="deadline",
        )
    if not math.isfinite(deadline) or deadline <= 0:
        raise InvalidArguments(
            f"deadline must be > 0 seconds from now, got {deadline!r}", parameter="deadline"
        )
    try:
        return datetime.now(UTC) + timedelta(seconds=deadline)
    except OverflowError:
        raise InvalidArguments(
            f"deadline {deadline!r} seconds from now is past the largest date there is",
            parameter="deadline",
        ) from None


def _rate_key(
    spec: HandlerSpec | None,
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    given: str | None,
) -> str:
    """The rate key a call counts against: given on the call, else the task's key argument."""
    if given is not None:
        if spec is not None and spec.rate_limit is None:
            raise InvalidArguments(
                f"task {name!r} has no rate_limit, so rate_key={given!r} would do nothing",
                task_name=name,
                parameter="rate_key",
            )
        return check_rate_key(given)
    if spec is None or spec.rate_key is None:
        return ""
    position = spec.positions[spec.rate_key]
    return key_argument(
        spec.rate_key, position, spec.params[position].default, tuple(args), dict(kwargs)
    )


def _retry(policy: object) -> RetryPolicy | None:
    if policy is None or isinstance(policy, RetryPolicy):
        return policy
    raise InvalidArguments(
        f"retry must be an ebind.RetryPolicy, got {type(policy).__name__}", parameter="retry"
    )


def _concurrency_key(
    spec: HandlerSpec | None, args: Sequence[Any], kwargs: Mapping[str, Any], given: str | None
) -> str:
    """The call's concurrency key: the one given, else the task's key of these arguments."""
    limit = spec.concurrency if spec is not None else None
    if given is not None:
        if spec is not None and limit is None:
            raise InvalidArguments(
                f"task {spec.name!r} has no concurrency limit, so concurrency_key= would do "
                "nothing; declare it with @app.task(concurrency=N)",
                task_name=spec.name,
                parameter="concurrency_key",
            )
        return check_key(given)
    if spec is None or limit is None:
        return ""
    names = [p.name for p in spec.params]
    defaults = {p.name: p.default for p in spec.params if not p.required}
    return call_key(limit, names, defaults, args, kwargs)


def _routed(value: str | None, check: Callable[[str], str], default: str) -> str:
    """A call's queue or band (validated) when it names one, else the task's."""
    return default if value is None else check(value)
