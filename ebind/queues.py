"""Queues and priority bands: names, subjects and the durable consumer of each lane.

A *lane* is one (queue, priority band, task name). Untargeted tasks of the default queue
and the normal band travel on ``TASKS.<name>`` (the subject every earlier release used, so
messages queued before an upgrade and producers not yet upgraded keep working); every
other lane travels on ``TASKQ.<queue>.<band>.<name>``. Each lane has its own durable whose
filter is exactly its subject, so lanes never overlap: a worker creates durables only for
the handlers it has, and services with disjoint task sets never see each other's tasks.
Targeted tasks keep their ``TASKS_TARGET.<b64(target)>.<name>`` subject (a target names
the worker; queue and band do not apply).

Queue names are untrusted (they reach subjects and consumer names): ``[A-Za-z0-9_-]``,
at most :data:`MAX_QUEUE_LEN` characters. Bands are ``high``, ``normal`` and ``low``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from ebind.errors import InvalidName
from ebind.streams import check_id, check_task_name

__all__ = [
    "BANDS",
    "DEFAULT_BAND",
    "DEFAULT_QUEUE",
    "LANE_DURABLE_PREFIX",
    "LANE_SUBJECTS",
    "LEGACY_FILTER",
    "MAX_QUEUE_LEN",
    "QUEUE_PREFIX",
    "Lane",
    "band_rank",
    "check_priority",
    "check_queue",
    "lane_durable",
    "lane_subject",
    "lanes_for",
    "parse_queues",
    "parse_subject",
    "wire_priority",
    "wire_queue",
]

DEFAULT_QUEUE = "default"
"""The queue of a task that names none."""
BANDS = ("high", "normal", "low")
"""Priority bands, highest first."""
DEFAULT_BAND = "normal"
"""The band of a task that names none."""
MAX_QUEUE_LEN = 64
QUEUE_PREFIX = "TASKQ"
"""First token of every lane subject except the default queue's normal band."""
LANE_SUBJECTS = ("TASKS.>", f"{QUEUE_PREFIX}.>")
"""Subjects of untargeted queued tasks (every lane)."""
LEGACY_FILTER = "TASKS.>"
"""Filter of the single shared durable older workers used; it overlaps every lane."""
LANE_DURABLE_PREFIX = "ebind-t-"
"""First characters of every lane durable's name."""
_READABLE_NAME = 40  # characters of the task name kept readable in a durable name


def check_queue(queue: str) -> str:
    """Return ``queue`` if it is a valid queue name, else raise InvalidName."""
    if isinstance(cast(object, queue), str) and len(queue) > MAX_QUEUE_LEN:
        raise InvalidName(
            f"queue name is {len(queue)} characters long; the limit is {MAX_QUEUE_LEN}",
            kind="queue",
            value=queue[:64],
        )
    return check_id(queue, "queue")


def check_priority(priority: str) -> str:
    """Return the band ``priority`` names (``high``, ``normal`` or ``low``), else raise."""
    if isinstance(cast(object, priority), str) and priority in BANDS:
        return priority
    raise InvalidName(
        f"priority must be one of {', '.join(BANDS)}; got {str(priority)[:64]!r}",
        kind="priority",
        value=str(priority)[:64],
    )


def band_rank(band: str) -> int:
    """0 for the highest band; a worker serves lower ranks first."""
    return BANDS.index(band or DEFAULT_BAND)


def wire_queue(queue: str) -> str:
    """The envelope's ``queue`` field: empty for the default queue (kept off the wire)."""
    return "" if queue == DEFAULT_QUEUE else check_queue(queue)


def wire_priority(priority: str) -> str:
    """The envelope's ``priority`` field: empty for the normal band (kept off the wire)."""
    return "" if priority == DEFAULT_BAND else check_priority(priority)


def lane_subject(name: str, queue: str = "", priority: str = "") -> str:
    """Subject of an untargeted task in ``queue`` and band ``priority`` (empty: defaults)."""
    queue = queue or DEFAULT_QUEUE
    band = priority or DEFAULT_BAND
    if queue == DEFAULT_QUEUE and band == DEFAULT_BAND:
        return f"TASKS.{name}"
    return f"{QUEUE_PREFIX}.{queue}.{band}.{name}"


def lane_durable(name: str, queue: str = "", priority: str = "") -> str:
    """Durable consumer of one lane: readable parts plus a digest of its exact subject.

    Task names may contain dots (not allowed in consumer names) and differ only there
    (``a.b`` and ``a_b``), so the digest keeps two lanes from ever sharing a durable.
    """
    queue = queue or DEFAULT_QUEUE
    band = priority or DEFAULT_BAND
    digest = hashlib.sha256(lane_subject(name, queue, band).encode()).hexdigest()[:12]
    readable = name.replace(".", "_")[:_READABLE_NAME]
    return f"{LANE_DURABLE_PREFIX}{queue}-{band}-{readable}-{digest}"


@dataclass(frozen=True, slots=True, order=True)
class Lane:
    """One (band, queue, task name) a worker pulls from; orders highest band first."""

    rank: int
    queue: str
    name: str

    @property
    def band(self) -> str:
        """The lane's priority band."""
        return BANDS[self.rank]

    @property
    def subject(self) -> str:
        """The exact subject (and consumer filter) of the lane."""
        return lane_subject(self.name, self.queue, self.band)

    @property
    def durable(self) -> str:
        """The lane's durable consumer name."""
        return lane_durable(self.name, self.queue, self.band)


def lanes_for(names: Iterable[str], queues: Iterable[str]) -> list[Lane]:
    """Every lane of ``names`` in ``queues`` and all bands, highest band first."""
    qs = sorted({check_queue(q) for q in queues})
    return sorted(
        Lane(rank, q, check_task_name(n)) for n in set(names) for q in qs for rank in range(3)
    )


def parse_queues(text: str) -> tuple[str, ...]:
    """``"billing, emails"`` -> ``("billing", "emails")`` (validated, duplicates dropped)."""
    seen: dict[str, None] = {}
    for part in text.split(","):
        part = part.strip()
        if part:
            seen[check_queue(part)] = None
    if not seen:
        raise InvalidName("no queue named: pass comma-separated queue names", kind="queue")
    return tuple(seen)


def parse_subject(subject: str) -> tuple[str, str, str] | None:
    """``(queue, band, task name)`` of an untargeted task subject; None for anything else.

    Read from the server (stream subject counts), so every part is checked.
    """
    try:
        if subject.startswith("TASKS."):
            return DEFAULT_QUEUE, DEFAULT_BAND, check_task_name(subject[len("TASKS.") :])
        if subject.startswith(QUEUE_PREFIX + "."):
            parts = subject.split(".", 3)
            if len(parts) != 4:
                return None
            _, queue, band, name = parts
            return check_queue(queue), check_priority(band), check_task_name(name)
    except InvalidName:
        return None
    return None
