"""Leader electors: AlwaysLeader, and KVLeaseElector over a KV key with a per-message TTL.

The lease is the key ``scheduler`` in bucket ``ebind-leases``. Acquiring is a create
(expected last sequence 0) carrying a ``Nats-TTL`` header; every renewal, at a third of
the TTL, is a compare-and-set on the last revision carrying a fresh ``Nats-TTL``, so the
server removes the key one TTL after the holder's last renewal (a TTL set only at create
would expire a live holder, or never expire a dead one). A renewal that
finds another revision means someone else holds the lease: leadership ends at once.
``is_leader()`` is also false once a TTL has passed since the last successful renewal was
*sent*, by the local monotonic clock, so a paused or partitioned process stops believing
it leads before the server hands the lease to someone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig

from ebind._aio import raise_if_cancelling, wait_event
from ebind.logging import get_logger
from ebind.streams import KV_LEASES

__all__ = ["AlwaysLeader", "KVLeaseElector"]

_log = get_logger("ebind.workflow.leader")

_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
_TTL_HEADER = "Nats-TTL"
_WRONG_LAST_SEQ_CODES = (10071, 10164)


class AlwaysLeader:
    """An elector for a single scheduler: always the leader."""

    def __init__(self) -> None:
        self.acquired = asyncio.Event()
        self.acquired.set()
        self._stopped = asyncio.Event()

    def is_leader(self) -> bool:
        """Always True."""
        return True

    async def run(self) -> None:
        """Wait until ``stop()`` (nothing to renew)."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """End ``run()``."""
        self._stopped.set()


def _ttl_header(ttl: float) -> str:
    # Nats-TTL takes a Go duration; milliseconds keep fractional test TTLs exact.
    return f"{round(ttl * 1000)}ms"


class KVLeaseElector:
    """Exactly one holder of a KV lease key leads; the key expires one TTL after its last renewal.

    Args:
        js: a nats-py JetStream context.
        bucket: KV bucket holding the lease (created with per-message TTLs if missing).
        key: lease key.
        ttl: lease lifetime in seconds; renewals happen every ``ttl / 3``.
        holder_id: value written to the key (default: a random id).
        on_change: called with the new state on every leadership edge.
        replicas: replicas used if the bucket has to be created.

    Attributes:
        acquired: set on every false→true edge; whoever waits on it clears it.
    """

    def __init__(
        self,
        js: Any,
        bucket: str = KV_LEASES,
        key: str = "scheduler",
        ttl: float = 10.0,
        holder_id: str | None = None,
        *,
        on_change: Callable[[bool], None] | None = None,
        replicas: int = 1,
    ) -> None:
        if ttl < 1.0:
            raise ValueError(f"lease ttl must be at least 1 second, got {ttl}")
        self._js = js
        self.bucket = bucket
        self.key = key
        self.ttl = ttl
        self.holder_id = holder_id or uuid.uuid4().hex
        self.on_change = on_change
        self._replicas = replicas
        self._subject = f"$KV.{bucket}.{key}"
        self._stream = f"KV_{bucket}"
        self._bucket_ready = False
        self._rev = 0
        self._leader = False
        self._valid_until = 0.0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.acquired = asyncio.Event()

    @property
    def renew_interval(self) -> float:
        """Seconds between renewals (a third of the TTL)."""
        return self.ttl / 3

    def is_leader(self) -> bool:
        """True while the lease is held and was renewed less than a TTL ago."""
        return self._leader and time.monotonic() < self._valid_until

    # -- one step ----------------------------------------------------------------------

    async def tick(self) -> bool:
        """Acquire or renew once; returns whether this process leads afterwards."""
        await self._ensure_bucket()
        if self._leader and time.monotonic() >= self._valid_until:
            # Our own clock says the lease may already be someone else's.
            self._set(False, reason="expired locally")
        sent = time.monotonic()
        try:
            if self._leader:
                self._rev = await self._write(self._rev)
            else:
                self._rev = await self._acquire()
        except _Taken as taken:
            self._set(False, reason=str(taken))
            return False
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            # Unknown outcome: keep what we believed; the local clock ends it in time.
            _log.warning("leader.renew_failed", key=self.key, error=repr(exc))
            return self.is_leader()
        self._valid_until = sent + self.ttl
        self._set(True)
        return True

    async def _acquire(self) -> int:
        try:
            return await self._write(0)
        except _Taken:
            pass
        # The key exists: a live holder, a delete marker left by a release, or our own
        # lease from before a restart with the same holder id.
        kv = await self._js.key_value(self.bucket)
        try:
            entry = await kv._get(self.key)
        except nats.js.errors.KeyNotFoundError:
            return await self._write(0)  # expired between the two calls
        except nats.js.errors.KeyDeletedError as deleted:
            return await self._write(int(deleted.entry.revision))
        if bytes(entry.value or b"").decode(errors="replace") == self.holder_id:
            return await self._write(int(entry.revision))
        raise _Taken("held by another process")

    async def _write(self, last: int) -> int:
        headers = {_EXPECTED_LAST_SUBJECT_SEQ: str(last), _TTL_HEADER: _ttl_header(self.ttl)}
        try:
            ack = await self._js.publish(
                self._subject, self.holder_id.encode(), headers=headers, timeout=self.ttl / 3
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQ_CODES:
                raise _Taken(f"lease revision changed ({exc.description})") from exc
            raise
        return int(ack.seq)

    def _set(self, leader: bool, *, reason: str = "") -> None:
        if leader == self._leader:
            return
        self._leader = leader
        if leader:
            _log.info("leader.acquired", key=self.key, holder=self.holder_id, rev=self._rev)
            self.acquired.set()
        else:
            self._rev = 0
            self._valid_until = 0.0
            if reason == "released":  # a clean shutdown handing the lease back
                _log.info("leader.released", key=self.key, holder=self.holder_id)
            else:
                _log.warning("leader.lost", key=self.key, holder=self.holder_id, reason=reason)
        if self.on_change is not None:
            try:
                self.on_change(leader)
            except Exception:
                _log.exception("leader.on_change_failed")

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            await self._js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            # nats-py creates KV streams with allow_msg_ttl, which the Nats-TTL header needs.
            await self._js.create_key_value(
                KeyValueConfig(bucket=self.bucket, history=1, replicas=self._replicas, direct=True)
            )
        else:
            info = await self._js.stream_info(self._stream)
            if not info.config.allow_msg_ttl:
                # Someone created it without per-message TTLs; enabling them is allowed.
                info.config.allow_msg_ttl = True
                await self._js.update_stream(info.config)
        self._bucket_ready = True

    # -- loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Acquire and renew until ``stop()`` or cancellation; either releases the lease.

        Releasing (a CAS delete of our own revision, bounded to one second) lets a follower
        take over at once instead of after the TTL; ``is_leader()`` turns false first. A
        process that dies without running this keeps the key until its TTL runs out.
        """
        self._stop.clear()
        watch = await self._watch_releases()
        try:
            while not self._stop.is_set():
                try:
                    await self.tick()
                except Exception as exc:  # e.g. no connection yet: keep trying, never die
                    _log.warning("leader.tick_failed", key=self.key, error=repr(exc))
                raise_if_cancelling()  # a cancel nats-py swallowed must still stop us
                self._wake.clear()
                await wait_event(self._wake, self.renew_interval)
        finally:
            if watch is not None:
                with contextlib.suppress(Exception):
                    await watch.unsubscribe()
            await self._release()

    async def stop(self) -> None:
        """Make ``run()`` release the lease and return."""
        self._stop.set()
        self._wake.set()

    async def _release(self) -> None:
        if not self._leader:
            return
        rev = self._rev
        self._set(False, reason="released")
        try:
            async with asyncio.timeout(1.0):
                kv = await self._js.key_value(self.bucket)
                # Delete only our own revision, never a successor's lease.
                await kv.delete(self.key, last=rev)
        except Exception as exc:  # the TTL removes the key anyway
            _log.warning("leader.release_failed", key=self.key, error=repr(exc))

    async def _watch_releases(self) -> Any:
        """Wake the loop when the holder releases, so a follower takes over at once."""
        nc = self._js._nc  # nats-py keeps the connection on the JetStream context

        async def on_msg(msg: Any) -> None:
            if msg.headers and msg.headers.get("KV-Operation") in ("DEL", "PURGE"):
                self._wake.set()

        try:
            return await nc.subscribe(self._subject, cb=on_msg)
        except Exception as exc:  # only an optimisation: polling still takes over
            _log.warning("leader.watch_failed", error=repr(exc))
            return None


class _Taken(Exception):
    """The lease key is held by someone else (or changed under us)."""
