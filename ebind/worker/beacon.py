"""A running worker's record for ``ebind worker ls``: rewritten every few seconds, gone after.

Each write carries a per-message TTL of a few intervals, so the record of a worker that
died (SIGKILL, lost host) disappears on its own; a worker that stops deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import Any

import msgspec

from ebind._aio import raise_if_cancelling
from ebind.inspection import WorkerRecord, worker_key
from ebind.logging import get_logger
from ebind.streams import KV_LEASES
from ebind.workflow.liveness import record_ttl_header

__all__ = ["BEACON_INTERVAL", "RECORD_TTL_INTERVALS", "Beacon"]

log = get_logger("ebind.worker")

BEACON_INTERVAL = 5.0
"""Seconds between rewrites of a worker's record."""
RECORD_TTL_INTERVALS = 3
"""A record outlives its last write by this many intervals."""
_enc = msgspec.json.Encoder()


class Beacon:
    """Rewrites ``worker``'s record in the leases bucket until stopped."""

    def __init__(self, worker: Any, interval: float = BEACON_INTERVAL) -> None:
        self._worker = worker
        self.interval = interval
        self._started_at = time.time()
        self._subject = f"$KV.{KV_LEASES}.{worker_key(worker.worker_id)}"
        self._failing = False

    def record(self) -> WorkerRecord:
        """The record as of now."""
        w = self._worker
        return WorkerRecord(
            worker_id=w.worker_id,
            queues=list(w.served_queues),
            claims=sorted(w.claims),
            concurrency=w.concurrency,
            in_flight=w.in_flight,
            held=w.held_count,
            leader=w.is_leader,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            at=time.time(),
        )

    async def write(self) -> None:
        """Write the record once (errors are logged once per failing stretch)."""
        js = self._worker.app.js
        headers = {"Nats-TTL": record_ttl_header(self.interval * RECORD_TTL_INTERVALS)}
        try:
            await js.publish(self._subject, _enc.encode(self.record()), headers=headers)
        except Exception as exc:
            if not self._failing:
                log.warning("worker.record_write_failed", error=repr(exc))
            self._failing = True
            return
        self._failing = False

    async def run(self) -> None:
        """Rewrite the record every ``interval`` until cancelled; the caller writes the first."""
        while True:
            await asyncio.sleep(self.interval)
            await self.write()
            raise_if_cancelling()

    async def remove(self) -> None:
        """Delete the record (best effort: its TTL removes it anyway)."""
        js = self._worker.app.js
        with contextlib.suppress(Exception):
            await js.publish(self._subject, b"", headers={"KV-Operation": "DEL"})
