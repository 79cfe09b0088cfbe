"""OpenTelemetry tracing for ebind (extra: ``pip install 'ebind-nats[otel]'``).

.. code-block:: python

    from ebind.contrib.otel import instrument_app, otel_middleware

    instrument_app(app)                                   # producer: inject trace context
    worker = app.worker(middleware=[otel_middleware()])   # worker: one span per attempt

Producer side, :func:`instrument_app` adds a publish hook to ``app.publish_hooks``: every
envelope the App publishes (``delay``/``send``/``apply_async``, DLQ requeues, DAG steps)
gets a PRODUCER span ``send <task>`` whose W3C context goes into ``envelope.trace_ctx``.
Worker side, :func:`otel_middleware` extracts that context and runs the attempt in a
CONSUMER span ``process <task>`` (a child of the producer span), with task attributes;
failures record the handler's exception and set an error status. Tasks enqueued from
inside a handler continue the same trace.

DAG steps are enqueued by the workflow scheduler, not by the code that caused them. A
dynamic step added with ``from_context(ctx).step(...)`` records the context of the span
that added it (``StepRecord.trace_ctx``), and its envelopes carry it, so its ``send``
span is a child of the adding step's ``process`` span, whichever process schedules it.
Static steps of a submitted DAG each start their own trace.
"""

from __future__ import annotations

from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the module
    raise ImportError(
        "ebind.contrib.otel needs opentelemetry-api; install ebind-nats[otel] "
        "(pip install 'ebind-nats[otel]')"
    ) from exc

import msgspec

from ebind.context import Context
from ebind.wire import TaskEnvelope
from ebind.worker.middleware import Handler, Middleware
from ebind.worker.outcome import AttemptError

__all__ = ["TRACER_NAME", "instrument_app", "otel_middleware", "uninstrument_app"]

TRACER_NAME = "ebind"
_HOOK_ATTR = "_ebind_otel_hook"
_DAG_EXTRAS_KEY = "dag"  # ebind.workflow.context.EXTRAS_KEY (not imported: keep this light)


def _attributes(env: TaskEnvelope, operation: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "messaging.system": "nats",
        "messaging.operation.type": operation,
        "messaging.destination.name": env.name,
        "messaging.message.id": env.id,
        "ebind.task.name": env.name,
        "ebind.task.id": env.id,
    }
    if env.dag_id:
        attrs["ebind.dag_id"] = env.dag_id
        attrs["ebind.step_id"] = env.step_id
    if env.target:
        attrs["ebind.target"] = env.target
    return attrs


def _parent_context(env: TaskEnvelope) -> otel_context.Context | None:
    """The context a producer span for ``env`` should continue (None: the current one)."""
    if trace.get_current_span().get_span_context().is_valid:
        return None
    if env.trace_ctx:
        # A dynamic DAG step (its record's trace context) or a DLQ requeue keeps its trace.
        return propagate.extract(env.trace_ctx)
    return None


def instrument_app(app: Any, tracer_provider: Any = None) -> None:
    """Inject the current trace context into every envelope ``app`` publishes (idempotent)."""
    if getattr(app, _HOOK_ATTR, None) is not None:
        return
    tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)

    def hook(env: TaskEnvelope) -> TaskEnvelope:
        with tracer.start_as_current_span(
            f"send {env.name}",
            context=_parent_context(env),
            kind=SpanKind.PRODUCER,
            attributes=_attributes(env, "send"),
        ):
            carrier = dict(env.trace_ctx)  # keeps ebind's own keys (DAG step generation)
            propagate.inject(carrier)
        return msgspec.structs.replace(env, trace_ctx=carrier)

    app.publish_hooks.append(hook)
    setattr(app, _HOOK_ATTR, hook)


def uninstrument_app(app: Any) -> None:
    """Undo :func:`instrument_app`."""
    hook = getattr(app, _HOOK_ATTR, None)
    if hook is not None:
        app.publish_hooks.remove(hook)
        setattr(app, _HOOK_ATTR, None)


def _watch_dynamic_steps(ctx: Context) -> None:
    # Dynamic steps this attempt adds record the running span as their parent.
    cdag = ctx.extras.get(_DAG_EXTRAS_KEY)
    carried: dict[str, str] | None = getattr(cdag, "trace_ctx", None)
    if carried is None:
        return
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    carried.update(carrier)


def otel_middleware(tracer_provider: Any = None) -> Middleware:
    """A worker Middleware running each attempt in a CONSUMER span (child of the producer)."""
    tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)

    def middleware(next_handler: Handler) -> Handler:
        async def traced(ctx: Context, env: TaskEnvelope) -> bytes:
            parent = propagate.extract(env.trace_ctx) if env.trace_ctx else None
            attrs = _attributes(env, "process")
            attrs["ebind.task.attempt"] = env.attempt
            attrs["ebind.worker_id"] = ctx.worker_id
            with tracer.start_as_current_span(
                f"process {env.name}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attrs,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                _watch_dynamic_steps(ctx)
                try:
                    return await next_handler(ctx, env)
                except AttemptError as exc:
                    span.record_exception(exc.__cause__ or exc)
                    span.set_attribute("ebind.error_kind", exc.error.kind)
                    span.set_status(Status(StatusCode.ERROR, str(exc.error)))
                    raise

        return traced

    return middleware
