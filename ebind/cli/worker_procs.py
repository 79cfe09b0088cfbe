"""``ebind worker --processes N``: a parent that runs N worker processes and keeps them up.

Each child is ``python -m ebind`` with this process's own arguments and :data:`CHILD_ENV`
set, so it parses the same flags, imports the App itself and opens its own NATS
connection; the parent never imports the App or connects. Children run in their own
process group, so a terminal's Ctrl-C reaches only the parent, which forwards its first
signal as SIGTERM (graceful drain) and a second as SIGINT (stop now, as for one worker).
A child that exits while no stop was asked for is restarted by the rules in
:mod:`ebind.supervision`; a child whose parent vanished drains and exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence

from ebind.logging import get_logger
from ebind.supervision import (
    CHILD_ENV,
    ChildSlot,
    GiveUp,
    RestartPolicy,
    describe_exit,
    on_child_exit,
)

__all__ = ["supervise", "watch_parent"]

log = get_logger("ebind.worker")

PARENT_CHECK = 1.0
"""Seconds between a child's checks that its supervisor is still alive."""


class _Supervisor:
    def __init__(
        self, argv: Sequence[str], count: int, nats_url: str | None, policy: RestartPolicy
    ) -> None:
        self.argv = list(argv)
        self.count = count
        self.nats_url = nats_url
        self.policy = policy
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = asyncio.Event()
        self.signals = 0
        self.give_up: GiveUp | None = None

    async def _start(self, index: int) -> asyncio.subprocess.Process:
        slot = ChildSlot(index=index, parent_pid=os.getpid(), nats_url=self.nats_url)
        env = {**os.environ, CHILD_ENV: slot.env_value()}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ebind",
            *self.argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            process_group=0,
        )
        self.procs[index] = proc
        log.info("worker.process_started", index=index, pid=proc.pid)
        return proc

    async def _keep(self, index: int) -> int:
        """Run slot ``index`` until a stop; return the last child's exit code."""
        quick = 0
        while True:
            started = time.monotonic()
            proc = await self._start(index)
            if self.stopping.is_set():  # the stop came while this child was starting
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
            if self.stopping.is_set():
                return code
            uptime = time.monotonic() - started
            action = on_child_exit(code, uptime, quick, self.policy)
            if isinstance(action, GiveUp):
                log.error("worker.process_gave_up", index=index, reason=action.reason)
                self.give_up = action
                self.stop()
                return code
            quick = action.quick_deaths
            log.warning(
                "worker.process_died",
                index=index,
                pid=proc.pid,
                how=describe_exit(code),
                uptime=round(uptime, 3),
                restart_in=action.delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), action.delay)
            if self.stopping.is_set():
                return code

    def stop(self, *, now: bool = False) -> None:
        """Ask every running child to drain (SIGTERM), or with ``now`` to stop at once (SIGINT).

        A child takes a repeated SIGTERM as the same request (systemd may have sent it one
        too); only SIGINT after a first signal ends its grace.
        """
        self.stopping.set()
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT if now else signal.SIGTERM)

    def on_signal(self, signum: int) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            log.info("worker.stopping", processes=self.count, signal=name)
        else:
            log.warning("worker.stopping_now", processes=self.count, signal=name)
        self.stop(now=self.signals > 1)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.on_signal, sig)
                installed.append(sig)
        log.info("worker.supervisor_started", processes=self.count, pid=os.getpid())
        try:
            codes = await asyncio.gather(*(self._keep(i) for i in range(self.count)))
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        if self.give_up is not None:
            return self.give_up.exit_code
        # The signal we sent can land before a child set up its handlers or after it took
        # them down to exit: it then dies of that signal, holding no task either way.
        asked = (0, -signal.SIGTERM, -signal.SIGINT)
        bad = [(i, c) for i, c in enumerate(codes) if c not in asked]
        if bad:
            log.error(
                "worker.processes_failed",
                exits={str(i): describe_exit(c) for i, c in bad},
            )
            return 1
        log.info("worker.supervisor_stopped", processes=self.count)
        return 0


def supervise(
    argv: Sequence[str],
    count: int,
    *,
    nats_url: str | None = None,
    policy: RestartPolicy | None = None,
) -> int:
    """Run ``count`` children of ``python -m ebind *argv`` until a signal; the exit code.

    0 once every child drained after SIGTERM/SIGINT; 1 when children kept dying or a child
    did not exit cleanly; 2 when a child refused the command line.
    """
    return asyncio.run(_Supervisor(argv, count, nats_url, policy or RestartPolicy()).run())


async def watch_parent(parent_pid: int) -> None:
    """In a child: send ourselves SIGTERM (graceful drain) once the supervisor is gone."""
    # No event tells a child its parent died, so poll.
    while os.getppid() == parent_pid:  # noqa: ASYNC110
        await asyncio.sleep(PARENT_CHECK)
    log.warning("worker.supervisor_gone", parent_pid=parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)
