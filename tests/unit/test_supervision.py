"""The rules of ``ebind worker --processes``: flag meanings, child slots, restart decisions."""

from __future__ import annotations

import pytest

from ebind.supervision import (
    DEPRECATED_PROCESSES,
    USAGE_EXIT,
    ChildSlot,
    GiveUp,
    ProcessFlags,
    Restart,
    RestartPolicy,
    child_port,
    child_worker_id,
    describe_exit,
    on_child_exit,
    parse_child_env,
    resolve_process_flags,
)

POLICY = RestartPolicy(first_delay=0.5, max_delay=4.0, healthy_after=30.0, max_quick_deaths=5)


@pytest.mark.parametrize(
    ("processes", "pool", "pool_size", "expected"),
    [
        (None, "thread", None, ProcessFlags(workers=1, pool_size=None)),
        (4, "thread", None, ProcessFlags(workers=4, pool_size=None)),
        (4, "process", 2, ProcessFlags(workers=4, pool_size=2)),
        (None, "process", 3, ProcessFlags(workers=1, pool_size=3)),
        (None, "process", None, ProcessFlags(workers=1, pool_size=None)),
        # the old spelling: --processes sized the pool when --pool process was given
        (2, "process", None, ProcessFlags(workers=1, pool_size=2, warning=DEPRECATED_PROCESSES)),
    ],
)
def test_resolve_process_flags(
    processes: int | None, pool: str, pool_size: int | None, expected: ProcessFlags
) -> None:
    assert resolve_process_flags(processes, pool, pool_size) == expected


@pytest.mark.parametrize(
    ("processes", "pool", "pool_size", "message"),
    [
        (0, "thread", None, "--processes must be >= 1, got 0"),
        (-1, "process", 2, "--processes must be >= 1, got -1"),
        (None, "process", 0, "--pool-size must be >= 1, got 0"),
        (None, "thread", 2, "--pool-size sizes the process pool"),
        (3, "thread", 2, "--pool-size sizes the process pool"),
    ],
)
def test_resolve_process_flags_refuses(
    processes: int | None, pool: str, pool_size: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_process_flags(processes, pool, pool_size)


def test_child_ports_are_offset_by_index_and_zero_stays_any_free_port() -> None:
    assert child_port(None, 3) is None
    assert child_port(0, 3) == 0
    assert child_port(9100, 0) == 9100
    assert child_port(9100, 3) == 9103
    assert child_port(65535, 0) == 65535
    with pytest.raises(ValueError, match="port 65535 \\+ child 1 is past 65535"):
        child_port(65535, 1)


def test_child_worker_id() -> None:
    assert child_worker_id(None, 2) is None
    assert child_worker_id("web", 0) == "web-0"
    assert child_worker_id("web", 11) == "web-11"


@pytest.mark.parametrize(
    "slot",
    [
        ChildSlot(index=0, parent_pid=1234),
        ChildSlot(index=7, parent_pid=99, nats_url="nats://127.0.0.1:4222"),
        ChildSlot(index=1, parent_pid=5, nats_url="nats://a:1,nats://b:2"),
    ],
)
def test_child_env_round_trips(slot: ChildSlot) -> None:
    assert parse_child_env(slot.env_value()) == slot


@pytest.mark.parametrize("raw", ["", "3", "x:1", "1:x", "-1:2", ":1", "1:", "1 :2"])
def test_child_env_refuses_what_the_supervisor_never_writes(raw: str) -> None:
    with pytest.raises(ValueError, match="EBIND_WORKER_CHILD must be"):
        parse_child_env(raw)


def test_quick_deaths_back_off_doubling_up_to_the_cap_then_give_up() -> None:
    quick, delays = 0, []
    for _ in range(POLICY.max_quick_deaths):
        action = on_child_exit(1, uptime=0.2, quick_deaths=quick, policy=POLICY)
        assert isinstance(action, Restart)
        quick = action.quick_deaths
        delays.append(action.delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    final = on_child_exit(-9, uptime=0.2, quick_deaths=quick, policy=POLICY)
    assert isinstance(final, GiveUp)
    assert final.exit_code == 1
    assert "died 6 times in a row" in final.reason and "killed by SIGKILL" in final.reason


def test_a_child_that_lived_long_enough_starts_the_count_again() -> None:
    action = on_child_exit(-9, uptime=30.0, quick_deaths=5, policy=POLICY)
    assert action == Restart(delay=0.5, quick_deaths=1)


def test_a_usage_error_is_never_restarted() -> None:
    action = on_child_exit(USAGE_EXIT, uptime=100.0, quick_deaths=0, policy=POLICY)
    assert isinstance(action, GiveUp) and action.exit_code == USAGE_EXIT


@pytest.mark.parametrize(
    ("code", "words"),
    [(0, "exit 0"), (3, "exit 3"), (-9, "killed by SIGKILL"), (-15, "killed by SIGTERM")],
)
def test_describe_exit(code: int, words: str) -> None:
    assert describe_exit(code) == words


def test_describe_exit_of_an_unnamed_signal() -> None:
    assert describe_exit(-200) == "killed by signal 200"
