"""Pull loop for one durable consumer: requests only as many messages as the worker can take.

nats-py's ``fetch(n)`` waits for the whole batch until its timeout, which would hold a lone
task back. This puller instead keeps server-side pull requests open,
each with a short ``expires`` and a ``batch`` no larger than the free concurrency slots; the
server hands messages over as they arrive, and the puller tops its requests up as slots
free. Each request has its own reply subject (the puller's inbox plus a request number),
so a ``408 Request Timeout`` retires the request it answers: the server does not serve
one inbox's requests in order (a request it served in part goes to the back of its
queue), and requests expire in their own order, so by order a timeout could retire a
request still open on the server and the worker would ask for more than it can run.
Deliveries (which keep the stream subject) are charged to the oldest request. Requests
whose status was lost (reconnect) are retired locally shortly after their expiry.

Claim pullers (targeted work) must not wait behind the shared consumer's open requests,
which on an idle worker promise every slot. So a claim puller may *overdraft*: with no
request open and none of its own messages running, it keeps one request for one message
open while some slot is not running anything. Over-subscription is thus bounded by the
number of claims (one message each), and such a message is kept alive by in-progress acks
like any held one. A claim puller also reports its consumer's backlog (the ``pending``
count every delivery carries), and the shared puller leaves that many free slots to it.

Lane pullers (one per queue, band and task name, see :mod:`ebind.queues`) work like claim
pullers with a rank: a lane asks for counted slots only for the backlog it has seen and
only while no puller of a higher rank (claims first, then the high, normal and low bands)
has a backlog it has not asked for. A lane with no request open and no backlog seen keeps
one uncounted request for one message open (a probe, living ``idle_expires``), so new
work in any lane is seen at once, also while lower bands keep every slot busy (then only
lanes holding none of their messages probe). Over-subscription is thus bounded by the
number of lanes, and the worker starts held messages highest band first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ebind._aio import raise_if_cancelling
from ebind.direct import publish_nowait, subscribe_direct
from ebind.logging import get_logger

__all__ = ["Budget", "Puller"]

log = get_logger("ebind.worker")

_STATUS = "Status"
_LOCAL_EXPIRY_SLACK = 1.0  # seconds after `expires` before a silent request is written off
# 503 "no responders": the consumer has no leader (election after a node loss). Requesting
# again at once would spin; back off, doubling up to the cap, until a request is served.
_UNAVAILABLE_BACKOFF = (0.1, 2.0)
# Backoff past which repeated 503s make the worker check whether the consumer still exists
# (a deleted consumer answers every request with "no responders", like a leaderless one).
_CHECK_AFTER_BACKOFF = 0.4
_request_encoder = msgspec.json.Encoder()
# A threshold no free count reaches (the room grows past the slots while deliveries are
# held ahead, so the slots plus one would be met by every release).
_NEVER = 1 << 62


class _Request:
    """One open pull request: messages still due, its local deadline, whether counted."""

    __slots__ = ("counted", "deadline", "due", "token")

    def __init__(self, token: str, due: int, deadline: float, counted: bool) -> None:
        self.token = token
        self.due = due
        self.deadline = deadline
        self.counted = counted


class Budget:
    """Intake shared by all pullers of one worker: ``capacity + ahead - held - requested``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        """The worker's execution slots."""
        self.ahead = 0
        """Deliveries held beyond the slots (see :mod:`ebind.worker.prefetch`)."""
        self.held = 0  # messages received and not yet finished (running or waiting for a slot)
        self.requested = 0  # messages asked for by open pull requests, not yet delivered
        # Backlog reported by claim pullers: slots the shared puller leaves to targeted work.
        self.reserved: dict[str, int] = {}
        # Every running puller by durable: its rank and open requests qualify its backlog.
        self.pullers: dict[str, Puller] = {}
        # (rank, threshold, overdraft, future) of pullers waiting until at least `threshold`
        # slots are free, or (overdraft) until some slot runs nothing; woken by rank.
        self._waiters: list[tuple[int, int, bool, asyncio.Future[None]]] = []
        self._unsorted = False  # a waiter was added since the list was last sorted by rank
        # The loop of the first waiter (asking for the running loop is a getpid system call
        # on Python 3.11, and the pullers wait several times per few tasks).
        self._loop: asyncio.AbstractEventLoop | None = None

    def claim_demand(self) -> int:
        """Messages known to wait on claim consumers (the shared puller leaves them room)."""
        return sum(self.reserved.values()) if self.reserved else 0

    def backlog_above(self, rank: int) -> bool:
        """Whether a higher-ranked puller has seen a backlog it has not asked for yet.

        A lower number is a higher rank; claims rank above every lane.
        """
        for durable, n in self.reserved.items():
            puller = self.pullers.get(durable)
            if puller is None:
                if n > 0 and rank > -1:
                    return True
            elif puller.rank < rank and n > puller.outstanding:
                return True
        return False

    def free(self) -> int:
        """Room for deliveries: neither held nor promised to an open pull request."""
        return self.capacity + self.ahead - self.held - self.requested

    def busy_above(self, rank: int) -> bool:
        """Whether a higher-ranked puller holds messages or has seen a backlog.

        Only the highest band with work may fill the room held ahead of the slots: a lower
        band's message held there could start before a higher band's message that is
        still on its way, and bands are strict.
        """
        reserved = self.reserved
        for puller in self.pullers.values():
            if puller.rank < rank and (puller.holding or reserved.get(puller.durable, 0) > 0):
                return True
        return False

    def hold_ahead(self, n: int) -> None:
        """Hold ``n`` deliveries beyond the slots from now on; more room wakes the pullers."""
        more = n > self.ahead
        self.ahead = n
        if more and self._waiters:
            self.wake(self.free())

    def release(self) -> None:
        """A received message is finished; wake pullers whose threshold is now met."""
        self.held -= 1
        if self._waiters:
            self.wake(self.free())

    def wake(self, free: int | None = None) -> None:
        """Wake waiting pullers (all of them when ``free`` is None)."""
        keep = []
        idle_slot = self.held < self.capacity
        if self._unsorted:
            self._unsorted = False
            self._waiters.sort(key=_rank_of)  # woken in rank order, so they request in it
        for entry in self._waiters:
            _, threshold, overdraft, fut = entry
            if fut.done():
                continue
            if free is None or free >= threshold or (overdraft and idle_slot):
                fut.set_result(None)
            else:
                keep.append(entry)
        self._waiters = keep

    def waiter(
        self, threshold: int, *, overdraft: bool = False, rank: int = -1
    ) -> asyncio.Future[None]:
        """A future resolved once ``threshold`` slots are free, or when ``wake()`` is called.

        With ``overdraft`` it also resolves once some slot runs nothing. Waiters of a
        lower ``rank`` are woken first.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters
        if waiters and waiters[-1][0] > rank:
            self._unsorted = True
        waiters.append((rank, threshold, overdraft, fut))
        return fut

    @staticmethod
    async def wait(fut: asyncio.Future[None], within: float) -> None:
        """Wait for ``fut`` (from :meth:`waiter`) at most ``within`` seconds."""
        # A timer plus one future is far cheaper than asyncio.wait_for (a Task per call).
        handle = fut.get_loop().call_later(within, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()


def _count(text: str) -> int | None:
    """``text`` as a count (ASCII digits, at most 19), else None.

    ``str.isdigit`` alone accepts digits ``int`` refuses ("²"), and these come off the wire.
    """
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else None


def _rank_of(entry: tuple[int, int, bool, asyncio.Future[None]]) -> int:
    return entry[0]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Puller:
    """Keeps pull requests open on one durable and hands each delivered message to ``on_msg``.

    ``on_msg(msg, puller)`` takes the message; the worker calls :meth:`finished` once it is
    done with it. ``on_gone(puller)`` is called when the server says the consumer is gone
    (deleted, or the stream recreated) or keeps answering "no responders", so the worker
    can check and re-create it.
    """

    def __init__(
        self,
        nc: Any,
        *,
        stream: str,
        durable: str,
        budget: Budget,
        on_msg: Callable[[Any, Puller], None],
        expires: float,
        min_one: bool = False,
        on_gone: Callable[[Puller], None] | None = None,
        rank: int | None = None,
        idle_expires: float | None = None,
    ) -> None:
        self.durable = durable
        self._nc = nc
        self._budget = budget
        self._on_msg = on_msg
        self._on_gone = on_gone
        self._expires = expires
        # Claim pullers may overdraft (see the module docstring), so a targeted task is
        # never stuck behind the shared consumer's open requests.
        self._min_one = min_one or rank is not None
        # A lane puller (see the module docstring); claims rank before every lane.
        self._lane = rank is not None
        self.rank = rank if rank is not None else -1
        self._idle_expires = idle_expires or expires
        budget.pullers[durable] = self
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        # Open requests by reply token, oldest first (dicts keep insertion order); an
        # overdraft request is not counted (beyond the budget, so not in `requested`).
        self._requests: dict[str, _Request] = {}
        self._tokens = itertools.count(1)
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._backoff = 0.0  # current 503 backoff (0 = none)
        self._inflight = 0  # messages delivered here and not yet finished
        self._unstarted = 0  # of those, messages still waiting for an execution slot
        self._waiting: asyncio.Future[None] | None = None

    @property
    def outstanding(self) -> int:
        """Messages requested and not yet delivered."""
        return sum(r.due for r in self._requests.values())

    @property
    def unavailable(self) -> bool:
        """No messages can come: repeated "no responders", or the pull loop ended."""
        ended = self._task is not None and self._task.done()
        return ended or self._backoff >= _CHECK_AFTER_BACKOFF

    async def start(self) -> None:
        """Subscribe the delivery inbox and start requesting."""
        inbox = self._nc.new_inbox()
        self._inbox = inbox
        self._sub = await subscribe_direct(self._nc, inbox + ".*", self._deliver)
        self._task = asyncio.create_task(self._loop(), name=f"ebind-pull-{self.durable}")

    async def stop(self) -> None:
        """Stop requesting and drain the inbox; late deliveries still reach ``on_msg``."""
        self._stopping = True
        self._budget.wake()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            # the suppress above also swallows a cancel of stop() itself (a second signal
            # asking for "stop now"): pass that one on
            raise_if_cancelling()
        if self._sub is not None:
            # drain = UNSUB + flush + process what already arrived, so nothing delivered to
            # this inbox is dropped (it would otherwise wait a full ack_wait).
            with contextlib.suppress(Exception):
                await self._sub.drain()
        self._retire_all()
        self._clear_backlog()
        if self._budget.pullers.get(self.durable) is self:
            del self._budget.pullers[self.durable]

    @property
    def holding(self) -> bool:
        """Whether messages this puller delivered are not finished yet."""
        return self._inflight > 0

    def started(self) -> None:
        """A message this puller delivered got an execution slot (a lane may probe again)."""
        self._unstarted -= 1
        if self._lane and not self._unstarted:
            self._kick()  # the probe rule changes only once nothing waits

    def finished(self, *, started: bool = True) -> None:
        """A message this puller delivered is done (call after ``Budget.release``)."""
        if not started:
            self._unstarted -= 1
        self._inflight -= 1
        if self._min_one and self._inflight == 0:
            self._kick()  # may overdraft again

    def revived(self) -> None:
        """The consumer was re-created: forget the 503 backoff and request at once."""
        self._backoff = 0.0
        self._retire_all()
        self._kick()

    def _kick(self) -> None:
        fut = self._waiting
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _retire_all(self) -> None:
        for req in list(self._requests.values()):
            self._retire(req)

    def _retire_up_to(self, token: str) -> None:
        """Retire every request made no later than request ``token`` (all: not a number)."""
        last = _count(token)
        if last is None:
            self._retire_all()
            return
        for req in [r for r in self._requests.values() if int(r.token) <= last]:
            self._retire(req)

    def _retire(self, req: _Request) -> None:
        del self._requests[req.token]
        if req.counted:
            self._budget.requested -= req.due

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                self._retire_expired()
                if self._backoff and self.outstanding == 0:
                    await asyncio.sleep(self._backoff)
                if self._lane:
                    await self._step_lane()
                elif self._min_one:
                    await self._step_claim()
                else:
                    await self._step_shared()
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - defensive: never let the loop die
                log.exception("worker.pull_loop_error", durable=self.durable)
                await asyncio.sleep(0.5)

    async def _step_shared(self) -> None:
        budget = self._budget
        demand = budget.claim_demand()
        n = budget.free() - demand  # targeted backlog goes first
        # Batch requests while another request is still open, so a busy worker sends one
        # request per few messages instead of one per message.
        threshold = 1 if self.outstanding == 0 or self._backoff else max(1, budget.capacity // 4)
        if n >= threshold:
            await self._request(n)
            return
        self._waiting = budget.waiter(threshold + demand)
        await budget.wait(self._waiting, self._next_expiry_in())

    async def _step_claim(self) -> None:
        # A claim asks for counted slots only for the backlog it has seen (so an idle claim
        # never sits on free slots); otherwise it overdrafts one message at a time.
        budget = self._budget
        mine = self.outstanding
        backlog = budget.reserved.get(self.durable, 0) - mine
        n = min(budget.free(), backlog)
        if n >= 1:
            await self._request(n)
            return
        overdraft = mine == 0 and self._inflight == 0
        if overdraft and budget.held < budget.capacity:
            # Bounded: one request or one running message per claim, and only while a slot
            # runs nothing. Not counted in the budget, so an idle claim does not shrink the
            # shared puller's requests.
            await self._request(1, counted=False)
            return
        # Deliveries and finished messages kick this wait; the budget wakes it for free
        # slots (when there is a backlog) or an idle slot (when it may overdraft).
        threshold = 1 if backlog > 0 else _NEVER  # no backlog seen: a kick ends the wait
        self._waiting = budget.waiter(threshold, overdraft=overdraft)
        await budget.wait(self._waiting, self._next_expiry_in())

    async def _step_lane(self) -> None:
        budget = self._budget
        mine = self.outstanding
        backlog = budget.reserved.get(self.durable, 0) - mine
        # Batch requests while one is still open (as the shared puller does), so a busy lane
        # sends one request per few messages instead of one per message.
        need = min(backlog, 1 if mine == 0 else max(1, budget.capacity // 4))
        free = budget.free()
        if budget.ahead and budget.busy_above(self.rank):
            free -= budget.ahead  # a lower band gets the slots' room only
        if backlog > 0 and free >= need and not budget.backlog_above(self.rank):
            await self._request(min(free, backlog))
            return
        # A probe: while no request is open here and no backlog is known here, so new work
        # in this lane is seen even while lower bands keep every slot busy. Bounded: with
        # every slot busy, only a lane none of whose messages waits for a slot probes.
        if mine == 0 and backlog <= 0 and (budget.held < budget.capacity or not self._unstarted):
            await self._request(1, counted=False, expires=self._idle_expires)
            return
        threshold = need if backlog > 0 else _NEVER  # no backlog seen: a kick ends the wait
        self._waiting = budget.waiter(threshold, overdraft=mine == 0, rank=self.rank)
        await budget.wait(self._waiting, self._next_expiry_in())

    async def _request(self, n: int, *, counted: bool = True, expires: float = 0.0) -> None:
        expires = expires or self._expires
        body = _request_encoder.encode({"batch": n, "expires": int(expires * 1e9)})
        deadline = time.monotonic() + expires + _LOCAL_EXPIRY_SLACK
        req = _Request(str(next(self._tokens)), n, deadline, counted)
        self._requests[req.token] = req
        if counted:
            self._budget.requested += n
        if self._nc.is_closed:
            # Closed for good (not reconnecting): nothing will be delivered again, so end
            # quietly instead of warning twice a second until someone calls stop().
            self._retire(req)
            log.info("worker.pull_stopped", durable=self.durable, reason="connection closed")
            self._stopping = True
            return
        reply = f"{self._inbox}.{req.token}"
        try:
            if not publish_nowait(self._nc, self._next_subject, body, reply):
                await self._nc.publish(self._next_subject, body, reply=reply)
        except Exception as exc:
            # Disconnected: forget the request and wait a little; nats-py reconnects.
            if req.token in self._requests:
                self._retire(req)
            log.warning("worker.pull_request_failed", durable=self.durable, error=str(exc))
            await asyncio.sleep(0.5)

    def _next_expiry_in(self) -> float:
        if not self._requests:
            return self._expires
        soonest = min(r.deadline for r in self._requests.values())
        return max(0.01, soonest - time.monotonic())

    def _retire_expired(self) -> None:
        now = time.monotonic()
        for req in [r for r in self._requests.values() if r.deadline <= now]:
            self._retire(req)

    def _deliver(self, msg: Any) -> None:
        # The server's status replies are empty, carry a Status header and have no reply
        # subject; a stored message can have the first two, every delivery has an ack subject.
        if not msg.data and not msg.reply:
            headers = msg.headers
            if headers and _STATUS in headers:
                # A status comes on the reply subject of the request it answers.
                self._on_status(headers, msg.subject.rpartition(".")[2])
                return
        self._backoff = 0.0
        # A delivery keeps the stream subject, so it cannot say which request it served: it
        # is charged to the oldest. Charged wrongly, a request is retired early or late by
        # its own timeout, never another one still open on the server.
        req = next(iter(self._requests.values()), None)
        if req is not None:
            req.due -= 1
            if req.counted:
                self._budget.requested -= 1
            if req.due <= 0:
                del self._requests[req.token]
        self._inflight += 1
        self._unstarted += 1
        if self._min_one:
            self._note_backlog(msg)
            self._kick()  # re-evaluate now, not when the shared budget next moves
        self._on_msg(msg, self)

    def _note_backlog(self, msg: Any) -> None:
        # The ack subject ends with the consumer's pending count after this delivery:
        # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        reply = msg.reply or ""
        _, _, tail = reply.rpartition(".")
        pending = _count(tail) or 0
        budget = self._budget
        if pending:
            before = budget.reserved.get(self.durable, 0)
            budget.reserved[self.durable] = min(pending, budget.capacity)
            if pending < before:
                budget.wake()  # the shared puller may take the slots no longer needed
        else:
            self._clear_backlog()

    def _clear_backlog(self) -> None:
        if self._budget.reserved.pop(self.durable, None):
            self._budget.wake()  # the shared puller may take those slots again

    def _on_status(self, headers: dict[str, str], token: str = "") -> None:
        status = headers.get(_STATUS, "")
        if status == "100":  # idle heartbeat
            return
        description = headers.get("Description", "")
        gone = status == "409" and "Deleted" in description
        if status == "409" and ("Leadership" in description or gone):
            # Every request up to the one answered went with the old leader / consumer (the
            # server answers each); a newer one was made at the new leader and stays.
            self._retire_up_to(token)
        elif token in self._requests:
            # 408 Request Timeout, other 409s, 404 and 503 end the request they answer (one
            # retired already, done or expired locally, changes nothing).
            self._retire(self._requests[token])
        if status == "408" and self._min_one:
            self._clear_backlog()  # the backlog went elsewhere after all
        # 404 "No Messages" answers only no_wait requests (never sent); a 404 naming the
        # consumer means it is gone.
        gone = gone or (status == "404" and "consumer" in description.lower())
        if status == "503" or gone:
            first, cap = _UNAVAILABLE_BACKOFF
            if not self._backoff:
                log.warning(
                    "worker.consumer_unavailable",
                    durable=self.durable,
                    status=status,
                    description=description,
                )
            self._backoff = min(cap, self._backoff * 2) if self._backoff else first
            # No leader (an election) or no consumer at all: the worker checks which.
            if self._on_gone is not None and (gone or self._backoff >= _CHECK_AFTER_BACKOFF):
                self._on_gone(self)
            self._budget.wake()
            return
        self._backoff = 0.0
        if status != "408":
            log.info(
                "worker.pull_status", durable=self.durable, status=status, description=description
            )
        self._budget.wake()
