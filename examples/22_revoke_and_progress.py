"""Revoke and progress: a running task reports progress; revoke running and delayed tasks.

Starts its own embedded nats-server, so it needs nothing running.

# expect: progress seen: 0.5 (half way)
# expect: running task revoked: kind=revoked
# expect: delayed task revoked before it ran: kind=revoked
# expect: revoked tasks that ran: 0 of 1
# expect: sync handler stopped at its next check: kind=revoked
"""

from __future__ import annotations

import asyncio
import threading

import ebind
import ebind.logging
from ebind.embed import start_node

app = ebind.App("revoke-and-progress")
started = asyncio.Event()
delayed_runs: list[str] = []
sync_started = threading.Event()


@app.task
async def crunch(ctx: ebind.Context, steps: int) -> str:
    # Async handlers report progress with await and are cancelled when revoked.
    for i in range(steps):
        if i == steps // 2:
            await ctx.progress(i / steps, note="half way")
            started.set()
        await asyncio.sleep(0.05)
    return "finished"


@app.task
async def reminder(ctx: ebind.Context, who: str) -> None:
    delayed_runs.append(who)


@app.task
def export(ctx: ebind.Context, rows: int) -> int:
    # Sync handlers cannot be cancelled from outside: they check the revoke flag themselves.
    done = 0
    for _ in range(rows):
        ctx.progress_sync(done / rows, note=f"{done} rows")
        sync_started.set()
        ctx.check_revoked()  # raises TaskRevoked once the task is revoked
        threading.Event().wait(0.02)
        done += 1
    return done


async def kind_of(fut: ebind.Future[object]) -> str:
    """The failure kind of a task that is expected to fail."""
    try:
        await fut.result(timeout=10)
    except ebind.TaskFailed as exc:
        return exc.error.kind
    return "succeeded"


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(concurrency=4, scheduler=False)
            running = asyncio.create_task(worker.run())
            try:
                fut = await crunch.delay(200)
                await asyncio.wait_for(started.wait(), 10)
                progress = await fut.progress()
                assert progress is not None
                print(f"progress seen: {progress.fraction} ({progress.note})")
                await fut.revoke()
                print("running task revoked: kind=" + await kind_of(fut))

                later = await reminder.apply_async(("Ada",), countdown=1.0)
                await later.revoke()
                print("delayed task revoked before it ran: kind=" + await kind_of(later))
                await asyncio.sleep(1.5)  # past the countdown: the worker drops it
                print(f"revoked tasks that ran: {len(delayed_runs)} of 1")

                job = await export.delay(500)
                await asyncio.to_thread(sync_started.wait, 10)
                await job.revoke()
                print("sync handler stopped at its next check: kind=" + await kind_of(job))
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
