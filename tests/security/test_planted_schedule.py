"""A repeating schedule a producer plants on the countdown subjects is stopped at its first firing.

Producers may publish ``TASKS_SCHEDULED.>`` (countdown and eta tasks are one-shot schedules
there). Nothing stops one from storing a repeating schedule there instead, which the server
would fire forever and which ``ebind schedule ls`` (it lists ``TASKS_SCHEDULES.>``) never
shows. A worker recognises such a firing by the headers only the server sets, dead-letters
it without running it, and deletes the schedule. Real embedded nats-server and worker.
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


async def test_a_planted_repeating_schedule_runs_nothing_and_is_removed(nats_url: str) -> None:
    ran: list[int] = []
    app = App("planted", nats_url=nats_url)

    @app.task(name="rev.tick")
    async def tick(x: int) -> int:
        ran.append(x)
        return x

    async with app:
        nc = await nats.connect(nats_url)  # a producer's rights suffice
        try:
            ack = await nc.jetstream().publish(
                "TASKS_SCHEDULED.hidden",
                b'{"id":"hidden-1","name":"rev.tick","payload":[7]}',
                headers={
                    "Nats-Schedule": "@every 1s",
                    "Nats-Schedule-Target": "TASKS.rev.tick",
                    "Nats-TTL": "never",
                },
            )
            assert ack.stream == TASKS_STREAM
        finally:
            await nc.close()
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
            assert letter.raw == b'{"id":"hidden-1","name":"rev.tick","payload":[7]}'


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
