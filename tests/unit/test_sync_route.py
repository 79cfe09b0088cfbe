"""Where a blocking call runs: every combination of the App's and the thread's loop state."""

from __future__ import annotations

import itertools

import pytest

from ebind.sync import Route, route

# (connected, app_loop_running, app_loop_is_current, thread_has_loop) -> route
_TABLE: dict[tuple[bool, bool, bool, bool], Route] = {
    # connected on a loop in this very thread: waiting would stall it
    (True, True, True, True): Route.IN_LOOP,
    (True, True, True, False): Route.IN_LOOP,
    (True, False, True, True): Route.IN_LOOP,
    (True, False, True, False): Route.IN_LOOP,
    # connected on a loop running in another thread (a worker's loop, a web app's loop)
    (True, True, False, True): Route.APP_LOOP,
    (True, True, False, False): Route.APP_LOOP,
    # connected on a loop that stopped (asyncio.run returned without closing the App)
    (True, False, False, True): Route.STOPPED_LOOP,
    (True, False, False, False): Route.STOPPED_LOOP,
    # not connected: the background loop, unless this thread runs a loop of its own
    (False, False, False, False): Route.BACKGROUND,
    (False, True, False, False): Route.BACKGROUND,
    (False, False, True, False): Route.BACKGROUND,
    (False, True, True, False): Route.BACKGROUND,
    (False, False, False, True): Route.IN_LOOP,
    (False, True, False, True): Route.IN_LOOP,
    (False, False, True, True): Route.IN_LOOP,
    (False, True, True, True): Route.IN_LOOP,
}


def test_the_table_covers_every_combination() -> None:
    assert set(_TABLE) == set(itertools.product((True, False), repeat=4))


@pytest.mark.parametrize(("state", "expected"), sorted(_TABLE.items(), key=str))
def test_route(state: tuple[bool, bool, bool, bool], expected: Route) -> None:
    connected, running, current, thread_loop = state
    got = route(
        connected=connected,
        app_loop_running=running,
        app_loop_is_current=current,
        thread_has_loop=thread_loop,
    )
    assert got is expected
