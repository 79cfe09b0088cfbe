"""Step argument binding and validation with Refs and SignalRefs allowed in any position.

``codec.encode_args`` validates every argument against the handler's annotations, which a
placeholder (whose value is only known at dispatch) would fail. Here keyword arguments are
bound to positions with the codec's own binder (same messages), and every argument that
holds no placeholder is validated with the handler's per-parameter decoder, exactly as
the worker will decode it; arguments holding a placeholder at any depth are checked when
the worker decodes the resolved payload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from ebind.codec import bind_args
from ebind.errors import InvalidArguments
from ebind.signature import HandlerSpec
from ebind.streams import check_task_name
from ebind.workflow.ref import find_refs

__all__ = ["bind_step_args", "spec_of", "task_name_of"]

_enc = msgspec.json.Encoder()


def task_name_of(fn: object) -> str:
    """The registered task name of a handle or a name string."""
    if isinstance(fn, str):
        return check_task_name(fn)
    name = getattr(fn, "name", None)
    if isinstance(name, str) and name:
        return name
    raise InvalidArguments(
        f"step function must be a task handle (decorated with @app.task) or a registered "
        f"task name, got {fn!r}"
    )


def spec_of(fn: object) -> HandlerSpec | None:
    """The HandlerSpec behind a task handle (None for a bare name)."""
    if isinstance(fn, HandlerSpec):
        return fn
    spec = getattr(fn, "spec", None)
    return spec if isinstance(spec, HandlerSpec) else None


def bind_step_args(fn: object, args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> list[Any]:
    """Positional argument list for the step; validated when the handler is known.

    Raises:
        InvalidArguments: wrong arity, unknown keyword, or a literal of the wrong type.
    """
    name = task_name_of(fn)
    spec = spec_of(fn)
    if spec is None:
        if kwargs:
            raise InvalidArguments(
                f"task {name!r}: keyword arguments need the task handle, not just its name",
                task_name=name,
            )
        for i, value in enumerate(args):
            _encode(name, f"#{i}", value)
        return list(args)
    values = bind_args(spec, args, kwargs)
    decoders = spec.decoders or tuple(msgspec.json.Decoder(p.annotation) for p in spec.params)
    for param, decoder, value in zip(spec.params, decoders, values, strict=True):
        raw = _encode(name, param.name, value)
        if find_refs(value):
            continue
        try:
            decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidArguments(
                f"task {name!r}: argument {param.name!r} expects {param.annotation!r}, "
                f"got {value!r} ({exc})",
                task_name=name,
                parameter=param.name,
            ) from exc
    return values


def _encode(task: str, param: str, value: Any) -> bytes:
    try:
        return _enc.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArguments(
            f"task {task!r}: argument {param!r} = {value!r} cannot be encoded as JSON ({exc})",
            task_name=task,
            parameter=param,
        ) from exc
