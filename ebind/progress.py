"""Progress of a running task: validation, rate limit, the record on NATS and reading it back.

A handler reports ``ctx.progress(0.4, note="...")``; the worker keeps only the latest report
per task and writes it at most :data:`MIN_INTERVAL` apart to ``PROGRESS.<client>.<task_id>``
in the ``EBIND_PROGRESS`` stream (one message per subject, removed after the results
retention). Readers (the Future, ``ebind task get``, ``ebind dag get``) validate what they
read, since anyone allowed to publish there could write anything.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from ebind import observe
from ebind.logging import get_logger
from ebind.wire import StoredTime

__all__ = [
    "MAX_NOTE_LEN",
    "MIN_INTERVAL",
    "PROGRESS_STREAM",
    "Progress",
    "ProgressPublisher",
    "ProgressUnavailable",
    "check_progress",
    "client_of_reply",
    "decode_progress",
    "flush_delay",
    "progress_subject",
    "read_progress",
]

log = get_logger("ebind.progress")

PROGRESS_STREAM = "EBIND_PROGRESS"
"""The stream holding the latest progress record of each task."""
MAX_NOTE_LEN = 200
"""The longest note a progress report may carry, in characters."""
MIN_INTERVAL = 0.25
"""Seconds between two progress writes of one task (at most four a second)."""
# Tasks without a reply subject (send(), DAG steps) have no client: their records go here.
_NO_CLIENT = "_"


class ProgressUnavailable(RuntimeError):
    """Progress was reported where no worker can publish it (direct call, process-pool child)."""


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """The latest progress a task reported: ``fraction`` in [0, 1], a short ``note``, ``at``."""

    task_id: str
    fraction: float
    note: str = ""
    at: StoredTime


def check_progress(fraction: object, note: object) -> tuple[float, str]:
    """``(fraction, note)`` when valid; ValueError / TypeError naming the problem otherwise."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(f"progress fraction must be a number, not {type(fraction).__name__}")
    value = float(fraction)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"progress fraction must be between 0 and 1, got {fraction!r}")
    if not isinstance(note, str):
        raise TypeError(f"progress note must be a str, not {type(note).__name__}")
    if len(note) > MAX_NOTE_LEN:
        raise ValueError(
            f"progress note is {len(note)} characters; at most {MAX_NOTE_LEN} are allowed"
        )
    return value, note


def flush_delay(now: float, last_sent: float | None, interval: float = MIN_INTERVAL) -> float:
    """Seconds to wait before the next write may go out (0: write now)."""
    if last_sent is None:
        return 0.0
    return max(0.0, last_sent + interval - now)


def client_of_reply(reply_to: str) -> str:
    """The client id in a ``RESP.<client>.<task>`` reply subject, else the no-client token."""
    parts = reply_to.split(".")
    if len(parts) == 3 and parts[0] == "RESP" and parts[1]:
        return parts[1]
    return _NO_CLIENT


def progress_subject(client_id: str, task_id: str) -> str:
    """The subject of task ``task_id``'s progress record (``""`` client: no reply wanted)."""
    return f"PROGRESS.{client_id or _NO_CLIENT}.{task_id}"


def decode_progress(data: bytes, task_id: str) -> Progress | None:
    """The record in ``data`` if it is a valid progress of ``task_id``; None (logged) if not."""
    try:
        got = msgspec.json.decode(data, type=Progress)
        check_progress(got.fraction, got.note)
    except Exception as exc:  # any bytes at all: a RecursionError from deep nesting too
        log.warning("progress.invalid_record", task_id=task_id, error=str(exc))
        return None
    if got.task_id != task_id:
        log.warning("progress.record_mismatch", task_id=task_id, found=got.task_id)
        return None
    return got


async def read_progress(nc: Any, task_id: str, client_id: str | None = None) -> Progress | None:
    """The latest valid progress of ``task_id``; with no ``client_id``, of any client."""
    if client_id is not None:
        from ebind._jsreq import requests_for

        raw = await requests_for(nc).get_last(PROGRESS_STREAM, progress_subject(client_id, task_id))
        return None if raw is None or not raw.data else decode_progress(raw.data, task_id)
    from nats.js.errors import NotFoundError

    try:
        msg = await nc.jetstream().get_last_msg(PROGRESS_STREAM, f"PROGRESS.*.{task_id}")
    except NotFoundError:
        return None
    return None if not msg.data else decode_progress(msg.data, task_id)


class _TaskProgress:
    """One task's rate limiter: the latest report waits here until it may be written."""

    def __init__(
        self, publisher: ProgressPublisher, reply_to: str, task_id: str, name: str
    ) -> None:
        self.publisher = publisher
        self._name = name
        self._reply_to = reply_to
        self._task_id = task_id
        self._pending: Progress | None = None
        self._last_sent: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def report(self, fraction: float, note: str) -> None:
        """Write now if the rate allows, else keep it as the latest and write it later."""
        self._pending = Progress(
            task_id=self._task_id, fraction=fraction, note=note, at=datetime.now(UTC)
        )
        delay = flush_delay(time.monotonic(), self._last_sent)
        if delay == 0.0:
            await self._flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(delay, self._flush_later)

    def _flush_later(self) -> None:
        self._timer = None
        self.publisher.spawn(self._flush())

    async def _flush(self) -> None:
        record, self._pending = self._pending, None
        if record is None:
            return
        self._last_sent = time.monotonic()
        subject = progress_subject(client_of_reply(self._reply_to), self._task_id)
        await self.publisher.publish(subject, msgspec.json.encode(record))
        observe.emit(observe.PROGRESS_WRITTEN, task=self._name, fraction=record.fraction)


class ProgressPublisher:
    """A worker's progress writer: per-task rate limits, thread-safe entry for sync handlers."""

    def __init__(self, js: Any) -> None:
        self._js = js
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def for_task(self, task_id: str, reply_to: str, name: str = "") -> _TaskProgress:
        """A rate limiter for one task run (called on the worker loop)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return _TaskProgress(self, reply_to, task_id, name)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ProgressUnavailable("no worker loop publishes progress yet")
        return self._loop

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` on the worker loop, kept referenced until done."""
        task = self._running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def report_threadsafe(self, limiter: _TaskProgress, fraction: float, note: str) -> None:
        """Queue a report from a handler thread; never blocks it on NATS."""
        self._running_loop().call_soon_threadsafe(self.spawn, limiter.report(fraction, note))

    async def publish(self, subject: str, data: bytes) -> None:
        """Store one record; a failure is logged, never raised into the handler."""
        try:
            await self._js.publish(subject, data, stream=PROGRESS_STREAM)
        except Exception as exc:  # progress is advisory: the task's outcome must not depend on it
            log.warning("progress.publish_failed", subject=subject, error=repr(exc))
