"""Claims: the targets a worker executes, static or re-read at runtime.

A worker always claims its own ``worker_id`` and its concrete target
``worker:<worker_id>``. ``claims`` given to the worker may be an iterable of strings or a
callable (sync or async) returning one; a callable is re-read every few seconds so claims
can move between workers while they run.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable

from ebind.errors import InvalidName
from ebind.logging import get_logger
from ebind.streams import check_target

__all__ = ["ClaimSource", "Claims", "concrete_target", "normalize_claims"]

ClaimSource = Iterable[str] | Callable[[], Iterable[str] | Awaitable[Iterable[str]]]
"""A fixed list of claims, or a function (sync or async) returning the current list."""

log = get_logger("ebind.worker")


def concrete_target(worker_id: str) -> str:
    """The per-worker target, ``worker:<worker_id>``."""
    return f"worker:{worker_id}"


def normalize_claims(claims: Iterable[str], worker_id: str) -> frozenset[str]:
    """Own ids plus ``claims``: whitespace-trimmed, empties dropped, each validated."""
    if isinstance(claims, str):
        # A bare string would otherwise be read as one claim per character.
        claims = [claims]
    out = {worker_id, concrete_target(worker_id)}
    for raw in claims:
        if not isinstance(raw, str):  # a claims callable may return anything
            raise InvalidName(f"claims must be strings, got {raw!r}", kind="target")
        claim = raw.strip()
        if not claim:
            continue
        out.add(check_target(claim))
    return frozenset(out)


class Claims:
    """Resolves a :data:`ClaimSource` to the current claim set."""

    def __init__(self, source: ClaimSource, worker_id: str) -> None:
        self._source = source
        self._worker_id = worker_id
        self._current = normalize_claims((), worker_id)
        self.dynamic = callable(source)
        if not self.dynamic:
            self._current = normalize_claims(source, worker_id)  # type: ignore[arg-type]

    @property
    def current(self) -> frozenset[str]:
        """The last claim set read."""
        return self._current

    async def refresh(self, *, strict: bool = False) -> frozenset[str]:
        """Re-read a callable source; on error keep the previous set (raise when ``strict``)."""
        if not self.dynamic:
            return self._current
        try:
            value = self._source()  # type: ignore[operator]
            if inspect.isawaitable(value):
                value = await value
            self._current = normalize_claims(value, self._worker_id)
        except Exception:
            if strict:
                raise
            log.exception("worker.claims_refresh_failed", worker_id=self._worker_id)
        return self._current
