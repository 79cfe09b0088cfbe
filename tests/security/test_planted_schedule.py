"""A repeating schedule a producer plants outside TASKS_SCHEDULES is stopped at its first firing.

Producers may publish ``TASKS_SCHEDULED.>`` (countdown and eta tasks are one-shot schedules
there) and the task subjects. Nothing stops one from storing a repeating schedule there,
which the server would fire forever and which ``ebind schedule ls`` (it lists
``TASKS_SCHEDULES.>``) never shows. A worker recognises such a firing by the headers only
the server sets, dead-letters it without running it, and deletes the schedule. Real
embedded nats-server and worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import nats.js.errors
import pytest
from worker_helpers import dlq_entries, running

from ebind import App
from ebind.periodic import planted_repeat
from ebind.streams import TASKS_STREAM

pytestmark = pytest.mark.timeout(60)


BODY = b'{"id":"hidden-1","name":"rev.tick","payload":[7]}'


def _ticking(nats_url: str) -> tuple[App, list[int], Any]:
    """An App whose ``rev.tick`` records each argument it runs with, and that task."""
    ran: list[int] = []
    app = App("planted", nats_url=nats_url)

    @app.task(name="rev.tick")
    async def tick(x: int) -> int:
        ran.append(x)
        return x

    return app, ran, tick


async def _plant(nats_url: str, subject: str) -> None:
    """Store, with a producer's rights, a schedule on ``subject`` firing rev.tick every second."""
    nc = await nats.connect(nats_url)
    try:
        ack = await nc.jetstream().publish(
            subject,
            BODY,
            headers={
                "Nats-Schedule": "@every 1s",
                "Nats-Schedule-Target": "TASKS.rev.tick",
                "Nats-TTL": "never",
            },
        )
        assert ack.stream == TASKS_STREAM
    finally:
        await nc.close()


async def test_a_planted_repeating_schedule_runs_nothing_and_is_removed(nats_url: str) -> None:
    app, ran, tick = _ticking(nats_url)
    async with app:
        await _plant(nats_url, "TASKS_SCHEDULED.hidden")
        fut = await tick.apply_async([5], countdown=0.5)  # a genuine one-shot runs
        async with running(app):
            assert await fut.result(timeout=10) == 5
            await asyncio.sleep(3.0)
        assert ran == [5], f"the planted schedule's firings ran: {ran}"
        with pytest.raises(nats.js.errors.NotFoundError):
            await app.js.get_last_msg(TASKS_STREAM, "TASKS_SCHEDULED.hidden")
        letters = await dlq_entries(app, "rev.tick")
        assert 1 <= len(letters) <= 2, letters  # a firing may be in flight at the delete
        for letter in letters:
            assert letter.error.kind == "invalid" and letter.task is None
            assert "repeating schedule on TASKS_SCHEDULED.hidden" in letter.error.message
            assert letter.raw == BODY


@pytest.mark.parametrize("home", ["TASKS.rev.nobody", "TASKQ.q.normal.rev.nobody"])
async def test_a_repeating_schedule_planted_on_a_task_subject_runs_nothing(
    nats_url: str, home: str
) -> None:
    """A repeating schedule stored on a task subject is refused like one on the countdowns.

    A producer (even one without countdown rights) may publish on ``TASKS.>``/``TASKQ.>``,
    and the server stores a ``Nats-Schedule`` message on any subject of EBIND_TASKS. Only
    ``TASKS_SCHEDULES.<name>`` may hold a repeating schedule, so a firing of one stored
    anywhere else is dead-lettered unrun.
    """
    app, ran, _ = _ticking(nats_url)
    async with app:
        await _plant(nats_url, home)
        async with running(app):
            await asyncio.sleep(3.5)
        assert ran == [], f"a repeating schedule planted on {home} ran its task {len(ran)} times"


class _Msg:
    def __init__(self, headers: dict[str, str] | None) -> None:
        self.headers = headers
        block = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.raw_headers = ("NATS/1.0\r\n" + block + "\r\n").encode()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, None),
        ({"Nats-Msg-Id": "x"}, None),  # not a firing
        ({"Nats-Scheduler": "TASKS_SCHEDULED.t1", "Nats-Schedule-Next": "purge"}, None),
        ({"Nats-Scheduler": "TASKS_SCHEDULED.t1"}, None),  # no next time: a one-shot
        (
            {
                "Nats-Scheduler": "TASKS_SCHEDULES.daily",
                "Nats-Schedule-Next": "2026-12-04T00:00:00Z",
            },
            None,
        ),
        (
            {
                "Nats-Scheduler": "TASKS_SCHEDULED.hidden",
                "Nats-Schedule-Next": "2026-12-03T17:43:31Z",
            },
            "TASKS_SCHEDULED.hidden",
        ),
    ],
)
def test_which_firings_are_planted_repeats(headers: Any, expected: str | None) -> None:
    assert planted_repeat(_Msg(headers)) == expected
