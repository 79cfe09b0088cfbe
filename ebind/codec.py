"""Pure argument and result codec: Python values <-> JSON, validated against annotations.

The producer encodes with :func:`encode_args` (keyword arguments bound to positions,
each value checked by decoding it exactly as a worker will) and the worker decodes with
:func:`decode_args`, so what the client accepts is what the worker accepts.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import msgspec

from ebind.errors import EbindError, InvalidArguments
from ebind.signature import NO_DEFAULT, HandlerSpec, Param

__all__ = [
    "ArgumentError",
    "bind_args",
    "decode_args",
    "decode_result",
    "encode_args",
    "encode_raw_args",
    "encode_result",
]

_encoder = msgspec.json.Encoder()
_raw_list = msgspec.json.Decoder(list[msgspec.Raw] | None)
_any = msgspec.json.Decoder()
_PATH_RE = re.compile(r" - at `\$(.*)`$")
_MAX_SHOWN = 60
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


class ArgumentError(EbindError):
    """A worker-side codec failure; ``kind`` is decode, arg_count, arg_type or encode."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _expected(spec: HandlerSpec) -> str:
    # Built only when an error is raised: describe_params() is too costly per call.
    return f"task {spec.name!r} takes ({spec.describe_params()})"


def _bind(spec: HandlerSpec, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Any]:
    params = spec.params
    if len(args) > len(params):
        raise InvalidArguments(
            f"{_expected(spec)}: expected at most {len(params)} positional argument(s), "
            f"got {len(args)}",
            task_name=spec.name,
        )
    by_name = spec.positions
    values: list[Any] = list(args) + [p.default for p in params[len(args) :]]
    for key, value in kwargs.items():
        index = by_name.get(key)
        if index is None:
            close = difflib.get_close_matches(key, list(by_name), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidArguments(
                f"{_expected(spec)}: unknown keyword argument {key!r}{hint}",
                task_name=spec.name,
                parameter=key,
            )
        if index < len(args):
            raise InvalidArguments(
                f"{_expected(spec)}: got multiple values for argument {key!r}",
                task_name=spec.name,
                parameter=key,
            )
        values[index] = value
    missing = [p.name for p, v in zip(params, values, strict=True) if v is NO_DEFAULT]
    if missing:
        raise InvalidArguments(
            f"{_expected(spec)}: missing required argument(s) {', '.join(map(repr, missing))}",
            task_name=spec.name,
            parameter=missing[0],
        )
    return values


def bind_args(
    spec: HandlerSpec, args: Sequence[Any], kwargs: Mapping[str, Any] | None = None
) -> list[Any]:
    """Bind positional and keyword arguments to ``spec``'s parameters, defaults filled in.

    Returns one value per parameter, in order, without validating or encoding them
    (``encode_args`` does both). Raises InvalidArguments for too many positional
    arguments, an unknown or repeated keyword, or a missing required argument.
    """
    return _bind(spec, args, kwargs or _NO_KWARGS)


def _encode_one(spec: HandlerSpec, param: Param, value: Any) -> bytes:
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArguments(
            f"task {spec.name!r}: argument {param.name!r} = {_shown(value)} cannot be encoded "
            f"as JSON ({exc}); pass builtins, msgspec Structs, dataclasses or TypedDicts",
            task_name=spec.name,
            parameter=param.name,
        ) from exc


def encode_args(spec: HandlerSpec, args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> bytes:
    """Bind, validate and encode arguments as a JSON array; raises InvalidArguments."""
    values: Sequence[Any] = args
    if kwargs or len(args) != len(spec.params):  # else all positional: nothing to bind
        values = _bind(spec, args, kwargs or _NO_KWARGS)
    if not values:
        return b"[]"
    parts: list[bytes] = []
    for param, validator, value in zip(spec.params, spec.validators, values, strict=True):
        raw = _encode_one(spec, param, value)
        if validator is None:  # annotated Any: every JSON value is accepted
            parts.append(raw)
            continue
        try:
            validator.decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidArguments(
                f"task {spec.name!r}: argument {param.name!r} expects "
                f"{_type_name(param.annotation)}, got {_shown(value)} ({exc})",
                task_name=spec.name,
                parameter=param.name,
            ) from exc
        parts.append(raw)
    return b"[" + b",".join(parts) + b"]"


def encode_raw_args(name: str, args: Sequence[Any]) -> bytes:
    """Encode positional arguments for a task whose signature is unknown here (no validation)."""
    try:
        return _encoder.encode(list(args))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArguments(
            f"task {name!r}: arguments cannot be encoded as JSON ({exc})", task_name=name
        ) from exc


def decode_args(spec: HandlerSpec, payload: bytes | msgspec.Raw) -> list[Any]:
    """Decode a payload into the handler's positional arguments; raises ArgumentError."""
    params = spec.params
    # msgspec decodes from any buffer (Raw included), so the payload is never copied.
    size = len(payload)
    if size == 2 and not params and bytes(payload) == b"[]":
        return []  # a task without parameters
    raws: list[msgspec.Raw] | None = None
    if size:
        try:
            raws = _raw_list.decode(payload)  # JSON null (any whitespace) decodes as None
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise ArgumentError("decode", f"payload is not a JSON array: {exc}") from exc
    if raws is None:
        raws = []
    if not spec.required_count <= len(raws) <= len(params):
        raise ArgumentError(
            "arg_count",
            f"task {spec.name!r} expects {len(params)} argument(s) "
            f"({spec.describe_params()}), got {len(raws)}",
        )
    values: list[Any] = []
    for i, (param, decoder) in enumerate(zip(spec.params, spec.decoders, strict=True)):
        if i >= len(raws):
            values.append(param.default)
            continue
        try:
            values.append(decoder.decode(raws[i]))
        except msgspec.ValidationError as exc:
            raise ArgumentError(
                "arg_type",
                f"argument {i} {param.name!r} ({_type_name(param.annotation)}): {exc}",
            ) from exc
        except (msgspec.DecodeError, RecursionError) as exc:
            raise ArgumentError("decode", f"argument {i} {param.name!r}: {exc}") from exc
    return values


def encode_result(spec: HandlerSpec, value: Any) -> bytes:
    """JSON-encode a handler's return value; raises ArgumentError(kind ``encode``)."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ArgumentError(
            "encode",
            f"task {spec.name!r} returned {_shown(value)}, which cannot be encoded as JSON "
            f"({exc}); return builtins, msgspec Structs, dataclasses or TypedDicts",
        ) from exc


def decode_result(tp: Any, raw: bytes | None) -> Any:
    """Decode a result into ``tp`` (plain JSON when ``tp`` is Any); None for no result."""
    if raw is None or raw == b"":
        return None
    if tp is Any:
        return _any.decode(raw)
    return msgspec.json.decode(raw, type=tp)
