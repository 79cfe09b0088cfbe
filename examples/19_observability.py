"""Observability: Prometheus metrics and OpenTelemetry traces around a worker.

The Prometheus middleware counts attempts by outcome, times handlers and reads the DLQ
size; the OpenTelemetry hook puts the producer's trace context into each task envelope
and the middleware continues it in a CONSUMER span per attempt on the worker.
Starts its own embedded nats-server, so it needs nothing running.

# expect: ebind_tasks_total{task=greet,outcome=succeeded} = 2.0
# expect: ebind_tasks_total{task=flaky,outcome=retrying} = 1.0
# expect: ebind_tasks_total{task=flaky,outcome=dead_lettered} = 1.0
# expect: ebind_task_duration_seconds_count{task=greet} = 2.0
# expect: ebind_dlq_messages = 1.0
# expect: spans: checkout > send greet > process greet
# expect: same trace: True
# expect: failed attempts recorded: 2 (ValueError)
"""

from __future__ import annotations

import asyncio
import contextlib

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import ebind
import ebind.logging
from ebind.contrib.otel import instrument_app, otel_middleware
from ebind.contrib.prometheus import prometheus_middleware
from ebind.embed import start_node

app = ebind.App("observability")


@app.task(name="greet")
async def greet(who: str) -> str:
    return f"hello, {who}"


@app.task(name="flaky", retry=ebind.RetryPolicy(initial_interval=0.1, maximum_attempts=2))
async def flaky() -> None:
    raise ValueError("upstream said no")


async def main() -> None:
    ebind.logging.configure(level="error")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("example")
    registry = CollectorRegistry()  # the global registry works too

    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            metrics = prometheus_middleware(registry, app=app)
            instrument_app(app, tracer_provider=provider)
            worker = app.worker(scheduler=False, middleware=[metrics, otel_middleware(provider)])
            running = asyncio.create_task(worker.run())
            try:
                with tracer.start_as_current_span("checkout"):
                    await (await greet.delay("Ada")).result(timeout=10)
                await (await greet.delay("Grace")).result(timeout=10)
                with contextlib.suppress(ebind.TaskFailed):
                    await (await flaky.delay()).result(timeout=10)
                await metrics.refresh_dlq()
            finally:
                await worker.stop()
                await running

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    for task, outcome in [
        ("greet", "succeeded"),
        ("flaky", "retrying"),
        ("flaky", "dead_lettered"),
    ]:
        value = sample("ebind_tasks_total", task=task, outcome=outcome)
        print(f"ebind_tasks_total{{task={task},outcome={outcome}}} = {value}")
    print(
        "ebind_task_duration_seconds_count{task=greet} =",
        sample("ebind_task_duration_seconds_count", task="greet"),
    )
    print("ebind_dlq_messages =", sample("ebind_dlq_messages"))

    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    (root,) = [s for s in spans if s.name == "checkout"]
    run = next(
        s for s in spans
        if s.name == "process greet" and s.context.trace_id == root.context.trace_id
    )  # fmt: skip
    chain, span = [], run
    while span is not None:
        chain.append(span)
        span = by_id.get(span.parent.span_id) if span.parent else None
    print("spans:", " > ".join(s.name for s in reversed(chain)))
    print("same trace:", {s.context.trace_id for s in chain} == {root.context.trace_id})
    failed = [s for s in spans if s.name == "process flaky"]
    kinds = {e.attributes["exception.type"] for s in failed for e in s.events if e.attributes}
    print(f"failed attempts recorded: {len(failed)} ({', '.join(sorted(kinds))})")
    provider.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
