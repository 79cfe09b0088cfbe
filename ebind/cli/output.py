"""Shared plumbing of the operator commands: connecting, errors, tables, JSON, prompts.

Every operator command (``ebind dag|dlq|stream``) runs its coroutine through
:func:`run_async`, which connects an App to the global ``--nats`` URL with a short connect
timeout and turns every expected failure into one line on stderr and exit code 1 — never
a traceback. People get aligned tables (coloured only on a terminal); scripts pass
``--json`` (globally or per command) and get JSON on stdout.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec

from ebind._printable import Styled, printable
from ebind.errors import DAGNotFound, EbindError, StepNotFound

if TYPE_CHECKING:
    from ebind.app import App

__all__ = [
    "CONNECT_TIMEOUT",
    "age",
    "configure_logging",
    "confirm",
    "echo_json",
    "echo_json_line",
    "echo_table",
    "emit",
    "human_duration",
    "is_json",
    "json_option",
    "parse_since",
    "printable",
    "progress",
    "run_async",
    "status_style",
    "style",
    "to_builtins",
    "truncate",
    "yes_option",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

CONNECT_TIMEOUT = 2.0  # seconds; an operator waiting on a dead URL should hear so quickly
_JSON_KEY = "ebind.json"

_STATUS_COLOURS = {
    "done": "green",
    "failed": "red",
    "skipped": "yellow",
    "canceled": "magenta",
    "running": "cyan",
    "pending": "blue",
    "pausing": "yellow",
    "paused": "yellow",
}


# --- options --------------------------------------------------------------------------


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_JSON_KEY] = True


def json_option(f: F) -> F:
    """Per-command ``--json`` (the global ``ebind --json`` works too)."""
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Machine-readable JSON output.",
    )(f)


def yes_option(f: F) -> F:
    """``--yes``: skip the confirmation prompt of a destructive command."""
    return click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(f)


def is_json(ctx: click.Context) -> bool:
    """Whether the command should print JSON (``--json`` given globally or to the command)."""
    if ctx.meta.get(_JSON_KEY):
        return True
    obj = ctx.find_root().obj
    return bool(isinstance(obj, dict) and obj.get("json"))


def _interactive() -> bool:
    return sys.stdin.isatty()


def confirm(question: str, yes: bool) -> None:
    """Ask ``question`` on a terminal; without one, require ``--yes`` instead of blocking."""
    if yes:
        return
    if not _interactive():
        raise click.ClickException(
            "refusing a destructive operation without --yes: stdin is not a terminal, "
            "so nobody can confirm it (pass --yes)"
        )
    if not click.confirm(question, default=False, err=True):
        raise click.ClickException("aborted")


# --- rendering ------------------------------------------------------------------------


def _colour_on() -> bool:
    from ebind.logging import colour_wanted

    return colour_wanted(sys.stdout)


def style(text: str, **styles: Any) -> str:
    """``click.style`` only on a terminal and without ``NO_COLOR`` (pipes and files stay plain).

    ``text`` is made printable first, so the result is :class:`Styled`: its only escapes
    are the ones added here.
    """
    text = printable(text)
    return Styled(click.style(text, **styles)) if _colour_on() else Styled(text)


def status_style(status: str) -> str:
    """A status word coloured by what it means (green done, red failed, ...)."""
    return style(status, fg=_STATUS_COLOURS.get(status))


def _visible_len(text: str) -> int:
    # Widths must ignore the ANSI escapes added by style().
    return len(click.unstyle(text))


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print an aligned table (two spaces between columns), header first."""
    # A Styled cell keeps ebind's own colours; any other becomes plain printable text.
    body = [[c if isinstance(c, Styled) else printable(str(c)) for c in r] for r in rows]
    cols = len(headers)
    widths = [
        max([_visible_len(h) for h in headers[i : i + 1]] + [_visible_len(r[i]) for r in body])
        for i in range(cols)
    ]
    head = [style(h, bold=True) for h in headers]
    for row in [head, *body]:
        cells = [c + " " * (widths[i] - _visible_len(c)) for i, c in enumerate(row)]
        click.echo("  ".join(cells).rstrip())


