"""Pure rules of the process pool: option checks, which pool runs a handler, child answers."""

from __future__ import annotations

import pickle
import signal
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from ebind.app import App
from ebind.context import Context, current_context
from ebind.errors import InvalidArguments, NonRetryable
from ebind.pools import (
    PoolSettings,
    check_pool_settings,
    check_task_pool,
    death_error,
    limit_at_dispatch,
    runs_in_process,
    start_method,
)
from ebind.wire import TaskError
from ebind.worker import Worker
from ebind.worker.procpool import ContextFields, _child_call, pool_for


def test_task_pool_accepts_none_thread_and_process() -> None:
    assert check_task_pool(None, is_async=False, task_name="t") is None
    assert check_task_pool("thread", is_async=True, task_name="t") == "thread"
    assert check_task_pool("process", is_async=False, task_name="t") == "process"


@pytest.mark.parametrize("bad", ["processes", "", "PROCESS", 1, True, ["process"]])
def test_task_pool_rejects_unknown_values_naming_them(bad: object) -> None:
    with pytest.raises(ValueError, match=r"task 't': pool must be one of \('thread', 'process'\)"):
        check_task_pool(bad, is_async=False, task_name="t")


def test_task_pool_process_is_refused_for_async_handlers() -> None:
    with pytest.raises(ValueError, match="async def handler runs on the worker's event loop"):
        check_task_pool("process", is_async=True, task_name="t")


def test_app_task_checks_the_pool_option() -> None:
    app = App("pooltest-unit")

    async def not_for_a_child() -> int:
        return 1

    with pytest.raises(InvalidArguments, match="pool='process' is for plain def handlers") as exc:
        app.task(name="p.async", pool="process")(not_for_a_child)
    assert exc.value.parameter == "pool" and exc.value.task_name == "p.async"

    def fine() -> int:
        return 1

    assert app.task(name="p.sync", pool="process")(fine).spec.pool == "process"
    assert app.task(name="p.default")(fine).spec.pool is None


def test_pool_settings_defaults_to_one_child_per_cpu() -> None:
    assert check_pool_settings("thread", None, None, cpu_count=4) == PoolSettings("thread", 4, None)
    assert check_pool_settings("process", None, None, cpu_count=None).processes == 1
    assert check_pool_settings("process", 3, 50, cpu_count=8) == PoolSettings("process", 3, 50)


