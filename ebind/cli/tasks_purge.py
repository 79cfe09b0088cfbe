"""``ebind stream purge EBIND_TASKS``: queued tasks only, unless more is asked for.

EBIND_TASKS holds three kinds of message: queued tasks, delayed (countdown / eta) tasks not
yet due, and periodic schedules. A purge removes queued tasks by default, says how many of
each kind it removed and kept, and takes ``--delayed`` / ``--schedules`` to remove the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ebind.streams import PERIODIC_SUBJECTS, SCHEDULED_SUBJECTS, TASKS_STREAM

__all__ = ["CATEGORIES", "PurgeReport", "plan", "purge_tasks", "render"]

CATEGORIES: dict[str, tuple[str, ...]] = {
    "queued tasks": ("TASKS.>", "TASKS_TARGET.>", "TASKQ.>"),
    "delayed tasks": (SCHEDULED_SUBJECTS,),
    "periodic schedules": (PERIODIC_SUBJECTS,),
}
"""What EBIND_TASKS holds, by the subject filters of each kind."""
_FLAGS = {"delayed tasks": "--delayed", "periodic schedules": "--schedules"}


@dataclass
class PurgeReport:
    """How many messages of each kind were removed and kept."""

    removed: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The report for ``--json``."""
        return {"stream": TASKS_STREAM, "removed": self.removed, "kept": self.kept}


def plan(*, delayed: bool, schedules: bool) -> tuple[list[str], list[str]]:
    """The kinds to remove and the kinds to keep."""
    remove = ["queued tasks"]
    if delayed:
        remove.append("delayed tasks")
    if schedules:
        remove.append("periodic schedules")
    return remove, [k for k in CATEGORIES if k not in remove]


def render(report: PurgeReport) -> str:
    """``purged 3 queued tasks from EBIND_TASKS; kept 1 delayed tasks (--delayed ...)``."""
    removed = ", ".join(f"{n} {kind}" for kind, n in report.removed.items())
    text = f"purged {removed} from {TASKS_STREAM}"
    if report.kept:
        kept = ", ".join(
            f"{n} {kind} ({_FLAGS[kind]} removes them)" for kind, n in report.kept.items()
        )
        text += f"; kept {kept}"
    return text


async def purge_tasks(app: Any, *, delayed: bool, schedules: bool) -> PurgeReport:
    """Purge the asked kinds with subject-filtered purges; count the kept kinds."""
    remove, keep = plan(delayed=delayed, schedules=schedules)
    report = PurgeReport()
    for kind in remove:
        report.removed[kind] = sum([await _purge(app, f) for f in CATEGORIES[kind]])
    for kind in keep:
        report.kept[kind] = sum([await _count(app, f) for f in CATEGORIES[kind]])
    return report


async def _purge(app: Any, subject_filter: str) -> int:
    from nats.js.errors import APIError

    reply = await app.nc.request(
        f"$JS.API.STREAM.PURGE.{TASKS_STREAM}",
        json.dumps({"filter": subject_filter}).encode(),
        timeout=10,
    )
    doc = json.loads(reply.data)
    if "error" in doc:
        raise APIError.from_error(doc["error"])
    return int(doc.get("purged", 0))


async def _count(app: Any, subject_filter: str) -> int:
    info = await app.js.stream_info(TASKS_STREAM, subjects_filter=subject_filter)
    return sum((info.state.subjects or {}).values())
