"""Pure argument placeholders: Ref, ref_or_default and signal_ref markers, and resolve_args.

A step's arguments are stored as one JSON array. Placeholders are marker objects
(``{"__ebind_ref__": "__ebind_ref__", "step_id": ..., "mode": ...}`` and
``{"__ebind_signal__": "__ebind_signal__", "name": ...}``) that may stand anywhere inside
it, at any depth of lists and dicts. No IO happens here.

An object counts as a placeholder only when its own marker key holds
the marker string; a literal that merely contains the marker somewhere deeper is walked
into, not mistaken for a Ref.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import msgspec

from ebind.errors import ResolveError
from ebind.workflow.types import (
    REF_MARKER,
    SIGNAL_MARKER,
    Ref,
    RefMode,
    SignalRecord,
    SignalRef,
    StepStatus,
)

__all__ = [
    "NULL",
    "decode_ref",
    "decode_signal_ref",
    "find_refs",
    "is_ref",
    "is_signal_ref",
    "make_ref",
    "make_ref_or_default",
    "or_default_upstreams",
    "required_upstreams",
    "resolve_args",
    "signal_ref",
]

NULL = b"null"

_REF_NEEDLE = b'"' + REF_MARKER.encode() + b'"'
_SIGNAL_NEEDLE = b'"' + SIGNAL_MARKER.encode() + b'"'
_FAILED_UPSTREAM = frozenset({StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED})


class _RefWire(msgspec.Struct, kw_only=True, frozen=True):
    # The marker is required here (it has a default on Ref), so a plain object with a
    # "step_id" key never decodes as a Ref.
    marker: str = msgspec.field(name=REF_MARKER)
    step_id: str
    mode: RefMode = RefMode.REQUIRED
    default: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class _SignalWire(msgspec.Struct, kw_only=True, frozen=True):
    marker: str = msgspec.field(name=SIGNAL_MARKER)
    name: str


_encoder = msgspec.json.Encoder()
_ref_decoder = msgspec.json.Decoder(_RefWire)
_signal_decoder = msgspec.json.Decoder(_SignalWire)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_raw_dict_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])

Placeholder = Ref | SignalRef


def make_ref(step_id: str) -> Ref:
    """A required-mode reference to ``step_id``'s result."""
    return Ref(step_id=step_id, mode=RefMode.REQUIRED)


def make_ref_or_default(step_id: str, default_json: bytes) -> Ref:
    """An or_default reference: ``default_json`` stands in if the upstream fails or is skipped."""
    return Ref(step_id=step_id, mode=RefMode.OR_DEFAULT, default=msgspec.Raw(default_json or NULL))


def signal_ref(name: str) -> SignalRef:
    """A placeholder for the payload of signal ``name``."""
    return SignalRef(name=name)


def _bytes(raw: bytes | msgspec.Raw) -> bytes:
    return bytes(raw).strip() if isinstance(raw, msgspec.Raw) else raw.strip()


def _marker_of(raw: bytes) -> str | None:
    """Which marker key an object's own top level carries, if any."""
    if not raw.startswith(b"{"):
        return None
    has_ref, has_sig = _REF_NEEDLE in raw, _SIGNAL_NEEDLE in raw
    if not (has_ref or has_sig):
        return None
    try:
        obj = _raw_dict_decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    # Signal first: an object carrying both markers is a signal placeholder.
    sig = obj.get(SIGNAL_MARKER)
    if sig is not None and _bytes(sig) == _SIGNAL_NEEDLE:
        return SIGNAL_MARKER
    ref = obj.get(REF_MARKER)
    if ref is not None and _bytes(ref) == _REF_NEEDLE:
        return REF_MARKER
    return None


def _to_ref(raw: bytes) -> Ref:
    w = _ref_decoder.decode(raw)
    if not w.step_id:
        raise msgspec.ValidationError("empty step_id")
    return Ref(step_id=w.step_id, mode=w.mode, default=w.default)


def _to_signal_ref(raw: bytes) -> SignalRef:
    w = _signal_decoder.decode(raw)
    if not w.name:
        raise msgspec.ValidationError("empty signal name")
    return SignalRef(name=w.name)


