"""When the sweep re-sends a dispatched step that no worker has started yet.

A work-queue stream keeps a message until a worker acks it, so a dispatched step whose
message is still in ``EBIND_TASKS`` is queued or in flight: a worker will get to it, and a
re-send would only add a stale copy behind a backlog. The sweep therefore re-sends only a
step whose message is gone (acked without starting the step, deleted, never stored), and
successive re-sends of one step wait longer each time.

The decision is :func:`decide`, a pure function of the step's age since its last send,
its re-send count and what is known about its message. :class:`SentLedger` remembers the
stream sequence of each dispatch this process made; :class:`NatsPresence` looks a
sequence up in the stream.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ebind.logging import get_logger
from ebind.streams import TASKS_STREAM

if TYPE_CHECKING:
    from ebind.signing import Signer

__all__ = [
    "NatsPresence",
    "Presence",
    "RedispatchAction",
    "RedispatchTiming",
    "SentLedger",
    "backoff",
    "decide",
    "msg_id",
]

_log = get_logger("ebind.workflow.redispatch")

_MSG_ID_HEADER = "Nats-Msg-Id"


class RedispatchAction(enum.Enum):
    """What the sweep does with a dispatched step that no worker has started."""

    WAIT = "wait"
    """Leave it alone: too young, inside its backoff, or its message is still queued."""
    CHECK = "check"
    """Look its message up by stream sequence; re-send only if it is gone."""
    PROBE = "probe"
    """Sequence unknown: re-publish under the same msg-id, which the stream drops as a
    duplicate (storing nothing) and answers with the original's sequence."""
    RESEND = "resend"
    """Re-send it as a new generation."""


@dataclass(frozen=True)
class RedispatchTiming:
    """The knobs of :func:`decide` (seconds)."""

    grace: float
    """Age below which a dispatched step is never looked at."""
    base: float
    """Wait before the first re-send; the n-th re-send waits ``base * 2**n``."""
    cap: float
    """Longest wait between two re-sends."""
    probe_window: float
    """Age below which a re-publish under the same msg-id is still deduplicated."""


def backoff(n: int, base: float, cap: float) -> float:
    """Seconds a step re-sent ``n`` times waits after its last send before the next one."""
    if n < 0:
        raise ValueError(f"re-send count must be >= 0, got {n}")
    # 2**n overflows float for absurd counts; the cap wins long before.
    return min(base * 2.0 ** min(n, 64), cap)


def decide(
    age: float,
    resends: int,
    *,
    seq_known: bool,
    present: bool | None,
    timing: RedispatchTiming,
) -> RedispatchAction:
    """What to do with a dispatched, unstarted step ``age`` seconds after its last send.

    ``resends`` is how often it was re-sent already, ``seq_known`` whether the stream
    sequence of its last send is known, ``present`` the answer of a look-up of that
    sequence (None: not looked up yet, or the look-up failed).
    """
    if age < timing.grace or age < backoff(resends, timing.base, timing.cap):
        return RedispatchAction.WAIT
    if present is True:
        return RedispatchAction.WAIT  # queued or in flight: a worker will take it
    if present is False:
        return RedispatchAction.RESEND
    if seq_known:
        return RedispatchAction.CHECK
    if age < timing.probe_window:
        return RedispatchAction.PROBE
    # Past the duplicate window a same-id re-publish would store a second copy, so
    # without a sequence there is nothing cheap to check: re-send, backed off.
    return RedispatchAction.RESEND


def msg_id(dag_id: str, step_id: str, generation: int) -> str:
    """The msg-id a step's dispatch of ``generation`` is published under."""
    return f"{dag_id}:{step_id}:{generation}"


class SentLedger:
    """Stream sequence of the last send of each step this process dispatched (bounded).

    Memory is enough for the common path: the leader dispatches every step that becomes
    ready on an event and remembers its sequence. A step dispatched elsewhere (a submit in
    another process, a previous leader) is learned once by a probe or recorded in the
    step record by a re-send. Past ``limit`` steps the oldest are forgotten (a producer's
    engine never sees its DAGs finish); a forgotten step is probed like a foreign one.
    """

    def __init__(self, limit: int = 65_536) -> None:
        self._limit = limit
        self._seqs: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()

    def put(self, dag_id: str, step_id: str, generation: int, seq: int) -> None:
        """Remember that ``generation`` of the step was stored at ``seq``."""
        key = (dag_id, step_id)
        self._seqs[key] = (generation, seq)
        self._seqs.move_to_end(key)
        while len(self._seqs) > self._limit:
            self._seqs.popitem(last=False)

    def get(self, dag_id: str, step_id: str, generation: int) -> int | None:
        """The sequence of that generation's message, None when not known here."""
        got = self._seqs.get((dag_id, step_id))
        if got is None or got[0] != generation:
            return None
        return got[1]

    def forget(self, dag_id: str, step_id: str) -> None:
        """Drop what is known of one step (it started or finished)."""
        self._seqs.pop((dag_id, step_id), None)

    def __len__(self) -> int:
        return len(self._seqs)


class Presence(Protocol):
    """Tells whether a task message is still in the tasks stream."""

    async def present(self, seq: int, expected_msg_id: str) -> bool:
        """True when the stream holds ``seq`` and it carries ``expected_msg_id``."""
        ...


class NatsPresence:
    """:class:`Presence` through ``STREAM.MSG.GET`` on ``EBIND_TASKS`` (one request)."""

    def __init__(self, js: Any, stream: str = TASKS_STREAM, signer: Signer | None = None) -> None:
        self._js = js
        self._stream = stream
        # A signing App publishes under keyed msg-ids (Signer.dedupe_id): compare those.
        self._signer = signer

    async def present(self, seq: int, expected_msg_id: str) -> bool:
        """True when the stream holds ``seq`` with that msg-id (a failed look-up raises)."""
        from nats.js.errors import NotFoundError

        try:
            raw = await self._js.get_msg(self._stream, seq=seq)
        except NotFoundError:
            return False
        # A sequence is never reused by one stream, but a stream deleted and created again
        # starts over: the msg-id says whether the message there is this step's.
        found = (raw.headers or {}).get(_MSG_ID_HEADER)
        if self._signer is not None:
            expected_msg_id = self._signer.dedupe_id(expected_msg_id)
        if found != expected_msg_id:
            _log.info("step.message_replaced", seq=seq, expected=expected_msg_id, found=found)
            return False
        return True
