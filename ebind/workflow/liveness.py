"""Worker liveness for the reconciliation sweep: who is still running which steps.

Design: the StepHook of every process that runs DAG steps keeps a small record
per worker id, ``alive.<b64url(worker_id)>`` in the ``ebind-leases`` bucket, rewritten
every ``interval`` seconds while the process lives, listing the steps it is running. The
sweep decides a ``running`` step is orphaned when its worker's record is missing, or has
not changed for ``ttl`` seconds of the *reader's* monotonic clock (so clock skew between
hosts does not matter), or no longer lists the step. Only then is the step re-enqueued as
a new generation; a live worker's long step is left alone, and JetStream's own redelivery
after ``ack_wait`` still handles the ordinary crash.

Each write carries a per-message TTL (``Nats-TTL``, twice the reader's ``ttl``), so the
record of a worker that died disappears on its own instead of staying in the bucket; and
what a record lists is bounded (see :mod:`ebind.workflow.announce`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

import msgspec

from ebind._aio import raise_if_cancelling
from ebind.logging import get_logger
from ebind.streams import KV_LEASES, b64_token
from ebind.validate import too_deep
from ebind.workflow.announce import (
    DEFAULT_ANNOUNCE_LIMIT,
    Announced,
    Token,
    announce_limit,
    announced_steps,
    expired_keys,
    release_until,
)

__all__ = ["Announcer", "Liveness", "LivenessView", "MemLiveness", "NatsLiveness"]

_log = get_logger("ebind.workflow.liveness")


class _Beat(msgspec.Struct, kw_only=True):
    worker_id: str
    steps: list[str] = []
    at: float = 0.0


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(_Beat)
_TTL_HEADER = "Nats-TTL"
RECORD_TTL_FACTOR = 2.0
"""A record lives this many reader TTLs after its last write: the sweep has judged the
worker dead (a TTL of silence) well before the server removes its record."""


_MAX_RECORD = 1024 * 1024
"""Bytes a liveness record may have (a worker lists at most its concurrency of steps)."""


def _beat_or_none(data: bytes, worker_id: str) -> _Beat | None:
    """The record in ``data`` if ``worker_id`` could have written it, else None (logged)."""
    problem = ""
    beat: _Beat | None = None
    if len(data) > _MAX_RECORD or too_deep(data):
        problem = f"{len(data)} bytes, or nested too deep"
    else:
        try:
            beat = _dec.decode(data)
        except Exception as exc:  # any bytes at all
            problem = str(exc)
    if beat is not None and beat.worker_id != worker_id:
        problem, beat = f"names worker {beat.worker_id[:64]!r}", None
    if beat is None:
        _log.warning("liveness.bad_record", worker_id=worker_id, problem=problem[:300])
    return beat


def record_ttl_header(seconds: float) -> str:
    """``Nats-TTL`` value for ``seconds`` (a Go duration in milliseconds, at least 1 s)."""
    return f"{max(round(seconds * 1000), 1000)}ms"


class LivenessView(msgspec.Struct, kw_only=True, frozen=True):
    """What the sweep knows about one worker: whether it lives and the steps it runs."""

    alive: bool
    steps: frozenset[str] = frozenset()
    known: bool = True


class Liveness(Protocol):
    """Where step-running processes announce themselves and the sweep looks them up."""

    async def beat(self, worker_id: str, steps: list[str]) -> None:
        """Announce that ``worker_id`` lives and runs ``steps`` (``<dag>:<step>``)."""
        ...

    async def view(self, worker_id: str) -> LivenessView:
        """The sweep's judgement of ``worker_id``."""
        ...


class _Observer:
    """Tracks (revision, first-seen time) per worker on the reader's monotonic clock."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._seen: dict[str, tuple[int, float]] = {}

    def judge(self, worker_id: str, rev: int | None, steps: list[str]) -> LivenessView:
        now = time.monotonic()
        if rev is None:
            self._seen.pop(worker_id, None)
            return LivenessView(alive=False, known=False)
        last = self._seen.get(worker_id)
        if last is None or last[0] != rev:
            self._seen[worker_id] = (rev, now)
            return LivenessView(alive=True, steps=frozenset(steps))
        # Same revision as before: the writer has not beaten since we first saw it.
        return LivenessView(alive=now - last[1] < self.ttl, steps=frozenset(steps))


class MemLiveness:
    """In-memory liveness for unit tests (one process plays every worker)."""

    def __init__(self, *, ttl: float = 15.0) -> None:
        self._records: dict[str, tuple[int, list[str]]] = {}
        self._rev = 0
        self._observer = _Observer(ttl)

    async def beat(self, worker_id: str, steps: list[str]) -> None:
        """Announce ``worker_id`` with its running steps."""
        self._rev += 1
        self._records[worker_id] = (self._rev, list(steps))

    def forget(self, worker_id: str) -> None:
        """Drop a worker's record, as if it died long ago (tests)."""
        self._records.pop(worker_id, None)

    async def view(self, worker_id: str) -> LivenessView:
        """The sweep's judgement of ``worker_id``."""
        rec = self._records.get(worker_id)
        if rec is None:
            return self._observer.judge(worker_id, None, [])
        return self._observer.judge(worker_id, rec[0], rec[1])