def _decode_placeholder(raw: bytes | msgspec.Raw, marker: str) -> Placeholder | None:
    data = _bytes(raw)
    if _marker_of(data) != marker:
        return None
    try:
        return _to_ref(data) if marker == REF_MARKER else _to_signal_ref(data)
    except msgspec.DecodeError:
        return None


def decode_ref(raw: bytes | msgspec.Raw) -> Ref | None:
    """Parse ``raw`` as a Ref envelope, or None if it is not a (well-formed) one."""
    got = _decode_placeholder(raw, REF_MARKER)
    return got if isinstance(got, Ref) else None


def is_ref(raw: bytes | msgspec.Raw) -> bool:
    """Whether ``raw`` is a Ref envelope (fast marker check, then a real decode)."""
    return _REF_NEEDLE in _bytes(raw) and decode_ref(raw) is not None


def decode_signal_ref(raw: bytes | msgspec.Raw) -> SignalRef | None:
    """Parse ``raw`` as a SignalRef envelope, or None if it is not a (well-formed) one."""
    got = _decode_placeholder(raw, SIGNAL_MARKER)
    return got if isinstance(got, SignalRef) else None


def is_signal_ref(raw: bytes | msgspec.Raw) -> bool:
    """Whether ``raw`` is a SignalRef envelope (fast marker check, then a real decode)."""
    return _SIGNAL_NEEDLE in _bytes(raw) and decode_signal_ref(raw) is not None


# --- walking raw JSON -------------------------------------------------------------------


def _children(raw: bytes) -> list[msgspec.Raw] | dict[str, msgspec.Raw] | None:
    if raw.startswith(b"["):
        return _raw_list_decoder.decode(raw)
    if raw.startswith(b"{"):
        return _raw_dict_decoder.decode(raw)
    return None


def _walk_raw(raw: bytes) -> Iterator[Placeholder]:
    """Yield every well-formed placeholder inside ``raw``, depth first in document order."""
    if _REF_NEEDLE not in raw and _SIGNAL_NEEDLE not in raw:
        return  # the common case: no marker anywhere, nothing to decode
    marker = _marker_of(raw)
    if marker is not None:
        # Malformed placeholders are left for resolve_args to report with context.
        with contextlib.suppress(msgspec.DecodeError):
            yield _to_ref(raw) if marker == REF_MARKER else _to_signal_ref(raw)
        return
    try:
        kids = _children(raw)
    except msgspec.DecodeError:
        return
    values = kids.values() if isinstance(kids, dict) else kids or ()
    for child in values:
        yield from _walk_raw(_bytes(child))


def _walk_value(value: object) -> Iterator[Placeholder]:
    if isinstance(value, Ref | SignalRef):
        yield value
    elif isinstance(value, msgspec.Raw):
        yield from _walk_raw(_bytes(value))
    elif isinstance(value, dict):
        for v in value.values():
            yield from _walk_value(v)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from _walk_value(v)


def find_refs(value: object) -> list[Placeholder]:
    """Every Ref and SignalRef inside ``value``, depth first in order, duplicates kept.

    ``value`` is a Python value (Refs nested in lists, tuples and dicts) or raw JSON:
    top-level ``bytes``/``bytearray`` and ``msgspec.Raw`` anywhere are parsed as JSON.
    Malformed placeholders inside raw JSON are ignored here (resolve_args reports them).
    """
    if isinstance(value, bytes | bytearray):
        return list(_walk_raw(bytes(value).strip()))
    return list(_walk_value(value))


def required_upstreams(args: object) -> list[str]:
    """Step ids referenced in required mode inside ``args``, deduped, in order."""
    refs = find_refs(args)
    ids = (r.step_id for r in refs if isinstance(r, Ref) and r.mode is RefMode.REQUIRED)
    return list(dict.fromkeys(ids))


def or_default_upstreams(args: object) -> list[str]:
    """Step ids referenced in or_default mode inside ``args``, deduped, in order."""
    refs = find_refs(args)
    ids = (r.step_id for r in refs if isinstance(r, Ref) and r.mode is RefMode.OR_DEFAULT)
    return list(dict.fromkeys(ids))


# --- resolution ---------------------------------------------------------------------------


