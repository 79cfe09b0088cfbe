"""Apps for workflow integration tests, importable by test modules (conftest is not)."""

from __future__ import annotations

from typing import Any

from wf_app import app as shared_app

from ebind.app import App
from ebind.workflow import Workflow

__all__ = ["FAST", "connected_app", "shared_app"]

FAST = {
    "sweep_check_interval": 0.2,
    "sweep_interval": 0.5,
    "dispatch_grace": 0.5,
    "redispatch_after": 5.0,
    "liveness_interval": 0.2,
    "liveness_ttl": 1.5,
    "nak_delay": 0.1,
}


async def connected_app(url: str, **wf_options: Any) -> App:
    """A connected App sharing the test tasks' registry, with a fast-sweeping workflow."""
    a = App("wftest", nats_url=url)
    a.registry = shared_app.registry
    await a.connect()
    a._workflow = Workflow.from_app(a, **{**FAST, **wf_options})
    return a
