"""One StateStore contract, run against MemStore and NatsStore (real nats-server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import msgspec
import nats
import pytest

from ebind.embed import Node
from ebind.errors import (
    DAGNotFound,
    InvalidName,
    SignalNotFound,
    StaleRevision,
    StepNotFound,
)
from ebind.workflow.protocols import StateStore
from ebind.workflow.store_mem import MemStore
from ebind.workflow.store_nats import NatsStore
from ebind.workflow.types import (
    DAGMeta,
    DAGStatus,
    SignalRecord,
    StepRecord,
    StepStatus,
)


@pytest.fixture(scope="module")
def server_url(nats_node_module: Node) -> Iterator[str]:
    yield nats_node_module.client_url


@pytest.fixture(params=["mem", "nats"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    if request.param == "mem":
        yield MemStore()
        return
    url = request.getfixturevalue("server_url")
    nc = await nats.connect(url)
    try:
        s = await NatsStore.create(nc.jetstream())
        yield s
        await s.close()
    finally:
        await nc.close()


def dag() -> str:
    # Every test uses fresh DAG ids, so one server serves the whole module.
    return "d" + uuid.uuid4().hex[:12]


def meta(dag_id: str, status: DAGStatus = DAGStatus.RUNNING) -> DAGMeta:
    return DAGMeta(id=dag_id, status=status, labels=["x"])


def step(dag_id: str, step_id: str, status: StepStatus = StepStatus.PENDING) -> StepRecord:
    return StepRecord(dag_id=dag_id, step_id=step_id, fn_name="t.fn", status=status)


async def test_meta_create_once(store: StateStore) -> None:
    d = dag()
    with pytest.raises(DAGNotFound):
        await store.get_meta(d)
    rev = await store.put_meta(d, meta(d), 0)
    assert rev > 0
    got, grev = await store.get_meta(d)
    assert got == meta(d) and grev == rev
    with pytest.raises(StaleRevision):
        await store.put_meta(d, meta(d, DAGStatus.DONE), 0)


async def test_meta_cas_and_put_returns_usable_revision(store: StateStore) -> None:
    d = dag()
    r1 = await store.put_meta(d, meta(d), 0)
    r2 = await store.put_meta(d, meta(d, DAGStatus.PAUSING), r1)
    # Follow-up CAS with the returned revision, no read-back in between.
    r3 = await store.put_meta(d, meta(d, DAGStatus.PAUSED), r2)
    assert r1 < r2 < r3
    with pytest.raises(StaleRevision):
        await store.put_meta(d, meta(d, DAGStatus.RUNNING), r2)
    got, rev = await store.get_meta(d)
    assert got.status is DAGStatus.PAUSED and rev == r3


async def test_step_crud(store: StateStore) -> None:
    d = dag()
    with pytest.raises(StepNotFound):
        await store.get_step(d, "a")
    r1 = await store.put_step(d, "a", step(d, "a"), 0)
    rec, rev = await store.get_step(d, "a")
    assert rec == step(d, "a") and rev == r1
    r2 = await store.put_step(d, "a", step(d, "a", StepStatus.RUNNING), r1)
    r3 = await store.put_step(d, "a", step(d, "a", StepStatus.DONE), r2)
    rec, rev = await store.get_step(d, "a")
    assert rec.status is StepStatus.DONE and rev == r3
    with pytest.raises(StaleRevision):
        await store.put_step(d, "a", step(d, "a", StepStatus.FAILED), r2)
    with pytest.raises(StaleRevision):
        await store.put_step(d, "a", step(d, "a"), 0)
    with pytest.raises(StaleRevision):
        await store.put_step(d, "b", step(d, "b"), 7)
    await store.delete_step(d, "a")
    with pytest.raises(StepNotFound):
        await store.get_step(d, "a")
    await store.delete_step(d, "a")
    # Re-create after a delete works and never re-issues an older revision.
    r4 = await store.put_step(d, "a", step(d, "a"), 0)
    assert r4 > r3


async def test_read_dag_reads_meta_steps_and_results_together(store: StateStore) -> None:
    d = dag()
    empty = await store.read_dag(d, ["a"], ["a"], "r1")
    assert (empty.meta, empty.steps, empty.results) == (None, {}, {})
    with pytest.raises(DAGNotFound):
        empty.require_meta(d)
    with pytest.raises(StepNotFound):
        empty.require_step(d, "a")
    m_rev = await store.put_meta(d, meta(d), 0)
    a_rev = await store.put_step(d, "a", step(d, "a", StepStatus.DONE), 0)
    await store.put_step(d, "b", step(d, "b"), 0)
    await store.put_result(d, "a", b"41", "r1")
    await store.put_result(d, "b", b"42", "r0")  # another run's result is not this one's
    await store.delete_step(d, "b")  # a deleted key reads as absent, not as its tombstone
    snap = await store.read_dag(d, ["a", "b", "zz"], ["a", "b"], "r1")
    assert snap.require_meta(d) == (meta(d), m_rev)
    assert snap.steps == {"a": (step(d, "a", StepStatus.DONE), a_rev)}
    assert snap.results == {"a": b"41"}


async def test_read_dag_past_one_request_of_keys(store: StateStore) -> None:
    d = dag()
    await store.put_meta(d, meta(d), 0)
    ids = [f"s{i}" for i in range(600)]
    await asyncio.gather(*(store.put_step(d, s, step(d, s), 0) for s in ids[::50]))
    snap = await store.read_dag(d, ids, ids)  # 1,201 keys: more than one batched get
    assert sorted(snap.steps) == sorted(ids[::50]) and snap.results == {}
    assert snap.meta is not None


async def test_list_steps_past_one_page(store: StateStore) -> None:
    d = dag()
    ids = [f"s{i:04d}" for i in range(1100)]  # more than one page of a batched get
    await asyncio.gather(*(store.put_step(d, s, step(d, s), 0) for s in ids))
    await store.delete_step(d, ids[7])
    listed = await store.list_steps(d)
    assert [r.step_id for r, _ in listed] == [s for s in ids if s != ids[7]]


async def test_returned_record_is_a_copy(store: StateStore) -> None:
    d = dag()
    await store.put_step(d, "a", step(d, "a"), 0)
    rec, _ = await store.get_step(d, "a")
    rec.status = StepStatus.DONE
    rec.deps = ("zzz",)
    rec.trace_ctx["traceparent"] = "changed"  # the one mutable container a record holds
    again, _ = await store.get_step(d, "a")
    assert again.status is StepStatus.PENDING and again.deps == () and again.trace_ctx == {}


async def test_list_steps_only_that_dag(store: StateStore) -> None:
    base = dag()
    d1, d2, d3 = base, base + "x", base + "-step"
    for d in (d1, d2, d3):
        await store.put_meta(d, meta(d), 0)
    revs = {}
    for s in ("a", "b", "meta", "result", d2):
        revs[s] = await store.put_step(d1, s, step(d1, s), 0)
    await store.put_step(d2, "a", step(d2, "a"), 0)
    await store.put_step(d3, "zz", step(d3, "zz"), 0)
    await store.put_result(d1, "a", b"1")
    await store.put_signal(d1, SignalRecord(dag_id=d1, name="a.step.b"))
    await store.delete_step(d1, "b")
    listed = await store.list_steps(d1)
    assert [(r.step_id, rev) for r, rev in listed] == sorted(
        (s, revs[s]) for s in ("a", "meta", "result", d2)
    )
    assert all(r.dag_id == d1 for r, _ in listed)
    assert [r.step_id for r, _ in await store.list_steps(d2)] == ["a"]
    assert [r.step_id for r, _ in await store.list_steps(d3)] == ["zz"]
    assert await store.list_steps(dag()) == []
    # The listed revision is a usable CAS revision.
    rec, rev = listed[0]
    await store.put_step(d1, rec.step_id, step(d1, rec.step_id, StepStatus.RUNNING), rev)


async def test_list_dags_ignores_other_keys(store: StateStore) -> None:
    d1, d2 = dag(), dag()
    await store.put_meta(d1, meta(d1), 0)
    await store.put_meta(d2, meta(d2, DAGStatus.DONE), 0)
    d3 = dag()  # steps, results and signals only: not a DAG
    await store.put_step(d3, "meta", step(d3, "meta"), 0)
    await store.put_result(d3, "meta", b"1")
    await store.put_signal(d3, SignalRecord(dag_id=d3, name="meta"))
    await store.put_step(d1, "meta", step(d1, "meta"), 0)
    ids = [m.id for m in await store.list_dags()]
    assert d1 in ids and d2 in ids and d3 not in ids
    assert ids == sorted(ids)
    await store.delete_meta(d2)
    assert d2 not in [m.id for m in await store.list_dags()]


async def test_result_create_only(store: StateStore) -> None:
    d = dag()
    with pytest.raises(StepNotFound):
        await store.get_result(d, "a")
    await store.put_result(d, "a", b'{"v":1}')
    await store.put_result(d, "a", b'{"v":1}')  # identical rewrite is fine
    with pytest.raises(StaleRevision):
        await store.put_result(d, "a", b'{"v":2}')
    assert await store.get_result(d, "a") == b'{"v":1}'
    await store.delete_result(d, "a")
    await store.delete_result(d, "a")
    with pytest.raises(StepNotFound):
        await store.get_result(d, "a")


async def first(it: AsyncIterator[bytes]) -> bytes:
    async for data in it:
        return data
    raise AssertionError("watch ended without a value")


async def test_watch_result_immediate(store: StateStore) -> None:
    d = dag()
    await store.put_result(d, "a", b"42")
    async with asyncio.timeout(5):
        assert await first(store.watch_result(d, "a")) == b"42"


async def test_watch_result_async_and_many_waiters(store: StateStore) -> None:
    d = dag()
    waiters = [asyncio.create_task(first(store.watch_result(d, "a"))) for _ in range(20)]
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waiters)
    await store.put_result(d, "a", b'"late"')
    async with asyncio.timeout(15):  # generous: a loaded 2-core machine, not a speed check
        assert await asyncio.gather(*waiters) == [b'"late"'] * 20


async def test_watch_result_ignores_rejected_write(store: StateStore) -> None:
    d = dag()
    await store.put_result(d, "b", b"1")
    with pytest.raises(StaleRevision):
        await store.put_result(d, "b", b"2")
    async with asyncio.timeout(5):
        assert await first(store.watch_result(d, "b")) == b"1"


async def test_watch_result_cancel_leaves_nothing(store: StateStore) -> None:
    d = dag()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await first(store.watch_result(d, "a"))
    await store.put_result(d, "a", b"1")
    async with asyncio.timeout(5):
        assert await first(store.watch_result(d, "a")) == b"1"


NAMES = ["approve", "a.b", "a.step.b", "meta", "with space", "café ☕", "*", ">", "x/y", "."]


async def test_signal_first_wins_and_encoding(store: StateStore) -> None:
    d = dag()
    await store.put_meta(d, meta(d), 0)
    with pytest.raises(SignalNotFound):
        await store.get_signal(d, "approve")
    for i, name in enumerate(NAMES):
        payload = msgspec.Raw(msgspec.json.encode({"i": i}))
        await store.put_signal(d, SignalRecord(dag_id=d, name=name, payload=payload))
    with pytest.raises(StaleRevision):
        await store.put_signal(d, SignalRecord(dag_id=d, name="approve", payload=msgspec.Raw(b"9")))
    got = await store.get_signal(d, "approve")
    assert bytes(got.payload or b"") == b'{"i":0}'
    assert (await store.get_signal(d, "café ☕")).name == "café ☕"
    listed = await store.list_signals(d)
    assert [s.name for s in listed] == sorted(NAMES)
    # Signal names never leak into the step or DAG listings.
    assert await store.list_steps(d) == []
    assert [m.id for m in await store.list_dags() if m.id.startswith(d)] == [d]
    await store.delete_signal(d, "a.b")
    await store.delete_signal(d, "a.b")
    with pytest.raises(SignalNotFound):
        await store.get_signal(d, "a.b")
    assert len(await store.list_signals(d)) == len(NAMES) - 1


@pytest.mark.parametrize("bad", ["", "a.b", "*", ">", "a b", "é", "x" * 129])
async def test_invalid_ids_rejected(store: StateStore, bad: str) -> None:
    with pytest.raises(InvalidName):
        await store.put_step(bad, "a", step("d", "a"), 0)
    with pytest.raises(InvalidName):
        await store.get_step("d", bad)
    with pytest.raises(InvalidName):
        await store.get_meta(bad)


async def test_empty_signal_name_rejected(store: StateStore) -> None:
    with pytest.raises(InvalidName):
        await store.put_signal("d", SignalRecord(dag_id="d", name=""))


async def test_idempotent_deletes(store: StateStore) -> None:
    d = dag()
    for _ in range(2):
        await store.delete_meta(d)
        await store.delete_step(d, "a")
        await store.delete_result(d, "a")
        await store.delete_signal(d, "s")
    await store.put_meta(d, meta(d), 0)
    await store.delete_meta(d)
    await store.delete_meta(d)
    with pytest.raises(DAGNotFound):
        await store.get_meta(d)
    assert await store.put_meta(d, meta(d), 0) > 0


async def test_concurrent_cas_no_lost_update(store: StateStore) -> None:
    d = dag()
    await store.put_step(d, "c", step(d, "c"), 0)
    increments = 0

    async def bump(worker: int) -> None:
        nonlocal increments
        for _ in range(5):
            for _attempt in range(100):
                rec, rev = await store.get_step(d, "c")
                rec.attempt += 1
                try:
                    await store.put_step(d, "c", rec, rev)
                except StaleRevision:
                    await asyncio.sleep(0.001 * worker)
                    continue
                increments += 1
                break

    await asyncio.gather(*(bump(w) for w in range(8)))
    rec, _ = await store.get_step(d, "c")
    assert increments >= 1
    assert rec.attempt == increments == 40


async def test_concurrent_create_one_winner(store: StateStore) -> None:
    d = dag()
    results = await asyncio.gather(
        *(store.put_meta(d, meta(d), 0) for _ in range(10)), return_exceptions=True
    )
    wins = [r for r in results if isinstance(r, int)]
    assert len(wins) == 1
    assert all(isinstance(r, StaleRevision) for r in results if not isinstance(r, int))


async def test_results_of_two_runs_never_share_a_key(store: StateStore) -> None:
    d = dag()
    await store.put_result(d, "a", b'"old"', "run1")
    await store.put_result(d, "a", b'"new"', "run2")
    assert await store.get_result(d, "a", "run1") == b'"old"'
    assert await store.get_result(d, "a", "run2") == b'"new"'
    with pytest.raises(StepNotFound):
        await store.get_result(d, "a")
    async with asyncio.timeout(2):
        async for data in store.watch_result(d, "a", "run2"):
            assert data == b'"new"'
    await store.delete_result(d, "a", "run1")
    with pytest.raises(StepNotFound):
        await store.get_result(d, "a", "run1")
    assert await store.get_result(d, "a", "run2") == b'"new"'
    with pytest.raises(InvalidName):
        await store.put_result(d, "a", b"1", "bad.run")


async def test_live_index_put_list_delete(store: StateStore) -> None:
    d1, d2 = sorted([dag(), dag()])
    await store.put_live(d1, b'{"at":"2026-12-01T00:00:00Z"}')
    await store.put_live(d2, b"x")
    await store.put_live(d2, b"y")  # overwrites
    mine = [e for e in await store.list_live() if e[0] in (d1, d2)]
    assert mine == [(d1, b'{"at":"2026-12-01T00:00:00Z"}'), (d2, b"y")]
    await store.delete_live(d1)
    await store.delete_live(d1)  # idempotent
    assert [e[0] for e in await store.list_live() if e[0] in (d1, d2)] == [d2]
    # The index is no DAG: neither the meta listing nor the DAG's own keys see it.
    assert d2 not in {m.id for m in await store.list_dags()}
    assert await store.list_steps(d2) == []


async def test_live_index_of_a_dag_named_meta_does_not_pose_as_a_meta(
    store: StateStore,
) -> None:
    await store.put_live("meta", b"x")
    try:
        assert all(m.id != "meta" for m in await store.list_dags())
    finally:
        await store.delete_live("meta")


async def _two_finished_dags(store: StateStore) -> tuple[str, str]:
    """Two finished DAGs with a meta, a step, a result and a signal each."""
    d, other = dag(), dag()
    for x in (d, other):
        await store.put_meta(x, meta(x, DAGStatus.DONE), 0)
        await store.put_step(x, "a", step(x, "a", StepStatus.DONE), 0)
        await store.put_result(x, "a", b"1", "r")
        await store.put_signal(x, SignalRecord(dag_id=x, name="go"))
    return d, other


async def _only_the_first_gone(store: StateStore, d: str, other: str) -> None:
    """``d`` has no key left, ``other`` all of its own."""
    with pytest.raises(DAGNotFound):
        await store.get_meta(d)
    assert await store.list_steps(d) == []
    assert await store.list_signals(d) == []
    with pytest.raises(StepNotFound):
        await store.get_result(d, "a", "r")
    assert (await store.get_meta(other))[0].status is DAGStatus.DONE
    assert await store.get_result(other, "a", "r") == b"1"


async def test_delete_dag_keys_removes_every_key_of_that_dag_only(store: StateStore) -> None:
    d, other = await _two_finished_dags(store)
    assert await store.delete_dag_keys(d) == 4
    await _only_the_first_gone(store, d, other)
    assert await store.delete_dag_keys(d) == 0
    # The id can be created again from scratch (over the deletes' tombstones).
    assert await store.put_meta(d, meta(d), 0) > 0


async def test_purge_dag_removes_every_key_of_that_dag_only(store: StateStore) -> None:
    d, other = await _two_finished_dags(store)
    await store.put_live(d, b"x")
    await store.purge_dag(d)
    await _only_the_first_gone(store, d, other)
    assert d in {e[0] for e in await store.list_live()}  # the index is separate
    await store.delete_live(d)
    # A purged DAG id can be created again from scratch.
    assert await store.put_meta(d, meta(d), 0) > 0