class _Resolver:
    """Substitutes placeholders in one step's raw args; every check is pure."""

    def __init__(
        self,
        step_id: str,
        results: Mapping[str, bytes],
        statuses: Mapping[str, StepStatus],
        signals: Mapping[str, SignalRecord] | None,
    ) -> None:
        self.step_id = step_id
        self.results = results
        self.statuses = statuses
        self.signals = signals or {}

    def error(self, upstream: str, what: str) -> ResolveError:
        who = f"step {self.step_id!r}" if self.step_id else "step"
        return ResolveError(
            f"resolve args of {who}: {what}", step_id=self.step_id, upstream=upstream
        )

    def should_skip(self, placeholders: list[Placeholder]) -> bool:
        # A required ref to a failed/skipped/canceled upstream dooms the step no matter
        # what else its args hold, so it wins over every resolution error.
        return any(
            isinstance(p, Ref)
            and p.mode is RefMode.REQUIRED
            and self.statuses.get(p.step_id) in _FAILED_UPSTREAM
            for p in placeholders
        )

    def ref_value(self, ref: Ref) -> bytes:
        status = self.statuses.get(ref.step_id)
        if status is StepStatus.DONE:
            result = self.results.get(ref.step_id)
            if result is None:
                raise self.error(ref.step_id, f"upstream {ref.step_id!r} is done but has no result")
            # An error-only handler's result is JSON null; empty bytes are legacy data.
            return result.strip() or NULL
        if status in _FAILED_UPSTREAM and ref.mode is RefMode.OR_DEFAULT:
            default = ref.default
            return NULL if isinstance(default, msgspec.UnsetType) else _bytes(default) or NULL
        shown = status.value if status is not None else "unknown step"
        raise self.error(ref.step_id, f"upstream {ref.step_id!r} not terminal (status={shown})")

    def signal_value(self, sref: SignalRef) -> bytes:
        rec = self.signals.get(sref.name)
        if rec is None:
            raise self.error(sref.name, f"signal {sref.name!r} not delivered")
        payload = rec.payload
        return NULL if payload is None else _bytes(payload) or NULL

    def substitute(self, raw: bytes) -> bytes:
        if _REF_NEEDLE not in raw and _SIGNAL_NEEDLE not in raw:
            return raw  # literals stay byte-for-byte unchanged
        marker = _marker_of(raw)
        if marker is not None:
            try:
                if marker == REF_MARKER:
                    return self.ref_value(_to_ref(raw))
                return self.signal_value(_to_signal_ref(raw))
            except msgspec.DecodeError as exc:
                raise self.error("", f"malformed placeholder {raw[:200]!r}: {exc}") from exc
        kids = _children(raw)
        if isinstance(kids, dict):
            return _encoder.encode({k: self._sub_raw(v) for k, v in kids.items()})
        if kids is not None:
            return _encoder.encode([self._sub_raw(v) for v in kids])
        return raw

    def _sub_raw(self, child: msgspec.Raw) -> msgspec.Raw:
        data = _bytes(child)
        out = self.substitute(data)
        return child if out is data else msgspec.Raw(out)


def resolve_args(
    raw_args: bytes | msgspec.Raw,
    results: Mapping[str, bytes],
    statuses: Mapping[str, StepStatus],
    signals: Mapping[str, SignalRecord] | None = None,
    *,
    step_id: str = "",
) -> tuple[bytes, bool]:
    """Substitute every Ref and SignalRef in the JSON array ``raw_args``; returns (resolved, skip).

    Refs to a ``done`` upstream take its stored result; or_default refs to a failed,
    skipped or canceled upstream take their default (``null`` if none); a required ref to
    such an upstream returns ``(b"", True)``: the caller marks the step skipped. SignalRefs
    take the signal's payload (``null`` if empty). Literals are unchanged.

    Raises:
        ResolveError: an upstream is done without a result or not terminal, a signal is not
            delivered, a placeholder is malformed, or ``raw_args`` is not a JSON array.
    """
    data = _bytes(raw_args)
    resolver = _Resolver(step_id, results, statuses, signals)
    try:
        _raw_list_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise resolver.error("", f"args must be a JSON array: {exc}") from exc
    placeholders = list(_walk_raw(data))
    if resolver.should_skip(placeholders):
        return b"", True
    return resolver.substitute(data), False
