"""Library logs behave like any Python library's: stdlib records, quiet by default, no stdout."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap

import pytest
import structlog

from ebind.app import App
from ebind.logging import get_logger

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, logging, sys
    from ebind import App
    from ebind.worker import Worker

    app = App("quiet", nats_url=sys.argv[1])

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async def main() -> None:
        async with app:
            w = Worker(app, scheduler=False)
            runner = asyncio.create_task(w.run())
            res = await (await add.delay(2, 3)).result(timeout=20)
            await w.stop()
            await runner
        assert res == 5

    asyncio.run(main())
    """
)


def test_a_script_that_runs_a_task_prints_nothing_on_stdout(nats_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, nats_url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    # below WARNING nothing is shown either: the connect/worker chatter is debug and info
    assert "worker.start" not in done.stderr and "nats." not in done.stderr


def test_records_reach_the_ebind_stdlib_logger_with_event_and_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    structlog.reset_defaults()  # an application that never configured structlog
    caplog.set_level(logging.DEBUG, logger="ebind")
    get_logger("ebind.worker").bind(worker_id="w1").info(
        "task.done", task="add", url="nats://u:hunter2@h:4222"
    )
    (record,) = [r for r in caplog.records if r.name == "ebind.worker"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == "task.done worker_id=w1 task=add url=nats://u:***@h:4222"
    assert record.__dict__["event"] == "task.done"
    assert record.__dict__["ebind"] == {
        "worker_id": "w1",
        "task": "add",
        "url": "nats://u:***@h:4222",
    }


def test_below_warning_is_dropped_unless_the_application_asks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    structlog.reset_defaults()
    caplog.set_level(logging.WARNING, logger="ebind")
    log = get_logger("ebind.client")
    log.debug("quiet.debug")
    log.info("quiet.info")
    log.warning("loud.warning", n=1)
    assert [r.getMessage() for r in caplog.records if r.name == "ebind.client"] == [
        "loud.warning n=1"
    ]


def test_exceptions_travel_as_exc_info(caplog: pytest.LogCaptureFixture) -> None:
    structlog.reset_defaults()
    caplog.set_level(logging.ERROR, logger="ebind")
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("ebind.worker").exception("handler.crashed", task="x")
    (record,) = [r for r in caplog.records if r.name == "ebind.worker"]
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert record.getMessage() == "handler.crashed task=x"


def test_a_percent_sign_in_a_value_is_not_a_format_directive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    structlog.reset_defaults()
    caplog.set_level(logging.INFO, logger="ebind")
    get_logger("ebind.app").info("odd", value="100% %s %d")
    (record,) = [r for r in caplog.records if r.name == "ebind.app"]
    assert record.getMessage() == "odd value='100% %s %d'"


def test_capture_logs_still_sees_library_events(nats_url: str) -> None:
    async def connect() -> None:
        async with App("capture", nats_url=nats_url):
            pass

    with structlog.testing.capture_logs() as logs:
        get_logger("ebind.worker").info("seen", n=2)
        asyncio.run(connect())
    assert {"event": "seen", "n": 2, "log_level": "info"} in logs