def to_builtins(value: Any) -> Any:
    """Structs, enums, datetimes and Raw JSON (anything msgspec encodes) as plain values."""
    return msgspec.json.decode(msgspec.json.encode(value))


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON (Structs, enums, datetimes, Raw all supported)."""
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def emit(
    ctx: click.Context,
    value: T | None,
    render: Callable[[T], None],
    to_json: Callable[[T], Any] | None = None,
) -> None:
    """Print a command's result: JSON for scripts, ``render(value)`` for people.

    ``value`` None (the command was interrupted) prints nothing; ``to_json`` reshapes the
    value for JSON output when it is not already what scripts should see.
    """
    if value is None:
        return
    if is_json(ctx):
        echo_json(to_json(value) if to_json is not None else value)
    else:
        render(value)


def echo_json_line(value: Any) -> None:
    """Print ``value`` as one compact JSON line (live feeds: one object per event)."""
    click.echo(msgspec.json.encode(value).decode())


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when cut."""
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def human_duration(d: timedelta) -> str:
    """Short duration for ages: ``850ms``, ``4.56s``, ``3m5s``, ``2h0m3s``, ``3d4h``."""
    from ebind.workflow.debug import human_duration as go_style

    if d >= timedelta(days=1):
        return f"{d.days}d{d.seconds // 3600}h"
    return go_style(d)


