"""Wiring a Workflow to NATS: from a bare connection or from a connected App."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ebind._jsreq import PubAck
from ebind.streams import task_subject
from ebind.wire import TaskEnvelope
from ebind.workflow.enqueuer import NatsEnqueuer
from ebind.workflow.liveness import NatsLiveness
from ebind.workflow.redispatch import NatsPresence
from ebind.workflow.store_nats import NatsStore

if TYPE_CHECKING:
    from ebind.workflow.workflow import Workflow

__all__ = ["build_from_app", "build_from_nats"]

_enc = msgspec.json.Encoder()


def _js_publisher(js: Any) -> Any:
    async def publish(env: TaskEnvelope, *, msg_id: str) -> PubAck:
        ack = await js.publish(
            task_subject(env.name, env.target, env.queue, env.priority),
            _enc.encode(env),
            headers={"Nats-Msg-Id": msg_id},
        )
        return PubAck(stream=ack.stream, seq=int(ack.seq), duplicate=bool(ack.duplicate))

    return publish


def _bus(js: Any, replicas: int) -> Any:
    from ebind.workflow.bus_nats import NatsBus

    return NatsBus(js, replicas=replicas)


def _elector(js: Any) -> Any:
    try:
        from ebind.workflow.leader import KVLeaseElector
    except ImportError:
        return None
    return KVLeaseElector(js)


async def build_from_nats(cls: type[Workflow], nc: Any, replicas: int, **options: Any) -> Workflow:
    """Workflow over ``nc``: NatsStore, NatsBus, a JetStream enqueuer, NatsLiveness."""
    from ebind.workflow.bus_nats import NatsBus

    js = nc.jetstream()
    store = await NatsStore.create(js, replicas=replicas)
    bus = await NatsBus.create(js, replicas=replicas)
    options.setdefault("liveness", NatsLiveness(js))
    options.setdefault("presence", NatsPresence(js))
    return cls(store, bus, NatsEnqueuer(_js_publisher(js)), **options)


def build_from_app(cls: type[Workflow], app: Any, **options: Any) -> Workflow:
    """Workflow over a connected App: its JetStream, its publish path, its registry."""
    js = app.js
    replicas = int(getattr(app, "replicas", 1) or 1)
    options.setdefault("liveness", NatsLiveness(js))
    options.setdefault("presence", NatsPresence(js, signer=getattr(app, "signer", None)))
    options.setdefault("registry", getattr(app, "registry", None))
    retention = getattr(app, "retention", None)
    if retention is not None:
        options.setdefault("dag_history", retention.dag_history)
    if "elector" not in options:
        options["elector"] = _elector(js)
    store: Any = NatsStore(js, replicas=replicas)
    publish: Any = app.publish_task
    codec = getattr(app, "payload_codec", None)
    if codec is not None:
        # The KV bucket holds only sealed step data, and every step message the
        # scheduler dispatches carries its resolved arguments sealed.
        from ebind.workflow.sealed import SealedStore, sealing_publisher

        store = SealedStore(store, codec)
        publish = sealing_publisher(publish, codec)
    return cls(store, _bus(js, replicas), NatsEnqueuer(publish), **options)
