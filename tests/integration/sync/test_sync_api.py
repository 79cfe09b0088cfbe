"""The blocking API from plain threads: results, errors, one shared connection, workflows."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from sync_helpers import await_connections, connections_named, total_connections, worker_thread
from sync_tasks import Tasks, app_pair

from ebind.app import App
from ebind.embed import Node
from ebind.errors import NotConnected, TaskFailed, TaskTimeout
from ebind.sync import SyncCallInEventLoop, SyncResult
from ebind.workflow import DAG, signal_ref
from ebind.workflow.types import DAGStatus


@pytest.fixture
def pair(nats_node: Node) -> Iterator[tuple[App, Tasks, App]]:
    """A producer App (blocking API only) and a running worker; the producer closed after."""
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    with worker_thread(worker_app, scheduler=True):
        try:
            yield producer, tasks, worker_app
        finally:
            producer.sync.close()


def test_many_threads_share_one_connection(nats_node: Node, pair: tuple[App, Tasks, App]) -> None:
    _, tasks, _ = pair
    before = total_connections(nats_node)  # the worker's connections only
    errors: list[BaseException] = []
    results: dict[int, int] = {}

    def caller(k: int) -> None:
        try:
            for i in range(10):
                results[k * 100 + i] = tasks.add.sync.delay(k, i).get(timeout=10)
        except BaseException as exc:
            errors.append(exc)

    # Every thread's first call races to connect: exactly one connection results.
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert results == {k * 100 + i: k + i for k in range(16) for i in range(10)}
    # 160 calls from 16 threads: one connect in all, and the producer holds exactly one.
    assert total_connections(nats_node) == before + 1
    assert connections_named(nats_node, "ebind:sync-producer") == 1


def test_results_handles_and_batches(pair: tuple[App, Tasks, App]) -> None:
    producer, tasks, _ = pair
    res = tasks.add.sync.apply_async((2, 3), task_id="sync-fixed-id")
    assert isinstance(res, SyncResult)
    assert res.id == "sync-fixed-id"
    assert res.get(timeout=10) == 5
    assert res.ready()
    assert "ready" in repr(res)
    # A handle on an earlier task from its id alone, like Celery's AsyncResult(id).
    assert producer.sync.future("sync-fixed-id", name="sync.add").get(timeout=10) == 5
    by_name = producer.sync.enqueue("sync.add", 10, b=20)
    assert by_name.get(timeout=10) == 30
    assert producer.sync.apply_async("sync.add", (4, 4)).get(timeout=10) == 8
    batch = tasks.add.sync.delay_many((i, i) for i in range(50))
    assert producer.sync.gather(batch, timeout=20) == [2 * i for i in range(50)]
    assert producer.sync.gather([]) == []
    sent = tasks.add.sync.send(1, 1)
    assert isinstance(sent, str) and sent
    assert isinstance(producer.sync.send("sync.add", 1, 1), str)


def test_errors_are_raised_as_the_async_types(pair: tuple[App, Tasks, App]) -> None:
    producer, tasks, _ = pair
    with pytest.raises(TaskFailed) as failed:
        tasks.boom.sync.delay("no such user").get(timeout=10)
    assert failed.value.error.kind == "bad_input"
    assert "no such user" in str(failed.value)
    slow = tasks.nap.sync.delay(1.5)
    assert not slow.ready()
    with pytest.raises(TaskTimeout, match=r"within 0\.2s"):
        slow.get(timeout=0.2)
    assert slow.get(timeout=10) == "rested"  # the timeout lost nothing: wait again
    naps = [tasks.nap.sync.delay(1.5), tasks.add.sync.delay(1, 1)]
    with pytest.raises(TaskTimeout, match=r"1 of 2 results did not arrive within 0\.3s"):
        producer.sync.gather(naps, timeout=0.3)
    with pytest.raises(TypeError, match="keyword"):
        producer.sync.enqueue("sync.unregistered", x=1)


async def test_a_blocking_call_inside_an_event_loop_is_refused(nats_url: str) -> None:
    producer, tasks, _, _ = app_pair(nats_url)
    with pytest.raises(SyncCallInEventLoop, match=r"await task\.delay"):
        tasks.add.sync.delay(1, 2)
    # A handle made in a plain thread cannot be waited on from async code either.
    handle = await asyncio.to_thread(tasks.add.sync.delay, 1, 2)
    with pytest.raises(SyncCallInEventLoop, match="stall"):
        handle.get(timeout=1)
    with pytest.raises(SyncCallInEventLoop, match="stall"):
        producer.sync.gather([handle], timeout=1)
    await asyncio.to_thread(producer.sync.close)
    async with producer:
        with pytest.raises(SyncCallInEventLoop, match="stall"):
            producer.sync.enqueue("sync.add", 1, 2)


def test_an_app_left_connected_on_a_stopped_loop_is_named(nats_url: str) -> None:
    producer, tasks, _, _ = app_pair(nats_url)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(producer.connect())
    try:
        with pytest.raises(NotConnected, match="event loop that is not running"):
            tasks.add.sync.delay(1, 2)
    finally:
        loop.run_until_complete(producer.close())
        loop.close()
    # Closed there, it connects on the background loop at the next blocking call.
    assert tasks.add.sync.send(1, 2)
    producer.sync.close()


def test_the_interpreter_exits_cleanly_with_the_connection_open(nats_node: Node) -> None:
    script = (
        "import sys, ebind\n"
        "app = ebind.App('sync-exit', nats_url=sys.argv[1])\n"
        "print('sent', app.sync.send('sync.add', 1, 2))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, nats_node.client_url],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert "sent " in proc.stdout
    for trouble in ("Traceback", "Exception ignored", "Task was destroyed"):
        assert trouble not in proc.stderr, proc.stderr
    await_connections(nats_node, "ebind:sync-exit", 0)


def test_workflow_submit_signal_result(pair: tuple[App, Tasks, App]) -> None:
    producer, tasks, _ = pair
    dag = DAG()
    first = dag.step("first", tasks.add, 1, 2)
    second = dag.step("second", tasks.add, first.ref(), signal_ref("go"))
    dag_id = producer.sync.submit(dag)
    assert dag_id == dag.id
    assert producer.sync.result(dag_id, first, timeout=20) == 3
    assert producer.sync.signal(dag_id, "go", 4) is True
    assert producer.sync.result(dag_id, "second", timeout=20) == 7
    assert producer.sync.wait(dag_id, timeout=20).status is DAGStatus.DONE
    assert second.id == "second"

    other = DAG()
    other.step("held", tasks.add, 1, signal_ref("never"))
    producer.sync.submit(other)
    producer.sync.cancel(other.id)
    assert producer.sync.wait(other.id, timeout=20).status is DAGStatus.CANCELED
