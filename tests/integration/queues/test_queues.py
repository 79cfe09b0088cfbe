"""Queues on one server: services never see each other's tasks, -Q routes, targets still work."""

from __future__ import annotations

import asyncio

import structlog

from ebind.app import App
from ebind.context import Context
from ebind.inspection import queue_rows
from ebind.streams import DLQ_STREAM
from tests.integration.queues.conftest import AppFactory
from tests.integration.worker.worker_helpers import running


async def _dlq_total(app: App) -> int:
    return int((await app.js.stream_info(DLQ_STREAM)).state.messages)


def _log_events(logs: list[dict[str, object]], event: str) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == event]


async def test_two_services_on_one_server_run_only_their_own_tasks(service: AppFactory) -> None:
    """Disjoint task sets, a worker each, tasks sent by name from a third process: every
    task runs on its own service, nothing is nak'd or dead-lettered."""
    ran: dict[str, list[str]] = {"a": [], "b": []}
    async with service("svc-a") as a, service("svc-b") as b, service("front") as front:

        @a.task(name="svc_a.work")
        async def work_a(ctx: Context, i: int) -> str:
            ran["a"].append(ctx.worker_id)
            return "a"

        @b.task(name="svc_b.work")
        async def work_b(ctx: Context, i: int) -> str:
            ran["b"].append(ctx.worker_id)
            return "b"

        before = await _dlq_total(front)
        with structlog.testing.capture_logs() as logs:
            async with running(a, worker_id="wa"), running(b, worker_id="wb"):
                futs = []
                for i in range(10):
                    futs.append(await front.enqueue("svc_a.work", i))
                    futs.append(await front.enqueue("svc_b.work", i))
                results = [await f.result(10) for f in futs]
        assert results == ["a", "b"] * 10
        assert ran == {"a": ["wa"] * 10, "b": ["wb"] * 10}
        assert await _dlq_total(front) == before
        assert not [e for e in logs if "unknown" in str(e.get("error_kind", ""))]


async def test_a_task_nobody_serves_waits_visibly_then_runs(service: AppFactory) -> None:
    async with service("wait-front") as front, service("wait-other") as other:

        @other.task(name="wait.unrelated")
        async def unrelated() -> None:
            return None

        before = await _dlq_total(front)
        async with running(other):  # a running worker of another service never takes it
            fut = await front.enqueue("wait.later", 7)
            await asyncio.sleep(0.5)
            (row,) = [r for r in await queue_rows(front.js) if r.task == "wait.later"]
        assert (row.queue, row.band, row.depth, row.consumer) == ("default", "normal", 1, False)
        assert row.oldest_age is not None and row.oldest_age >= 0.4
        assert await _dlq_total(front) == before

        async with service("wait-late") as late:

            @late.task(name="wait.later")
            async def later(n: int) -> int:
                return n * 6

            async with running(late):
                assert await fut.result(10) == 42
            rows = [r for r in await queue_rows(front.js) if r.task == "wait.later"]
        # the worker made the task's lanes, one per band, all empty now
        assert [(r.band, r.depth, r.consumer) for r in rows] == [
            ("high", 0, True),
            ("normal", 0, True),
            ("low", 0, True),
        ]


async def test_workers_take_only_the_queues_they_serve(service: AppFactory) -> None:
    seen: list[tuple[str, str]] = []
    async with service("route") as app:

        @app.task(name="route.charge", queue="billing")
        async def charge(ctx: Context, n: int) -> int:
            seen.append((ctx.worker_id, "charge"))
            return n

        @app.task(name="route.mail", queue="emails")
        async def mail(ctx: Context, n: int) -> int:
            seen.append((ctx.worker_id, "mail"))
            return n

        async with running(app, worker_id="billing-1", queues=["billing"]) as w:
            assert w.served_queues == ("billing",)
            c = await charge.delay(1)
            m = await mail.delay(2)
            moved = await charge.apply_async((3,), queue="emails")  # the call's queue wins
            assert await c.result(10) == 1
            await asyncio.sleep(0.3)
            assert not m.done() and not moved.done()
        rows = {(r.queue, r.task): r.depth for r in await queue_rows(app.js) if r.depth}
        assert rows == {("emails", "route.mail"): 1, ("emails", "route.charge"): 1}
        async with running(app, worker_id="emails-1", queues=["emails"]):
            assert (await m.result(10), await moved.result(10)) == (2, 3)
    assert sorted(seen) == [
        ("billing-1", "charge"),
        ("emails-1", "charge"),
        ("emails-1", "mail"),
    ]


async def test_without_q_a_worker_serves_default_and_every_queue_its_tasks_name(
    service: AppFactory,
) -> None:
    async with service("dq") as app:

        @app.task(name="dq.plain")
        async def plain() -> str:
            return "plain"

        @app.task(name="dq.report", queue="reports", priority="low")
        async def report() -> str:
            return "report"

        async with running(app) as w:
            assert w.served_queues == ("default", "reports")
            assert {lane.queue for lane in w.lanes} == {"default", "reports"}
            assert await (await plain.delay()).result(10) == "plain"
            assert await (await report.delay()).result(10) == "report"


async def test_targets_work_inside_a_queue(service: AppFactory) -> None:
    ran: list[str] = []
    async with service("tq") as app:

        @app.task(name="tq.render", queue="gpu")
        async def render(ctx: Context, i: int) -> int:
            ran.append(ctx.worker_id)
            return i

        async with (
            running(app, worker_id="gpu-1", queues=["gpu"]),
            running(app, worker_id="gpu-2", queues=["gpu"]),
        ):
            futs = [await render.apply_async((i,), target="gpu-2") for i in range(6)]
            assert [await f.result(10) for f in futs] == list(range(6))
    assert ran == ["gpu-2"] * 6
