"""A sync handler in the worker's thread pool enqueues and awaits another task."""

from __future__ import annotations

from sync_helpers import connections_named, worker_thread
from sync_tasks import app_pair

from ebind.embed import Node
from ebind.sync import _runtime


def test_a_sync_handler_enqueues_and_awaits_through_the_workers_connection(
    nats_node: Node,
) -> None:
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    with worker_thread(worker_app, concurrency=8):
        try:
            worker_conns = connections_named(nats_node, "ebind:sync-worker")
            # Each waiting handler holds a slot, so fewer than the slots wait at once (as
            # with Celery's get() in a task: all slots waiting leaves none for the inner task).
            handles = [tasks.outer.sync.delay(n) for n in range(6)]
            assert producer.sync.gather(handles, timeout=30) == [2 * n + 1 for n in range(6)]
            # The handlers used the worker's own connection and loop: nothing new connected.
            assert connections_named(nats_node, "ebind:sync-worker") == worker_conns
            assert worker_app not in _runtime.apps
            worker_app.sync.close()  # not the blocking API's connection: left alone
            assert worker_app.is_connected
            assert tasks.outer.sync.delay(20).get(timeout=10) == 41
        finally:
            producer.sync.close()
