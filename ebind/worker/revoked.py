"""A worker's view of revocations: a local set fed by a core subscription, plus a KV read.

The hot path costs no round trip for messages stored after the subscription started (any
revocation written since then is in the set); an older message is checked once against
the ``ebind-leases`` bucket, which covers a worker that just started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ebind.context import Context
from ebind.errors import InvalidName
from ebind.logging import get_logger
from ebind.revoke import REVOKED_KEYS, REVOKED_SUBJECTS, revoke_key, revoked_id, revoked_key_id
from ebind.streams import KV_LEASES

__all__ = ["Revocations"]

log = get_logger("ebind.worker.revoked")
# Clock skew between this host and the server that stamps stream times.
_SKEW_NS = 2_000_000_000
_MAX_IDS = 100_000
_ALWAYS_READ = 1 << 62


class Revocations:
    """Revoked ids this worker knows of, and the running attempts it can cancel."""

    def __init__(self, nc: Any) -> None:
        self._nc = nc
        self._ids: set[str] = set()
        self._running: dict[str, tuple[Context, asyncio.Task[Any] | None]] = {}
        self._sub: Any = None
        self._since_ns = _ALWAYS_READ

    async def subscribe(self) -> None:
        """Receive revocation writes from now on."""
        self._sub = await self._nc.subscribe(REVOKED_SUBJECTS, cb=self._on_revoked)

    async def load(self, js: Any) -> None:
        """Add the revocations already recorded; till then every task reads the bucket."""
        from ebind._denied import guarded

        try:
            keys = await guarded(
                js, f"$JS.API.CONSUMER.CREATE.KV_{KV_LEASES}", _recorded(js), "list revocations"
            )
        except Exception as exc:
            # A delayed task fires with a fresh stream time, so without the list every
            # message is checked against the bucket instead.
            self._since_ns = _ALWAYS_READ
            log.warning("worker.revocations_unlisted", error=str(exc))
            return
        except BaseException:
            await self.stop()
            raise
        for key in keys:
            task_id = revoked_key_id(key)
            if task_id is not None:
                self._ids.add(task_id)
        self._since_ns = time.time_ns() - _SKEW_NS

    async def stop(self) -> None:
        """Drop the subscription."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):  # a closed connection has dropped it already
                await sub.unsubscribe()

    async def _on_revoked(self, msg: Any) -> None:
        task_id = revoked_id(msg.subject)
        if task_id is None:
            return
        if len(self._ids) >= _MAX_IDS:
            # Bounded memory: from now on each message not in the set is read from the bucket.
            self._ids.clear()
            self._since_ns = _ALWAYS_READ
        self._ids.add(task_id)
        running = self._running.get(task_id)
        if running is None:
            return
        ctx, task = running
        ctx.revoked = True
        log.info("task.revoking", task_id=task_id, running=True)
        if task is not None:
            task.cancel()

    def surely_clear(self, task_id: str, stored_ns: int | None) -> bool:
        """Whether ``task_id`` is known not revoked without reading the bucket.

        True for a message stored after this worker began listening whose id it has not
        seen revoked; :meth:`is_revoked` gives the same answer for it, without a coroutine.
        """
        return stored_ns is not None and stored_ns >= self._since_ns and task_id not in self._ids

    async def is_revoked(self, task_id: str, stored_ns: int | None) -> bool:
        """Whether ``task_id`` is revoked; reads the bucket only for messages stored earlier."""
        if task_id in self._ids:
            return True
        if stored_ns is not None and stored_ns >= self._since_ns:
            return False
        from ebind._jsreq import requests_for

        try:
            key = revoke_key(task_id)
        except InvalidName:  # DAG step ids ("dag:step") cannot be revoked one by one
            return False
        try:
            found = await requests_for(self._nc).get_last(
                f"KV_{KV_LEASES}", f"$KV.{KV_LEASES}.{key}"
            )
        except Exception as exc:  # unreadable: run it rather than drop it on a guess
            log.warning("task.revoke_check_failed", task_id=task_id, error=str(exc))
            return False
        if found is None or (found.headers or {}).get("KV-Operation"):
            return False
        self._ids.add(task_id)
        return True

    @property
    def ids(self) -> frozenset[str]:
        """The revoked ids in the local set."""
        return frozenset(self._ids)

    def running(self, task_id: str, ctx: Context, task: asyncio.Task[Any] | None) -> None:
        """Note that ``task_id`` runs now (``task`` is cancelled on revoke when given)."""
        self._running[task_id] = (ctx, task)

    def finished(self, task_id: str) -> None:
        """Note that ``task_id`` no longer runs here."""
        self._running.pop(task_id, None)


async def _recorded(js: Any) -> list[str]:
    # Only our keys, with one batched direct get (nats-py's kv.keys() lists the whole
    # bucket and its watch can end a listing before the entries already sent are read).
    from ebind.workflow._kvread import list_last

    prefix = f"$KV.{KV_LEASES}."
    found = await list_last(js, f"KV_{KV_LEASES}", prefix + REVOKED_KEYS)
    return [m.subject[len(prefix) :] for m in found]
