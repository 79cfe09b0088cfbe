"""Pull loop for one durable consumer: requests only as many messages as the worker can take.

nats-py's ``fetch(n)`` waits for the whole batch until its timeout, which would hold a lone
task back (PERFORMANCE fact 2). This puller instead keeps server-side pull requests open,
each with a short ``expires`` and a ``batch`` no larger than the free concurrency slots; the
server hands messages over as they arrive, and the puller tops its requests up as slots
free. Requests are tracked in FIFO order (the server serves a subscriber's requests in
order), so deliveries and ``408 Request Timeout`` statuses retire them; requests whose
status was lost (reconnect) are retired locally shortly after their expiry.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

__all__ = ["Budget", "Puller"]

log = structlog.get_logger("ebind.worker")

_STATUS = "Status"
_LOCAL_EXPIRY_SLACK = 1.0  # seconds after `expires` before a silent request is written off
# 503 "no responders": the consumer has no leader (election after a node loss). Requesting
# again at once would spin; back off, doubling up to the cap, until a request is served.
_UNAVAILABLE_BACKOFF = (0.1, 2.0)
_request_encoder = msgspec.json.Encoder()


class Budget:
    """Concurrency shared by all pullers of one worker: ``free = capacity - held - requested``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0  # messages received and not yet finished (running or waiting for a slot)
        self.requested = 0  # messages asked for by open pull requests, not yet delivered
        # (threshold, future) of pullers waiting until at least `threshold` slots are free.
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def free(self) -> int:
        """Slots neither running a message nor promised to an open pull request."""
        return self.capacity - self.held - self.requested

    def release(self) -> None:
        """A received message is finished; wake pullers whose threshold is now met."""
        self.held -= 1
        if self._waiters:
            self.wake(self.free())

    def wake(self, free: int | None = None) -> None:
        """Wake waiting pullers (all of them when ``free`` is None)."""
        keep = []
        for threshold, fut in self._waiters:
            if fut.done():
                continue
            if free is None or free >= threshold:
                fut.set_result(None)
            else:
                keep.append((threshold, fut))
        self._waiters = keep

    async def wait(self, threshold: int, within: float) -> None:
        """Wait until ``threshold`` slots are free, ``wake()`` is called, or ``within`` s pass."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append((threshold, fut))
        # A timer plus one future is far cheaper than asyncio.wait_for (a Task per call).
        handle = loop.call_later(within, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Puller:
    """Keeps pull requests open on one durable and hands each delivered message to ``on_msg``."""

    def __init__(
        self,
        nc: Any,
        *,
        stream: str,
        durable: str,
        budget: Budget,
        on_msg: Callable[[Any], None],
        expires: float,
        min_one: bool = False,
    ) -> None:
        self.durable = durable
        self._nc = nc
        self._budget = budget
        self._on_msg = on_msg
        self._expires = expires
        # Claim pullers may keep one request open even when the budget is spent, so a
        # targeted task is never stuck behind the shared consumer's open request.
        self._min_one = min_one
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._requests: collections.deque[list[float]] = collections.deque()
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._backoff = 0.0  # current 503 backoff (0 = none)

    @property
    def outstanding(self) -> int:
        """Messages requested and not yet delivered."""
        return int(sum(r[0] for r in self._requests))

    async def start(self) -> None:
        """Subscribe the delivery inbox and start requesting."""
        inbox = self._nc.new_inbox()
        self._inbox = inbox
        self._sub = await self._nc.subscribe(inbox, cb=self._deliver)
        self._task = asyncio.create_task(self._loop(), name=f"ebind-pull-{self.durable}")

    async def stop(self) -> None:
        """Stop requesting and drain the inbox; late deliveries still reach ``on_msg``."""
        self._stopping = True
        self._budget.wake()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            # drain = UNSUB + flush + process what already arrived, so nothing delivered to
            # this inbox is dropped (it would otherwise wait a full ack_wait).
            with contextlib.suppress(Exception):
                await self._sub.drain()
        self._retire_all()

    def _retire_all(self) -> None:
        self._budget.requested -= self.outstanding
        self._requests.clear()

    async def _loop(self) -> None:
        budget = self._budget
        batch = max(1, budget.capacity // 4)
        while not self._stopping:
            try:
                self._retire_expired()
                n = budget.free()
                mine = self.outstanding
                if n <= 0 and self._min_one and mine == 0:
                    n = 1
                # Batch requests while another request is still open, so a busy worker sends
                # one request per few messages instead of one per message.
                threshold = 1 if mine == 0 else batch
                if self._backoff and mine == 0:
                    await asyncio.sleep(self._backoff)
                    threshold = 1
                if n >= threshold:
                    await self._request(n)
                    continue
                await budget.wait(
                    1 if self._min_one and mine == 0 else threshold, self._next_expiry_in()
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - defensive: never let the loop die
                log.exception("worker.pull_loop_error", durable=self.durable)
                await asyncio.sleep(0.5)

    async def _request(self, n: int) -> None:
        body = _request_encoder.encode({"batch": n, "expires": int(self._expires * 1e9)})
        deadline = time.monotonic() + self._expires + _LOCAL_EXPIRY_SLACK
        self._requests.append([float(n), deadline])
        self._budget.requested += n
        try:
            await self._nc.publish(self._next_subject, body, reply=self._inbox)
        except Exception as exc:
            # Disconnected: forget the request and wait a little; nats-py reconnects.
            self._requests.pop()
            self._budget.requested -= n
            log.warning("worker.pull_request_failed", durable=self.durable, error=str(exc))
            await asyncio.sleep(0.5)

    def _next_expiry_in(self) -> float:
        if not self._requests:
            return self._expires
        return max(0.01, self._requests[0][1] - time.monotonic())

    def _retire_expired(self) -> None:
        now = time.monotonic()
        while self._requests and self._requests[0][1] <= now:
            self._budget.requested -= int(self._requests.popleft()[0])

    async def _deliver(self, msg: Any) -> None:
        headers = msg.headers
        if headers and _STATUS in headers and not msg.data:
            self._on_status(headers)
            return
        self._backoff = 0.0
        if self._requests:
            head = self._requests[0]
            head[0] -= 1
            self._budget.requested -= 1
            if head[0] <= 0:
                self._requests.popleft()
        self._on_msg(msg)

    def _on_status(self, headers: dict[str, str]) -> None:
        status = headers.get(_STATUS, "")
        if status == "100":  # idle heartbeat
            return
        description = headers.get("Description", "")
        if status == "409" and ("Leadership" in description or "Deleted" in description):
            self._retire_all()  # every open request is gone with the old leader / consumer
        elif self._requests:
            # 408 Request Timeout (and other 409s) end the oldest open request.
            self._budget.requested -= int(self._requests.popleft()[0])
        if status == "503":
            first, cap = _UNAVAILABLE_BACKOFF
            if not self._backoff:
                log.warning("worker.consumer_unavailable", durable=self.durable)
            self._backoff = min(cap, self._backoff * 2) if self._backoff else first
            self._budget.wake()
            return
        self._backoff = 0.0
        if status not in ("404", "408"):
            log.info(
                "worker.pull_status", durable=self.durable, status=status, description=description
            )
        self._budget.wake()