class NatsLiveness:
    """Liveness records in the ``ebind-leases`` KV bucket (created if missing).

    Args:
        js: JetStream context.
        bucket: the KV bucket.
        ttl: silence after which the reader counts a worker as gone.
        record_ttl: seconds the server keeps a record after its last write (default: twice
            ``ttl``); a dead worker's record disappears on its own.
    """

    def __init__(
        self,
        js: Any,
        *,
        bucket: str = KV_LEASES,
        ttl: float = 15.0,
        record_ttl: float | None = None,
    ) -> None:
        self._js = js
        self._bucket = bucket
        self._kv: Any = None
        self._observer = _Observer(ttl)
        self.record_ttl = RECORD_TTL_FACTOR * ttl if record_ttl is None else record_ttl
        if self.record_ttl <= ttl:
            raise ValueError(
                f"record_ttl ({self.record_ttl}s) must exceed the liveness ttl ({ttl}s): a "
                "record removed sooner would make a live worker look dead"
            )
        self._ttl_ok = True

    async def _store(self) -> Any:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(self._bucket)
            except Exception:
                self._kv = await self._js.create_key_value(bucket=self._bucket, history=1)
        return self._kv

    async def beat(self, worker_id: str, steps: list[str]) -> None:
        """Rewrite ``alive.<b64(worker_id)>`` with the running steps, expiring after record_ttl."""
        from nats.js.errors import APIError

        kv = await self._store()
        key = f"alive.{b64_token(worker_id)}"
        data = _enc.encode(_Beat(worker_id=worker_id, steps=steps, at=time.time()))
        if self._ttl_ok:
            headers = {_TTL_HEADER: record_ttl_header(self.record_ttl)}
            try:
                await self._js.publish(f"$KV.{self._bucket}.{key}", data, headers=headers)
                return
            except APIError as exc:
                if "ttl" not in str(exc).lower():
                    raise
                # A bucket made without per-message TTLs: records still work, they just
                # stay after their worker dies (until the bucket is given the flag).
                self._ttl_ok = False
                _log.warning("liveness.record_ttl_unsupported", bucket=self._bucket, error=str(exc))
        await kv.put(key, data)

    async def view(self, worker_id: str) -> LivenessView:
        """The sweep's judgement of ``worker_id`` (a read error counts as alive)."""
        from nats.js.errors import KeyNotFoundError

        kv = await self._store()
        try:
            entry = await kv.get(f"alive.{b64_token(worker_id)}")
        except KeyNotFoundError:
            return self._observer.judge(worker_id, None, [])
        except Exception as exc:
            _log.warning("liveness.read_failed", worker_id=worker_id, error=str(exc))
            return LivenessView(alive=True, known=False)
        if entry.value is None or entry.operation in ("DEL", "PURGE"):
            return self._observer.judge(worker_id, None, [])
        beat = _beat_or_none(bytes(entry.value), worker_id)
        if beat is None:
            # Not a record this worker wrote: judged as if there were none, so its steps are
            # rescued once their redelivery is due instead of never.
            return self._observer.judge(worker_id, None, [])
        return self._observer.judge(worker_id, int(entry.revision or 0), beat.steps)


class Announcer:
    """Steps this process runs, announced to the liveness store every ``interval``.

    Args:
        liveness: the store (None disables the announcements).
        interval: seconds between beats.
        release_grace: seconds a released step stays listed after its redelivery is due.
    """

    def __init__(
        self, liveness: Liveness | None, interval: float, release_grace: float | None = None
    ) -> None:
        self.liveness = liveness
        self.interval = interval
        self.release_grace = 5 * interval if release_grace is None else release_grace
        self.running: dict[str, dict[str, Announced]] = {}
        self._limits: dict[str, int] = {}
        self._left_out: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None

    def set_concurrency(self, worker_id: str, concurrency: int) -> None:
        """Cap ``worker_id``'s record at its concurrency plus a margin."""
        self._limits[worker_id] = announce_limit(concurrency)

    def add(self, worker_id: str, key: str, token: Token | None = None) -> None:
        """Start announcing ``key`` (``<dag>:<step>``) for ``worker_id``'s delivery ``token``."""
        if self.liveness is None or not worker_id:
            return
        steps = self.running.setdefault(worker_id, {})
        steps.pop(key, None)  # re-inserted: the newest delivery is listed first
        steps[key] = Announced(token=token, since=time.monotonic())
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._loop())

    def discard(self, worker_id: str, key: str) -> None:
        """Stop announcing ``key``."""
        self.running.get(worker_id, {}).pop(key, None)

    def release(self, worker_id: str, key: str, token: Token | None, redeliver_in: float) -> None:
        """Announce ``key`` only until its redelivery is due (plus the grace), then forget it.

        Only the delivery that announced the step releases it: a release carrying another
        token (an older delivery of the step) leaves a newer one running.
        """
        entry = self.running.get(worker_id, {}).get(key)
        if entry is None or (token is not None and entry.token not in (None, token)):
            return
        entry.until = release_until(entry.until, time.monotonic(), redeliver_in, self.release_grace)

    def listed(self, worker_id: str) -> list[str]:
        """What the next beat of ``worker_id`` lists (expired releases forgotten)."""
        entries = self.running.get(worker_id, {})
        now = time.monotonic()
        for key in expired_keys(entries, now):
            del entries[key]
        limit = self._limits.get(worker_id, DEFAULT_ANNOUNCE_LIMIT)
        steps, left_out = announced_steps(entries, now, limit)
        if left_out != self._left_out.get(worker_id, 0):
            self._left_out[worker_id] = left_out
            if left_out:
                _log.warning(
                    "liveness.record_capped",
                    worker_id=worker_id,
                    listed=len(steps),
                    left_out=left_out,
                    note="more steps announced than the worker can run; the oldest "
                    "released ones are not listed",
                )
        return steps

    async def _loop(self) -> None:
        assert self.liveness is not None
        while True:
            for worker_id in list(self.running):
                try:
                    await self.liveness.beat(worker_id, self.listed(worker_id))
                except Exception as exc:
                    _log.warning("liveness.beat_failed", worker_id=worker_id, error=str(exc))
                raise_if_cancelling()  # close() cancels; nats-py may swallow it (3.11)
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        """Stop the announcement loop."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
