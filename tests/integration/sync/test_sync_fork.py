"""The blocking API after fork: the child connects afresh, the parent's connection is intact."""

from __future__ import annotations

import pytest
from sync_helpers import await_connections, connections_named, in_forked_child, worker_thread
from sync_tasks import app_pair

from ebind.embed import Node
from ebind.errors import NotConnected


def test_fork_after_first_use_then_use_in_the_child(nats_node: Node) -> None:
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    with worker_thread(worker_app):
        try:
            assert tasks.add.sync.delay(1, 2).get(timeout=10) == 3
            inherited = tasks.nap.sync.delay(0.5)

            def in_child() -> dict[str, object]:
                try:
                    inherited.get(timeout=5)
                    stale = "no error"
                except NotConnected as exc:
                    stale = str(exc)
                value = tasks.add.sync.delay(20, 22).get(timeout=10)
                batch = tasks.add.sync.delay_many([(1, 1), (2, 2)])
                values = producer.sync.gather(batch, timeout=10)
                conns = connections_named(nats_node, "ebind:sync-producer")
                producer.sync.close()
                return {"value": value, "values": values, "stale": stale, "conns": conns}

            report = in_forked_child(in_child)
            assert report["value"] == 42
            assert report["values"] == [2, 4]
            assert "left in the parent process by fork" in report["stale"]
            assert report["conns"] == 2  # the parent's and the child's own
            # The parent's connection survived the child's connect, use and exit.
            assert inherited.get(timeout=10) == "rested"
            assert tasks.add.sync.delay(2, 2).get(timeout=10) == 4
            await_connections(nats_node, "ebind:sync-producer", 1)
        finally:
            producer.sync.close()


def test_sync_close_then_reconnect_on_next_call(nats_node: Node) -> None:
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    with worker_thread(worker_app):
        try:
            producer.sync.connect()
            assert producer.is_connected
            producer.sync.close()
            assert not producer.is_connected
            producer.sync.close()  # idempotent
            assert tasks.add.sync.delay(3, 4).get(timeout=10) == 7
            assert producer.is_connected
        finally:
            producer.sync.close()
    with pytest.raises(NotConnected, match="not connected"):
        producer.nc  # noqa: B018 - the property raises