def age(at: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``at`` was (``—`` when unknown)."""
    if at is None:
        return "—"
    return human_duration((now or datetime.now(UTC)) - at)


_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``30s``/``15m``/``2h``/``7d``/``1w`` ago, or an ISO-8601 time (UTC without an offset).

    Units are lower case (``1M`` is refused rather than read as minutes or months).

    Raises:
        click.BadParameter: neither form, too far back, or a time in the future.
    """
    now = now or datetime.now(UTC)
    text = value.strip()
    number, unit = text[:-1], text[-1:]
    if unit in _SINCE_UNITS and number.isascii() and number.replace(".", "", 1).isdigit():
        try:
            return now - timedelta(seconds=float(number) * _SINCE_UNITS[unit])
        except OverflowError:
            raise click.BadParameter(f"{value!r} reaches back too far") from None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (30s, 15m, 2h, 7d, 1w) nor an ISO time "
            "(2026-11-24T09:00:00Z)"
        ) from None
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    if at > now:
        raise click.BadParameter(f"{value!r} is in the future")
    return at


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long operations; silent unless stderr is a terminal.

    Yields ``advance(n)``; the bar goes to stderr so stdout (tables, JSON) stays clean.
    """
    if total < 20 or not sys.stderr.isatty():  # short jobs do not need a bar
        yield lambda n: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


# --- running --------------------------------------------------------------------------


def _log_level(ctx: click.Context) -> str:
    root = ctx.find_root()
    source = root.get_parameter_source("log_level")
    if source is None or source is click.core.ParameterSource.DEFAULT:
        return "error"  # operator output stays readable; --log-level opts into more
    obj = root.obj if isinstance(root.obj, dict) else {}
    return str(obj.get("log_level") or "info")


def configure_logging(ctx: click.Context) -> None:
    """Apply ``--log-level`` / ``--log-format`` (stderr only) unless the host set up structlog."""
    import structlog

    from ebind.logging import configure

    if structlog.is_configured():
        return  # a host that embeds the CLI (tests, a shell) keeps its own setup
    obj = ctx.find_root().obj
    fmt = obj.get("log_format") if isinstance(obj, dict) else None
    configure(format=fmt or ("console" if sys.stderr.isatty() else "json"), level=_log_level(ctx))


def _nats_url(ctx: click.Context) -> str | None:
    obj = ctx.find_root().obj
    return obj.get("nats_url") if isinstance(obj, dict) else None


def _unreachable(servers: Sequence[str], exc: BaseException) -> click.ClickException:
    import nats.errors

    from ebind.connection import redact_servers

    if isinstance(exc, TimeoutError):
        reason = f"no answer within {CONNECT_TIMEOUT:g}s"
    elif isinstance(exc, nats.errors.NoServersError):
        reason = "connection refused: nothing is listening there"
    else:
        reason = str(exc) or type(exc).__name__
    return click.ClickException(
        f"cannot reach NATS at {redact_servers(servers)} ({reason}); start one with `ebind server` "
        "or point --nats / $EBIND_NATS_URL at a running server"
    )


def _message(exc: EbindError) -> str:
    if isinstance(exc, DAGNotFound) and exc.dag_id:
        return f"DAG {exc.dag_id!r} not found; list DAGs with `ebind dag ls`"
    if isinstance(exc, StepNotFound) and exc.step_id:
        return (
            f"step {exc.step_id!r} not found in DAG {exc.dag_id!r}; "
            f"see its steps with `ebind dag get {exc.dag_id}`"
        )
    return str(exc)


async def _connect(ctx: click.Context) -> App:
    import nats.errors

    from ebind.app import App
    from ebind.cli.conn_flags import cli_settings
    from ebind.cli.retention import merged
    from ebind.connection import nats_options
    from ebind.errors import ConnectionFailed
    from ebind.retention import Retention

    obj = ctx.find_root().obj
    app = App(
        "ebind-cli",
        nats_url=_nats_url(ctx),
        **nats_options(cli_settings(ctx)),
        retention=merged(Retention.from_env(), obj.get("retention", {}) if obj else {}),
        connect_timeout=CONNECT_TIMEOUT,
        connect_wait=0,  # one try: an operator hears about an unreachable URL at once
        # nats-py otherwise retries a refused server 60 times, 2 s apart, before giving up;
        # an operator should hear about an unreachable URL within ~CONNECT_TIMEOUT.
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
    )
    try:
        await app.connect()
    except ConnectionFailed as exc:
        if exc.kind != "unreachable":  # refused credentials or TLS: the message says it all
            raise click.ClickException(str(exc)) from None
        raise _unreachable(app.servers, exc.__context__ or exc) from None
    except (OSError, TimeoutError, nats.errors.NoServersError) as exc:
        raise _unreachable(app.servers, exc) from None
    return app


async def _run(ctx: click.Context, fn: Callable[[App], Awaitable[T]]) -> T:
    import nats.errors

    app = await _connect(ctx)
    try:
        return await fn(app)
    except EbindError as exc:
        raise click.ClickException(_message(exc)) from None
    except (nats.errors.Error, TimeoutError) as exc:
        raise click.ClickException(f"NATS error: {str(exc) or type(exc).__name__}") from None
    finally:
        await app.close()


def run_async(ctx: click.Context, fn: Callable[[App], Awaitable[T]]) -> T | None:
    """Connect an App to ``--nats``, run ``fn(app)``, close; errors become one stderr line.

    Returns ``fn``'s value, or None when interrupted with Ctrl-C (watch commands end so).

    Raises:
        click.ClickException: server unreachable, DAG/step not found, any EbindError or
            NATS error (click prints ``Error: <message>`` and exits with status 1).
    """
    configure_logging(ctx)
    from ebind.logging import redact

    try:
        return asyncio.run(_run(ctx, fn))
    except KeyboardInterrupt:
        return None
    except click.ClickException as exc:
        # No error line ever shows a password or token, nor an escape sequence: a task's
        # error text quotes whatever its producer passed.
        safe = printable(redact(exc.message))
        if safe == exc.message:
            raise
        raise click.ClickException(safe) from None
    except EbindError as exc:  # raised while connecting (e.g. server too old, bad settings)
        raise click.ClickException(printable(redact(_message(exc)))) from None
