"""The latest progress of a DAG's running steps, for ``ebind dag get`` and ``dag tree``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ebind.cli.output import age
from ebind.progress import Progress, read_progress

__all__ = ["progress_lines", "step_progress", "step_task_id"]


def step_task_id(dag_id: str, step_id: str) -> str:
    """The task id a DAG step runs under (the scheduler's ``<dag>:<step>``)."""
    return f"{dag_id}:{step_id}"


async def step_progress(app: Any, dag_id: str, running: Iterable[str]) -> dict[str, Progress]:
    """Step id -> latest progress, for the ``running`` steps that reported any."""
    out: dict[str, Progress] = {}
    for step_id in running:
        # steps have no reply subject: their records are under the no-client token
        got = await read_progress(app.nc, step_task_id(dag_id, step_id), "")
        if got is not None:
            out[step_id] = got
    return out


def progress_lines(found: dict[str, Progress], now: datetime | None = None) -> list[str]:
    """``  progress:`` then one ``step  40% 'note' (3s ago)`` line per step; none if empty."""
    if not found:
        return []
    at = now or datetime.now(UTC)
    lines = ["  progress:"]
    for step_id, p in sorted(found.items()):
        note = f" {p.note!r}" if p.note else ""
        lines.append(f"    {step_id}  {p.fraction:.0%}{note} ({age(p.at, at)} ago)")
    return lines
