"""SIGINT/SIGTERM handling for a running worker: the first signal stops it gracefully.

The first signal calls :meth:`Worker.request_stop` (stop fetching, let in-flight handlers
finish within ``shutdown_grace``, nak the rest); a second one cancels the run, which still
naks every held message without delay before exiting.

A worker under ``ebind worker --processes`` may get SIGTERM twice for one stop: systemd
signals every process of the unit, and the supervisor forwards its own. There only
SIGINT (the supervisor's forward of a second signal) stops at once; a repeated SIGTERM
changes nothing, and a SIGINT outside the run (while starting, or exiting) is ignored.
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


async def run_until_signalled(worker: Worker, *, supervised: bool = False) -> None:
    """Run ``worker`` until it stops; SIGINT/SIGTERM stop it gracefully, a second one at once.

    ``supervised``: only a SIGINT after the first signal stops at once (see the module).
    """
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
        elif supervised and signum != signal.SIGINT:
            log.info("worker.already_stopping", worker_id=worker.worker_id)
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
        if supervised:  # a late "stop now" must not become a KeyboardInterrupt in teardown
            signal.signal(signal.SIGINT, signal.SIG_IGN)
