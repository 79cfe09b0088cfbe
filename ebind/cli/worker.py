"""``ebind worker -A pkg.module:app``: run a worker process (the only place uvloop is installed)."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from ebind.cli.retention import merged, retention_options, retention_values
from ebind.errors import EbindError
from ebind.logging import redact

if TYPE_CHECKING:
    from ebind.supervision import ChildSlot

__all__ = ["load_app", "module_hint", "worker"]


def load_app(path: str) -> Any:
    """Import ``pkg.module:attr`` (``attr`` defaults to ``app``) from the current directory."""
    module_name, _, attr = path.partition(":")
    if not module_name:
        raise click.BadParameter(f"expected 'pkg.module:app', got {path!r}", param_hint="-A")
    hint = module_hint(module_name)
    if hint is not None:
        raise click.BadParameter(
            f"{module_name!r} is a file path; -A takes a module: try -A {hint}:{attr or 'app'}",
            param_hint="-A",
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like celery/uvicorn: apps next to the shell's cwd
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.BadParameter(
                f"cannot import module {module_name!r} (cwd {os.getcwd()})", param_hint="-A"
            ) from exc
        raise
    obj = module
    for part in (attr or "app").split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attr or 'app'!r}", param_hint="-A"
            ) from None
    return obj


def module_hint(module_name: str) -> str | None:
    """The dotted module a file path like ``tasks.py`` or ``pkg/tasks.py`` means, else None."""
    if not (module_name.endswith(".py") or "/" in module_name or "\\" in module_name):
        return None
    stem = module_name.removesuffix(".py").replace("\\", "/").strip("/")
    parts = [p for p in stem.split("/") if p not in ("", ".")]
    return ".".join(parts) or None


def _configure_logging(fmt: str | None, level: str) -> None:
    from ebind.logging import configure

    configure(format="json" if (fmt or _default_format()) == "json" else "console", level=level)


def _default_format() -> str:
    return "console" if sys.stderr.isatty() else "json"


def _point_at(app: Any, url: str) -> None:
    """Make a not-yet-connected App use ``url`` (comma-separated URLs allowed)."""
    from ebind.app import resolve_servers

    app.servers = resolve_servers(url)


async def _serve(app: Any, options: dict[str, Any], *, parent_pid: int | None = None) -> None:
    from ebind.worker.middleware import log_middleware
    from ebind.worker.shutdown import run_until_signalled
    from ebind.worker.worker import Worker

    await app.connect()
    try:
        make = getattr(app, "worker", None)
        contrib = options.pop("contrib_middleware", [])  # --otel (ebind/cli/worker_config.py)
        kwargs = dict(options, middleware=[*contrib, log_middleware])
        # --- --metrics-port (ebind.contrib.prometheus, needs ebind-nats[prometheus]) ---
        metrics_server = _start_metrics(app, kwargs)
        # --- end --metrics-port ---
        w = make(**kwargs) if callable(make) else Worker(app, **kwargs)

        async def announce() -> None:
            await w.wait_ready()
            # Printed whatever the log level, so supervisors and tests can wait for it.
            click.echo(f"ebind worker {w.worker_id} ready", err=True)
            if w.health is not None:  # --health-port
                click.echo(f"health at {w.health.url}/livez and /readyz", err=True)

        ready = asyncio.create_task(announce())
        orphan = None
        if parent_pid is not None:  # --processes: drain if the supervisor is gone
            from ebind.cli.worker_procs import watch_parent

            orphan = asyncio.create_task(watch_parent(parent_pid))
        try:
            await run_until_signalled(w, supervised=parent_pid is not None)
        finally:
            ready.cancel()
            if orphan is not None:
                orphan.cancel()
            if metrics_server is not None:  # --metrics-port
                metrics_server.close()
    finally:
        await app.close()


def _start_metrics(app: Any, kwargs: dict[str, Any]) -> Any:
    """--metrics-port: add the Prometheus middleware (outermost) and serve /metrics."""
    port, addr = kwargs.pop("metrics_port", None), kwargs.pop("metrics_addr", "127.0.0.1")
    if port is None:
        return None
    try:
        from ebind.contrib.prometheus import prometheus_middleware, start_metrics_server
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    kwargs["middleware"].insert(0, prometheus_middleware(app=app))
    server = start_metrics_server(port, addr=addr)
    click.echo(f"metrics at http://{addr}:{server.port}/metrics", err=True)
    return server


@click.group("worker", invoke_without_command=True)
@click.option("-A", "--app", "app_path", default=None, help="The App to serve, as pkg.module:app.")
@click.option(
    "-Q",
    "--queues",
    default=None,
    help="Queues to serve, comma-separated [default: 'default' plus every queue the App's "
    "tasks name].",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Handlers running at once, per worker process "
    "[default: 16; --pool-size with --pool process].",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Deliveries held per handler slot at most. Short tasks are held ahead of free "
    "slots (as many as start within about 10 ms); 1 holds only what runs.",
)
@click.option("--claim", "claims", multiple=True, help="A target to execute (repeatable).")
@click.option("--worker-id", default=None, help="Worker identity (default: random).")
@click.option("--nats", "nats_url", default=None, help="NATS URL (overrides the App's).")
@click.option("--embedded", is_flag=True, help="Start an embedded nats-server for this worker.")
@click.option("--no-scheduler", is_flag=True, help="Do not run the workflow scheduler here.")
@click.option(
    "--ack-wait",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds before an unacknowledged task is redelivered, set on the consumers this "
    "worker creates; an existing consumer keeps its own value.",
)
@click.option(
    "--shutdown-grace",
    type=click.FloatRange(min=0.0),
    default=30.0,
    show_default=True,
    help="Seconds running tasks get to finish after SIGTERM before they are abandoned.",
)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default=None,
    help="Log rendering (default: console on a terminal, json otherwise).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Lowest log level written (default: info, or ebind --log-level).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve Prometheus metrics on this port (needs ebind-nats[prometheus]).",
)
@click.option(
    "--metrics-addr",
    default="127.0.0.1",
    show_default=True,
    help="Metrics bind address (loopback by default; 0.0.0.0 exposes it to the network).",
)
@click.option(
    "--health-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve /livez and /readyz on this port (0: any free port).",
)
@click.option("--health-host", default="127.0.0.1", show_default=True, help="Health bind address.")
@click.option(
    "--pool",
    type=click.Choice(["thread", "process"]),
    default="thread",
    show_default=True,
    help="Run sync handlers in threads or in child processes (killed past their timeout).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    envvar="EBIND_WORKER_PROCESSES",
    help="Worker processes to run under one supervisor, each with its own NATS connection "
    "[default: 1; $EBIND_WORKER_PROCESSES].",
)
@click.option(
    "--pool-size",
    type=click.IntRange(min=1),
    default=None,
    help="Child processes of the process pool (--pool process) [default: one per CPU].",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    default=None,
    help="Replace a child process after this many tasks [default: never].",
)
@click.option(
    "--wait",
    "connect_wait",
    type=click.FloatRange(min=0.0),
    default=None,
    metavar="SECONDS",
    help="Keep trying to reach NATS this long before giving up (default: the App's "
    "connect_wait, 10 s unless configured); for orchestrators that start workers first.",
)
@click.option(
    "--otel",
    is_flag=True,
    help="Trace every task with OpenTelemetry (needs ebind-nats[otel] and an SDK set up).",
)
@retention_options
@click.pass_context
def worker(
    ctx: click.Context,
    /,
    app_path: str | None,
    queues: str | None,
    concurrency: int | None,
    prefetch: int,
    claims: tuple[str, ...],
    worker_id: str | None,
    nats_url: str | None,
    embedded: bool,
    no_scheduler: bool,
    ack_wait: float,
    shutdown_grace: float,
    log_format: str | None,
    log_level: str | None,
    metrics_port: int | None,
    metrics_addr: str,
    health_port: int | None,
    health_host: str,
    pool: str,
    processes: int | None,
    pool_size: int | None,
    max_tasks_per_child: int | None,
    connect_wait: float | None,
    otel: bool,
    **retention: float | None,
) -> None:
    """Run a worker for the App at -A until SIGINT/SIGTERM (graceful; a second signal: now).

    ``ebind worker ls`` lists the running workers instead.
    """
    if ctx.invoked_subcommand is not None:
        return  # `ebind worker ls`: the subcommand does the work
    if not app_path:
        raise click.UsageError("Missing option '-A' / '--app' (the App to serve, pkg.module:app).")
    obj: dict[str, Any] = ctx.obj if isinstance(ctx.obj, dict) else {}
    _configure_logging(
        log_format or obj.get("log_format"), log_level or obj.get("log_level") or "info"
    )
    # --- --processes N: a supervisor of N worker processes (ebind/cli/worker_procs.py) ---
    child, pool_size = _processes(ctx, processes, pool, pool_size, embedded)
    if child is not None:  # one of N: its own ports and identity, the parent's embedded NATS
        from ebind.supervision import child_port, child_worker_id

        worker_id = child_worker_id(worker_id, child.index)
        health_port = child_port(health_port, child.index)
        metrics_port = child_port(metrics_port, child.index)
        if child.nats_url:
            nats_url, embedded = child.nats_url, False
    # --- end --processes ---
    app = load_app(app_path)
    url = nats_url or obj.get("nats_url")
    node = None
    if embedded:
        from ebind.embed import start_node

        node = start_node()
        url = node.client_url
        click.echo(f"embedded nats-server at {url}", err=True)
    if url:
        _point_at(app, url)
    _apply_connection_flags(ctx, app)
    # --- --retention-*: the options (or EBIND_RETENTION_*) override the App's own setting ---
    given = [obj.get("retention", {}), retention_values(retention)]
    if hasattr(app, "retention"):
        app.retention = merged(app.retention, *given)
    options: dict[str, Any] = {
        "concurrency": concurrency,
        "prefetch": prefetch,
        "claims": list(claims),
        "queues": _queue_list(queues),
        "worker_id": worker_id,
        "scheduler": not no_scheduler,
        "ack_wait": ack_wait,
        "shutdown_grace": shutdown_grace,
        "metrics_port": metrics_port,  # both consumed by _start_metrics, not Worker options
        "metrics_addr": metrics_addr,
        "health_port": health_port,
        "health_host": health_host,
        # Children import the App from the same path (-A) as this process did.
        "pool": pool,
        "processes": pool_size,  # the Worker's name for the process pool's size
        "max_tasks_per_child": max_tasks_per_child,
        "app_path": app_path,
    }
    # --- App-level worker settings, --wait and contrib flags (ebind/cli/worker_config.py) ---
    from ebind.cli.worker_config import contrib_middleware, with_app_defaults

    options = with_app_defaults(ctx, getattr(app, "worker_options", {}), options)
    options["contrib_middleware"] = contrib_middleware(app, otel=otel)
    if connect_wait is not None:
        app.connect_wait = connect_wait
    from ebind.worker.health import HealthServeError

    try:
        runner = _runner()
        with runner:
            runner.run(_serve(app, options, parent_pid=child.parent_pid if child else None))
    except HealthServeError as exc:  # --health-port already taken: one line, no traceback
        raise click.ClickException(str(exc)) from None
    except EbindError as exc:  # refused credentials, TLS, unreachable, bad settings
        raise click.ClickException(redact(str(exc))) from None
    finally:
        if node is not None:
            node.shutdown()


def _processes(
    ctx: click.Context, processes: int | None, pool: str, pool_size: int | None, embedded: bool
) -> tuple[ChildSlot | None, int | None]:
    """--processes / --pool-size: supervise N children and exit, or (this child's slot, size)."""
    from ebind.supervision import resolve_process_flags

    try:
        flags = resolve_process_flags(processes, pool, pool_size)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    child = _child_slot()
    if child is not None:  # SIGINT is the supervisor's "stop now", meant for a running worker
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if flags.warning and child is None:
        click.echo(f"warning: {flags.warning}", err=True)
    if child is None and flags.workers > 1:
        params = ctx.params
        _check_child_ports(flags.workers, params["health_port"], params["metrics_port"])
        ctx.exit(_supervise(flags.workers, embedded))
    return child, flags.pool_size


def _child_slot() -> ChildSlot | None:
    """This process's slot when a ``--processes`` supervisor started it, else None."""
    from ebind.supervision import CHILD_ENV, parse_child_env

    raw = os.environ.pop(CHILD_ENV, None)  # not inherited by whatever this worker starts
    if raw is None:
        return None
    try:
        return parse_child_env(raw)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _check_child_ports(count: int, health_port: int | None, metrics_port: int | None) -> None:
    from ebind.supervision import child_port

    for flag, port in (("--health-port", health_port), ("--metrics-port", metrics_port)):
        try:
            child_port(port, count - 1)
        except ValueError as exc:
            raise click.BadParameter(
                f"{exc} (child i serves on port + i)", param_hint=flag
            ) from None


def _supervise(count: int, embedded: bool) -> int:
    """Run ``count`` worker processes with this command line until a signal; the exit code."""
    from ebind.cli.worker_procs import supervise

    argv = sys.argv[1:]
    if "worker" not in argv:
        raise click.UsageError("--processes runs from the ebind command line (ebind worker ...)")
    node = None
    if embedded:  # one server for all the children, owned by the supervisor
        from ebind.embed import start_node

        node = start_node()
        click.echo(f"embedded nats-server at {node.client_url}", err=True)
    try:
        return supervise(argv, count, nats_url=node.client_url if node else None)
    finally:
        if node is not None:
            node.shutdown()


def _queue_list(text: str | None) -> list[str] | None:
    """``-Q a,b`` checked; None when not given (the App's setting or the default applies)."""
    if text is None:
        return None
    from ebind.queues import parse_queues

    try:
        return list(parse_queues(text))
    except EbindError as exc:
        raise click.BadParameter(str(exc), param_hint="'-Q' / '--queues'") from None


def _apply_connection_flags(ctx: click.Context, app: Any) -> None:
    """Connection flags win over the App's own options; without flags the App reads the env."""
    from ebind.cli.conn_flags import flag_settings
    from ebind.connection import ConnectionSettings, nats_options

    flags = flag_settings(ctx)
    if flags.is_empty:
        return
    try:
        app.override_connection(nats_options(flags.over(ConnectionSettings.from_env())))
    except EbindError as exc:
        raise click.ClickException(redact(str(exc))) from None


def _runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def _add_subcommands() -> None:
    from ebind.cli.queue import worker_ls

    worker.add_command(worker_ls)


_add_subcommands()
