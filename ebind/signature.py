"""Pure handler inspection: a function becomes a HandlerSpec, or a clear registration error.

Every check that can run when ``@app.task`` is applied lives here (names, retry policies,
timeouts, the optional leading ``Context`` parameter), so nothing fails later on a worker
for a reason that was visible at definition time.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgspec

from ebind.errors import InvalidArguments, InvalidName
from ebind.limits.concurrency_rules import Concurrency
from ebind.ratelimit import Rate, parse_rate
from ebind.retry import RetryPolicy
from ebind.streams import check_task_name

__all__ = ["NO_DEFAULT", "HandlerSpec", "Param", "default_name", "inspect_handler"]

NO_DEFAULT: Any = inspect.Parameter.empty
"""Marks a parameter without a default."""


@dataclass(frozen=True, slots=True)
class Param:
    """One wire parameter of a handler (the Context parameter is never one)."""

    name: str
    annotation: Any = Any
    default: Any = NO_DEFAULT

    @property
    def required(self) -> bool:
        """True when the caller must supply this argument."""
        return self.default is NO_DEFAULT


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """Everything ebind knows about a registered handler, fixed at registration time."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    wants_context: bool
    params: tuple[Param, ...]
    return_type: Any = Any
    timeout: float | None = None
    retry: RetryPolicy | None = None
    dont_retry: tuple[type[BaseException], ...] = ()
    aliases: tuple[str, ...] = ()
    pool: str | None = None
    """Where a sync handler runs: "process" (a child), "thread", or None (the worker's pool)."""
    rate_limit: Rate | None = None
    """Cluster-wide limit on how often the task starts (per rate key when calls give one)."""
    rate_key: str | None = None
    """The parameter whose value is the rate key of a call."""
    concurrency: Concurrency | None = None
    """The cluster-wide limit on running calls per key, if any."""
    # One decoder per parameter, built once so the worker never rebuilds them per task.
    decoders: tuple[msgspec.json.Decoder[Any], ...] = field(default=(), repr=False, compare=False)
    # Derived in __post_init__ so the per-call codec paths never recompute them.
    required_count: int = field(init=False, repr=False, compare=False)
    """How many leading parameters have no default."""
    positions: Mapping[str, int] = field(init=False, repr=False, compare=False)
    """Parameter name -> position, for binding keyword arguments."""
    validators: tuple[msgspec.json.Decoder[Any] | None, ...] = field(
        init=False, repr=False, compare=False
    )
    """``decoders`` with None where the annotation accepts any JSON (nothing to validate)."""

    def __post_init__(self) -> None:
        # frozen: object.__setattr__ is the documented way to fill derived fields.
        set_ = object.__setattr__
        set_(self, "required_count", sum(1 for p in self.params if p.required))
        set_(self, "positions", MappingProxyType({p.name: i for i, p in enumerate(self.params)}))
        set_(
            self,
            "validators",
            tuple(
                None if _accepts_any_json(p.annotation) else d
                for p, d in zip(self.params, self.decoders, strict=False)
            ),
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The primary name followed by every alias."""
        return (self.name, *self.aliases)

    def describe_params(self) -> str:
        """``image_id, width=800`` — for error messages."""
        return ", ".join(p.name if p.required else f"{p.name}={p.default!r}" for p in self.params)


def _accepts_any_json(annotation: Any) -> bool:
    # Unresolved string annotations decode as Any too (see _decoder).
    return annotation is Any or annotation is object or isinstance(annotation, str)


def default_name(fn: Callable[..., Any]) -> str:
    """``<module>.<qualname>``; raises InvalidArguments for nested functions and lambdas."""
    module = getattr(fn, "__module__", None) or "__main__"
    qualname = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", ""))
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise InvalidArguments(
            f"cannot derive a task name for {qualname!r}: functions defined inside another "
            "function or lambdas have no stable import path; define it at module level or "
            "pass name= to @app.task",
            parameter="name",
        )
    return f"{module}.{qualname}"


def _is_context_type(annotation: Any) -> bool:
    # Compared by identity of module and name so this pure module never imports ebind.context.
    if isinstance(annotation, str):
        return annotation in ("Context", "ebind.Context", "ebind.context.Context")
    return (
        isinstance(annotation, type)
        and annotation.__module__ == "ebind.context"
        and annotation.__qualname__ == "Context"
    )


def _type_hints(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=False)
    except Exception as exc:
        # Silently dropping to Any would turn off validation for every parameter.
        raise InvalidArguments(
            f"task {name!r}: cannot resolve the annotations of {fn.__qualname__} ({exc}); "
            "define the types at module level (or import them outside TYPE_CHECKING)",
            task_name=name,
        ) from exc


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidArguments(
            f"timeout must be a number of seconds, got {type(timeout).__name__}",
            parameter="timeout",
        )
    if not math.isfinite(timeout) or timeout <= 0:
        raise InvalidArguments(
            f"timeout must be a positive number of seconds, got {timeout!r}; "
            "use None for no timeout",
            parameter="timeout",
        )
    return float(timeout)


def _check_retry(retry: object) -> RetryPolicy | None:
    if retry is None or isinstance(retry, RetryPolicy):
        return retry
    raise InvalidArguments(
        f"retry must be an ebind.RetryPolicy or None, got {type(retry).__name__}; "
        "e.g. retry=RetryPolicy(maximum_attempts=3)",
        parameter="retry",
    )


def _check_dont_retry(dont_retry: Iterable[object]) -> tuple[type[BaseException], ...]:
    if isinstance(dont_retry, type):
        dont_retry = (dont_retry,)
    out: list[type[BaseException]] = []
    for exc in dont_retry:
        if not (isinstance(exc, type) and issubclass(exc, BaseException)):
            raise InvalidArguments(
                f"dont_retry must hold exception classes, got {exc!r}; "
                "e.g. dont_retry=(ValueError,)",
                parameter="dont_retry",
            )
        out.append(exc)
    return tuple(out)


def _check_aliases(name: str, aliases: Iterable[str]) -> tuple[str, ...]:
    if isinstance(aliases, str):
        aliases = (aliases,)
    seen: list[str] = []
    for alias in aliases:
        check_task_name(alias)
        if alias == name or alias in seen:
            raise InvalidArguments(
                f"alias {alias!r} of task {name!r} is listed twice or equals the task name; "
                "remove the duplicate",
                task_name=name,
                parameter="aliases",
            )
        seen.append(alias)
    return tuple(seen)


def _params(name: str, fn: Callable[..., Any]) -> tuple[bool, tuple[Param, ...], Any]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise InvalidArguments(f"task {name!r}: cannot read the signature: {exc}") from exc
    hints = _type_hints(name, fn)
    plist = list(sig.parameters.values())
    wants_context = bool(plist) and _is_context_type(hints.get(plist[0].name, plist[0].annotation))
    if wants_context:
        plist = plist[1:]
    params: list[Param] = []
    for p in plist:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY):
            raise InvalidArguments(
                f"task {name!r}: parameter {p.name!r} is {p.kind.description}; task arguments "
                "travel as a positional JSON array, so make it a regular parameter",
                task_name=name,
                parameter=p.name,
            )
        if _is_context_type(hints.get(p.name, p.annotation)):
            raise InvalidArguments(
                f"task {name!r}: the Context parameter {p.name!r} must be the first parameter",
                task_name=name,
                parameter=p.name,
            )
        params.append(Param(p.name, hints.get(p.name, Any), p.default))
    return wants_context, tuple(params), hints.get("return", Any)


def _decoder(name: str, param: Param) -> msgspec.json.Decoder[Any]:
    annotation = Any if isinstance(param.annotation, str) else param.annotation
    try:
        return msgspec.json.Decoder(annotation)
    except TypeError as exc:
        raise InvalidArguments(
            f"task {name!r}: parameter {param.name!r} has type {param.annotation!r}, which "
            f"cannot be carried as JSON ({exc}); use builtins, msgspec Structs, dataclasses "
            "or TypedDicts",
            task_name=name,
            parameter=param.name,
        ) from exc


def inspect_handler(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    aliases: Iterable[str] = (),
    dont_retry: Iterable[type[BaseException]] = (),
    pool: str | None = None,
    rate_limit: str | None = None,
    rate_key: str | None = None,
) -> HandlerSpec:
    """Check ``fn`` and its options and describe it; raises InvalidArguments on any problem."""
    if not callable(fn):
        raise InvalidArguments(f"@app.task needs a function, got {type(fn).__name__}")
    task_name = check_task_name(name) if name is not None else _derived_name(fn)
    wants_context, params, return_type = _params(task_name, fn)
    is_async = inspect.iscoroutinefunction(fn)
    return HandlerSpec(
        name=task_name,
        fn=fn,
        is_async=is_async,
        wants_context=wants_context,
        params=params,
        return_type=Any if isinstance(return_type, str) else return_type,
        timeout=_check_timeout(timeout),
        retry=_check_retry(retry),
        dont_retry=_check_dont_retry(dont_retry),
        aliases=_check_aliases(task_name, aliases),
        pool=_check_pool(pool, is_async, task_name),
        decoders=tuple(_decoder(task_name, p) for p in params),
        rate_limit=_check_rate(rate_limit, rate_key, task_name),
        rate_key=_check_rate_key(rate_key, params, task_name),
    )


def _check_rate(rate_limit: object, rate_key: object, task_name: str) -> Rate | None:
    if rate_limit is None:
        if rate_key is not None:
            raise InvalidArguments(
                f"task {task_name!r}: rate_key= needs a rate_limit= to apply",
                task_name=task_name,
                parameter="rate_key",
            )
        return None
    try:
        return parse_rate(rate_limit)
    except InvalidArguments as exc:
        raise InvalidArguments(
            f"task {task_name!r}: {exc}", task_name=task_name, parameter="rate_limit"
        ) from None


def _check_rate_key(rate_key: object, params: tuple[Param, ...], task_name: str) -> str | None:
    if rate_key is None:
        return None
    names = [p.name for p in params]
    if not isinstance(rate_key, str) or rate_key not in names:
        raise InvalidArguments(
            f"task {task_name!r}: rate_key={rate_key!r} must name one of its parameters "
            f"({', '.join(names) or 'it has none'})",
            task_name=task_name,
            parameter="rate_key",
        )
    return rate_key


def _check_pool(pool: object, is_async: bool, task_name: str) -> str | None:
    from ebind.pools import check_task_pool  # pure, like this module

    try:
        return check_task_pool(pool, is_async=is_async, task_name=task_name)
    except ValueError as exc:
        raise InvalidArguments(str(exc), task_name=task_name, parameter="pool") from None


def _derived_name(fn: Callable[..., Any]) -> str:
    derived = default_name(fn)
    try:
        return check_task_name(derived)
    except InvalidName as exc:
        raise InvalidName(
            f"the derived task name {derived!r} is not usable: {exc}; pass name= to @app.task",
            kind="task name",
            value=derived,
        ) from exc
