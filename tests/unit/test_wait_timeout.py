"""Timeouts of result waits: only None or a finite number of seconds >= 0 is a bound."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator

import pytest

from ebind import sync
from ebind.errors import InvalidArguments, NotConnected, TaskTimeout
from ebind.future import check_timeout


@pytest.mark.parametrize(
    ("given", "expected"), [(None, None), (0, 0.0), (0.0, 0.0), (10, 10.0), (2.5, 2.5)]
)
def test_a_bound_or_none_is_taken_as_float_seconds(
    given: float | None, expected: float | None
) -> None:
    assert check_timeout(given) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1, -0.001])
def test_a_number_that_cannot_end_a_wait_is_refused(bad: float) -> None:
    with pytest.raises(InvalidArguments, match="finite number of seconds >= 0") as info:
        check_timeout(bad)
    assert info.value.parameter == "timeout"
    assert repr(bad) in str(info.value) and "None" in str(info.value)


@pytest.mark.parametrize("bad", [True, False, "10", b"1", [1], object()])
def test_what_is_not_a_number_is_refused_by_type(bad: object) -> None:
    # bool is an int to Python, but timeout=True is a mistake, not one second.
    with pytest.raises(InvalidArguments, match="number of seconds or None"):
        check_timeout(bad)


def test_the_error_names_the_parameter_it_checked() -> None:
    with pytest.raises(InvalidArguments, match=r"^wait_for must") as info:
        check_timeout(math.nan, "wait_for")
    assert info.value.parameter == "wait_for"
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


@pytest.fixture
def loop_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running on a daemon thread; blocking waits look at it every 0.05 s."""
    monkeypatch.setattr(sync, "_LOOP_CHECK", 0.05)
    monkeypatch.setattr(sync, "_LOOP_GRACE", 0.2)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_blocking_wait_ends_when_its_loop_stops(loop_thread: asyncio.AbstractEventLoop) -> None:
    threading.Timer(0.2, loop_thread.call_soon_threadsafe, (loop_thread.stop,)).start()
    with pytest.raises(NotConnected, match="stopped while it waited"):
        sync._wait(loop_thread, asyncio.sleep(3600))


def test_a_blocking_wait_on_a_blocked_loop_ends_after_its_bound(
    loop_thread: asyncio.AbstractEventLoop,
) -> None:
    release = threading.Event()
    loop_thread.call_soon_threadsafe(release.wait, 5)  # blocks the loop itself
    try:
        with pytest.raises(TaskTimeout, match="it is blocked"):
            sync._wait(loop_thread, asyncio.sleep(0), timeout=0.1)
    finally:
        release.set()


def test_a_blocking_wait_returns_the_result_and_the_calls_own_timeout(
    loop_thread: asyncio.AbstractEventLoop,
) -> None:
    async def answer() -> int:
        await asyncio.sleep(0.15)  # longer than one look at the loop
        return 7

    async def too_slow() -> None:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(10)

    assert sync._wait(loop_thread, answer(), timeout=1) == 7
    with pytest.raises(TimeoutError) as info:
        sync._wait(loop_thread, too_slow(), timeout=0.05)
    assert not isinstance(info.value, TaskTimeout)  # the coroutine's own, passed on


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, True, "5"])
async def test_dag_waits_validate_their_timeout(bad: object) -> None:
    from ebind.workflow.store_mem import MemStore
    from ebind.workflow.workflow import Workflow

    class _Store(MemStore):
        async def get_meta(self, dag_id: str):  # type: ignore[no-untyped-def]
            raise AssertionError("validated before any read")

    wf = Workflow.__new__(Workflow)
    wf.store = _Store()
    with pytest.raises(InvalidArguments, match="timeout"):
        await wf.result("d", "s", timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArguments, match="timeout"):
        await wf.wait("d", timeout=bad)  # type: ignore[arg-type]
