"""Workflows end to end: refs and fan-in, a signal, a breakpoint, pause, cancel, retry, history.

# expect: total: 30
# expect: waiting for: approval
# expect: deployed v2 (approved by ann)
# expect: at breakpoint: publish
# expect: published: report
# expect: paused, then: done
# expect: canceled: canceled
# expect: after retry: done
"""

from __future__ import annotations

import asyncio

import msgspec

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG, DAGStatus, signal_ref

app = ebind.App("wf-guide")
fail_once = {"armed": True}


class Approval(msgspec.Struct):
    by: str


# --8<-- [start:tasks]
@app.task
async def fetch(n: int) -> int:
    return n


@app.task
async def total(parts: list[int]) -> int:
    return sum(parts)


@app.task
async def deploy(version: str, approval: Approval) -> str:
    return f"deployed {version} (approved by {approval.by})"


# --8<-- [end:tasks]


@app.task
async def publish(name: str) -> str:
    return name


@app.task(retry=ebind.RetryPolicy.none())
async def fragile() -> str:
    if fail_once["armed"]:
        fail_once["armed"] = False
        raise RuntimeError("first run fails")
    return "ok"


@app.task
async def nap(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def main() -> None:
    ebind.logging.configure(level="critical")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(concurrency=8, shutdown_grace=1)  # also runs the scheduler
            running = asyncio.create_task(worker.run())
            try:
                await guide(app.workflow)
            finally:
                await worker.stop()
                await running


async def guide(wf: ebind.workflow.Workflow) -> None:
    """The producer side, as the workflows page shows it."""
    # --8<-- [start:fanin]
    dag = DAG(labels=["reports"])
    parts = [dag.step(f"part-{i}", fetch, i * 5) for i in range(1, 4)]
    sum_step = dag.step("total", total, [p.ref() for p in parts])  # refs anywhere in args
    await dag.submit(wf)
    print("total:", await wf.result(dag.id, sum_step, timeout=30))
    # --8<-- [end:fanin]

    # --8<-- [start:signal]
    dag = DAG()
    step = dag.step("deploy", deploy, "v2", signal_ref("approval"))  # waits for the signal
    await dag.submit(wf)
    await asyncio.sleep(0.3)
    waiting = [s.name for s in await wf.list_signals(dag.id) if s.waiting]
    print("waiting for:", ", ".join(waiting))
    await wf.signal(dag.id, "approval", Approval(by="ann"))  # first delivery wins
    print(await wf.result(dag.id, step, timeout=30))
    # --8<-- [end:signal]

    # --8<-- [start:breakpoint]
    dag = DAG()
    pub = dag.step("publish", publish, "report", break_before=["review"])
    await dag.submit(wf, active_breakpoints=["review"])  # armed for this run
    await asyncio.sleep(0.3)
    held = [b.step_id for b in await wf.list_breakpoints(dag.id) if b.state.value == "blocked"]
    print("at breakpoint:", ", ".join(held))
    await wf.resume_breakpoint(dag.id, "review")
    print("published:", await wf.result(dag.id, pub, timeout=30))
    # --8<-- [end:breakpoint]

    # --8<-- [start:control]
    dag = DAG()
    first = dag.step("first", nap, 0.5)
    dag.step("second", fetch, 2, after=[first])
    await dag.submit(wf)
    await wf.pause(dag.id)  # the running step finishes; nothing new starts
    await wf.wait(dag.id, until=[DAGStatus.PAUSED], timeout=30)
    await wf.resume(dag.id)
    print("paused, then:", (await wf.wait(dag.id, timeout=30)).status.value)

    dag = DAG()
    dag.step("long", nap, 30)
    await dag.submit(wf)
    await wf.cancel(dag.id)
    print("canceled:", (await wf.wait(dag.id, timeout=30)).status.value)

    dag = DAG()
    dag.step("fragile", fragile)
    await dag.submit(wf)
    meta = await wf.wait(dag.id, timeout=30)
    if meta.status is DAGStatus.FAILED:
        await wf.retry(dag.id)  # runs the failed steps (and those skipped for them) again
    print("after retry:", (await wf.wait(dag.id, timeout=30)).status.value)
    meta, steps = await wf.info(dag.id)  # the stored history of the run
    # --8<-- [end:control]
    assert [s.step_id for s in steps] == ["fragile"], steps


if __name__ == "__main__":
    asyncio.run(main())
