"""SIGINT/SIGTERM handling for a running worker: the first signal stops it gracefully.

The first signal calls :meth:`Worker.request_stop` (stop fetching, let in-flight handlers
finish within ``shutdown_grace``, nak the rest); a second one cancels the run, which still
naks every held message without delay before exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

from ebind.logging import get_logger

if TYPE_CHECKING:
    from ebind.worker.worker import Worker

__all__ = ["run_until_signalled"]

log = get_logger("ebind.worker")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def run_until_signalled(worker: Worker) -> None:
    """Run ``worker`` until it stops; SIGINT/SIGTERM stop it gracefully, a second one at once."""
    loop = asyncio.get_running_loop()
    run_task = asyncio.create_task(worker.run(), name="ebind-worker")
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            log.info(
                "worker.stopping", worker_id=worker.worker_id, signal=signal.Signals(signum).name
            )
            worker.request_stop()
        else:
            log.warning("worker.stopping_now", worker_id=worker.worker_id)
            run_task.cancel()

    installed: list[signal.Signals] = []
    for sig in _SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await run_task
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
