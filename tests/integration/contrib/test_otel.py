"""OpenTelemetry: producer span -> worker CONSUMER span, exceptions, nested enqueues."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ebind.app import App
from ebind.context import Context
from ebind.contrib.otel import instrument_app, otel_middleware, uninstrument_app
from ebind.errors import TaskFailed
from ebind.retry import RetryPolicy


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


async def test_worker_span_is_a_child_of_the_producer_span(
    app: App, run_worker: Any, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")

    @app.task(name="child")
    async def child(x: int) -> int:
        return x + 1

    @app.task(name="parent")
    async def parent(x: int) -> int:
        # enqueued inside the handler: continues the same trace
        return await (await child.delay(x)).result(timeout=10)

    instrument_app(app, tracer_provider=provider)
    instrument_app(app, tracer_provider=provider)  # idempotent
    assert len(app.publish_hooks) == 1
    async with run_worker(app, middleware=[otel_middleware(provider)], concurrency=4):
        with tracer.start_as_current_span("checkout"):
            assert await (await parent.delay(1)).result(timeout=10) == 2
    uninstrument_app(app)
    assert app.publish_hooks == []

    done = exporter.get_finished_spans()
    (root,) = _by_name(done, "checkout")
    (send_parent,) = _by_name(done, "send parent")
    (run_parent,) = _by_name(done, "process parent")
    (send_child,) = _by_name(done, "send child")
    (run_child,) = _by_name(done, "process child")
    trace_ids = {s.context.trace_id for s in (root, send_parent, run_parent, send_child, run_child)}
    assert trace_ids == {root.context.trace_id}
    assert send_parent.kind is SpanKind.PRODUCER and run_parent.kind is SpanKind.CONSUMER
    assert send_parent.parent is not None and send_parent.parent.span_id == root.context.span_id
    assert (
        run_parent.parent is not None and run_parent.parent.span_id == send_parent.context.span_id
    )
    assert send_child.parent is not None and send_child.parent.span_id == run_parent.context.span_id
    assert run_child.parent is not None and run_child.parent.span_id == send_child.context.span_id
    attrs = run_parent.attributes or {}
    assert attrs["ebind.task.name"] == "parent" and attrs["ebind.task.attempt"] == 1
    assert attrs["messaging.system"] == "nats"


async def test_failed_attempts_record_the_exception(
    app: App, run_worker: Any, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans

    @app.task(name="fails", retry=RetryPolicy(initial_interval=0.1, maximum_attempts=2))
    async def fails() -> None:
        raise ValueError("bad input")

    instrument_app(app, tracer_provider=provider)
    async with run_worker(app, middleware=[otel_middleware(provider)]):
        with pytest.raises(TaskFailed):
            await (await fails.delay()).result(timeout=10)

    runs = _by_name(exporter.get_finished_spans(), "process fails")
    assert [(s.attributes or {})["ebind.task.attempt"] for s in runs] == [1, 2]
    for span in runs:
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["ebind.error_kind"] == "handler"
        (event,) = span.events
        assert event.name == "exception"
        assert (event.attributes or {})["exception.type"] == "ValueError"
    (send,) = _by_name(exporter.get_finished_spans(), "send fails")
    assert {s.context.trace_id for s in runs} == {send.context.trace_id}


async def test_dynamic_dag_steps_are_children_of_the_step_that_added_them(
    app: App, run_worker: Any, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    from ebind.workflow import DAG, from_context

    provider, exporter = spans

    @app.task(name="leaf")
    async def leaf(i: int) -> int:
        return i

    @app.task(name="fan")
    async def fan(ctx: Context) -> int:
        dag = from_context(ctx)
        assert dag is not None
        for i in range(2):
            await dag.step(f"leaf-{i}", leaf, i)
        return 2

    instrument_app(app, tracer_provider=provider)
    async with run_worker(app, middleware=[otel_middleware(provider)], scheduler=True):
        dag = DAG()
        dag.step("fan", fan)
        await dag.submit(app.workflow)
        for i in range(2):
            assert await app.workflow.result(dag.id, f"leaf-{i}", timeout=20) == i

    done = exporter.get_finished_spans()
    (run_fan,) = _by_name(done, "process fan")
    leaves = _by_name(done, "process leaf")
    sends = _by_name(done, "send leaf")
    assert len(leaves) == 2 and len(sends) == 2
    for send in sends:  # the scheduler's send span continues the adding step's span
        assert send.parent is not None and send.parent.span_id == run_fan.context.span_id
    assert {s.context.trace_id for s in leaves} == {run_fan.context.trace_id}
    # The link travels in the step records (any process may schedule the step).
    _, recs = await app.workflow.info(dag.id)
    parents = {r.step_id: r.trace_ctx.get("traceparent", "") for r in recs}
    span_hex = format(run_fan.context.span_id, "016x")
    assert parents["fan"] == ""
    assert all(span_hex in parents[f"leaf-{i}"] for i in range(2))