@pytest.mark.parametrize(
    ("pool", "processes", "per_child", "message"),
    [
        ("fork", None, None, "pool must be one of"),
        (None, None, None, "pool must be one of"),
        ("process", 0, None, "processes must be an integer >= 1, got 0"),
        ("process", -2, None, "processes must be an integer >= 1, got -2"),
        ("process", True, None, "processes must be an integer >= 1, got True"),
        ("process", 1.5, None, "processes must be an integer >= 1, got 1.5"),
        ("process", "2", None, "processes must be an integer >= 1, got '2'"),
        ("process", 2, 0, "max_tasks_per_child must be an integer >= 1 or None, got 0"),
        ("process", 2, False, "max_tasks_per_child must be an integer >= 1 or None, got False"),
        ("process", 2, 2.0, "max_tasks_per_child must be an integer >= 1 or None, got 2.0"),
    ],
)
def test_pool_settings_reject_bad_options_naming_them(
    pool: object, processes: object, per_child: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check_pool_settings(pool, processes, per_child, cpu_count=2)


@pytest.mark.parametrize(
    ("is_async", "task_pool", "worker_pool", "expected"),
    [
        (False, None, "thread", False),
        (False, None, "process", True),
        (False, "process", "thread", True),
        (False, "thread", "process", False),
        (False, "process", "process", True),
        (True, None, "process", False),
        (True, "thread", "process", False),
        (True, None, "thread", False),
    ],
)
def test_which_handlers_run_in_a_child(
    is_async: bool, task_pool: str | None, worker_pool: str, expected: bool
) -> None:
    assert runs_in_process(is_async, task_pool, worker_pool) is expected


@pytest.mark.parametrize(
    ("exitcode", "words"),
    [
        (-signal.SIGKILL, "was killed by signal SIGKILL"),
        (-signal.SIGSEGV, "was killed by signal SIGSEGV"),
        (-200, "was killed by signal 200"),
        (3, "exited with code 3"),
        (0, "exited with code 0"),
        (None, "closed its pipe and did not exit"),
    ],
)
def test_a_dead_child_reads_as_worker_lost_with_its_cause(exitcode: int | None, words: str) -> None:
    error = death_error(exitcode, "img.resize")
    assert error.kind == "worker_lost" and error.retryable
    assert error.message == f"the child process running 'img.resize' {words} before it answered"


def test_the_limit_at_dispatch_is_cut_to_the_deadline() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    soon = datetime(2030, 1, 1, 0, 0, 2, tzinfo=UTC)
    assert limit_at_dispatch(5.0, None, now) == 5.0
    assert limit_at_dispatch(None, None, now) is None
    assert limit_at_dispatch(5.0, soon, now) == 2.0
    assert limit_at_dispatch(1.0, soon, now) == 1.0
    assert limit_at_dispatch(None, soon, now) == 2.0
    assert limit_at_dispatch(5.0, now, soon) == 0.0


def test_start_method_is_never_fork() -> None:
    assert start_method(["fork", "spawn", "forkserver"]) == "forkserver"
    assert start_method(["fork", "spawn"]) == "spawn"
    assert start_method(["spawn"]) == "spawn"


def test_context_fields_cross_a_pipe_and_rebuild_a_context() -> None:
    deadline = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    ctx = Context(
        task_id="t1",
        name="n",
        attempt=2,
        dag_id="d",
        step_id="s",
        worker_id="w",
        target="tg",
        deadline=deadline,
        extras={"unpicklable": lambda: None},
    )
    fields = pickle.loads(pickle.dumps(ContextFields.of(ctx)))
    rebuilt = fields.context()
    assert (rebuilt.task_id, rebuilt.name, rebuilt.attempt, rebuilt.deadline) == (
        "t1",
        "n",
        2,
        deadline,
    )
    assert (rebuilt.dag_id, rebuilt.step_id, rebuilt.worker_id, rebuilt.target) == (
        "d",
        "s",
        "w",
        "tg",
    )
    assert rebuilt.extras == {} and rebuilt.log is not None


def _decoded(answer: tuple[str, bytes]) -> TaskError:
    status, data = answer
    assert status == "err"
    return msgspec.msgpack.decode(data, type=TaskError)


def test_child_call_answers_results_errors_and_context() -> None:
    app = App("pooltest-child")
    seen: list[Any] = []

    @app.task(name="c.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="c.ctx")
    def with_ctx(ctx: Context, tag: str) -> str:
        seen.append(current_context())
        return f"{ctx.task_id}:{ctx.attempt}:{tag}"

    @app.task(name="c.boom", dont_retry=[KeyError])
    def boom(which: str) -> int:
        raise {"key": KeyError("k"), "value": ValueError("v"), "final": NonRetryable("f")}[which]

    @app.task(name="c.unencodable")
    def unencodable() -> object:
        return object()

    assert _child_call(app, "c.add", [2, 3], None) == ("ok", b"5")
    fields = ContextFields("t9", "c.ctx", 3, "", "", "w", "", None)
    assert _child_call(app, "c.ctx", ["x"], fields) == ("ok", b'"t9:3:x"')
    assert seen[0].task_id == "t9" and current_context() is None
    assert _decoded(_child_call(app, "c.boom", ["value"], None)).retryable
    assert not _decoded(_child_call(app, "c.boom", ["key"], None)).retryable
    assert not _decoded(_child_call(app, "c.boom", ["final"], None)).retryable
    assert _decoded(_child_call(app, "c.boom", ["value"], None)).message == "ValueError: v"
    encode = _decoded(_child_call(app, "c.unencodable", [], None))
    assert encode.kind == "encode" and "could not be encoded as JSON" in encode.message
    missing = _decoded(_child_call(app, "c.nope", [], None))
    assert missing.kind == "unknown_handler" and "'c.nope'" in missing.message


def test_worker_checks_its_pool_options() -> None:
    app = App("pooltest-worker")
    with pytest.raises(ValueError, match=r"pool='process' needs app_path='pkg\.module:app'"):
        Worker(app, pool="process")
    with pytest.raises(ValueError, match="pool must be one of"):
        Worker(app, pool="greenlet")
    with pytest.raises(ValueError, match="processes must be an integer >= 1"):
        Worker(app, pool="process", processes=0, app_path="m:app")
    assert Worker(app, pool="process", processes=3, app_path="m:app").concurrency == 3
    assert (
        Worker(app, pool="process", processes=3, app_path="m:app", concurrency=5).concurrency == 5
    )
    assert Worker(app).concurrency == 16


async def test_a_pool_is_built_only_for_handlers_that_run_in_children() -> None:
    app = App("pooltest-needs")

    @app.task(name="n.async")
    async def coro() -> int:
        return 1

    @app.task(name="n.sync")
    def plain() -> int:
        return 1

    assert await pool_for(app, PoolSettings("thread", 2), None) is None
    with pytest.raises(ValueError, match=r"tasks \['n\.sync'\] run in child processes"):
        await pool_for(app, PoolSettings("process", 2), None)

    @app.task(name="n.opted", pool="process")
    def opted() -> int:
        return 1

    with pytest.raises(ValueError, match=r"tasks \['n\.opted'\] run in child processes"):
        await pool_for(app, PoolSettings("thread", 2), None)
    lazy = await pool_for(app, PoolSettings("thread", 2), "m:app")
    assert lazy is not None and lazy.pids == frozenset()  # nothing started before a call
    assert lazy.takes(opted.spec) and not lazy.takes(plain.spec) and not lazy.takes(coro.spec)
    lazy.close()
