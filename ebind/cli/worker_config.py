"""What ``ebind worker`` takes from the App: its worker defaults and the contrib middlewares.

Flags given on the command line win; a flag left at its default yields to the App's
``worker_options`` (filled by ``app.config_from_object`` / ``config_from_env``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

__all__ = ["contrib_middleware", "with_app_defaults"]

# Worker option -> the click parameter that sets it on `ebind worker`.
# The Worker calls the process pool's size ``processes``; `ebind worker` says --pool-size.
_PARAM_OF = {"scheduler": "no_scheduler", "processes": "pool_size"}


def with_app_defaults(
    ctx: click.Context, app_options: Mapping[str, Any], options: Mapping[str, Any]
) -> dict[str, Any]:
    """``options`` from the flags, with the App's defaults wherever a flag was not given."""
    out = dict(options)
    for key, value in app_options.items():
        source = ctx.get_parameter_source(_PARAM_OF.get(key, key))
        if source is None or source is click.core.ParameterSource.DEFAULT:
            out[key] = value
    return out


def contrib_middleware(app: Any, *, otel: bool) -> list[Any]:
    """The shipped middlewares switched on by flags (``--otel``), outermost first.

    Raises:
        click.ClickException: the extra a flag needs is not installed (the message names it).
    """
    chosen: list[Any] = []
    if otel:
        try:
            from ebind.contrib.otel import instrument_app, otel_middleware
        except ImportError as exc:
            raise click.ClickException(str(exc)) from None
        instrument_app(app)  # tasks this worker enqueues carry the trace on
        chosen.append(otel_middleware())
    return chosen
