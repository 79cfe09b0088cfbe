"""Durable, cluster-wide revocation of one task id.

A revocation is a key ``revoked.<task id>`` in the ``ebind-leases`` bucket, written with a
per-key TTL of the tasks horizon (a task older than that is expired anyway). The KV write is
itself a publish on ``$KV.ebind-leases.revoked.<id>``, so every worker's core subscription
on that subject learns of it at once (and cancels the task if it runs it); a worker that
was not running at that moment reads the key before it runs an older message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ebind.streams import KV_LEASES, check_id
from ebind.wire import ErrorKind, TaskError

__all__ = [
    "REVOKED_KEYS",
    "REVOKED_SUBJECTS",
    "Revocation",
    "revoke",
    "revoke_key",
    "revoke_ttl_header",
    "revoked_error",
    "revoked_id",
    "revoked_key_id",
]

_PREFIX = "revoked."
_KV_PREFIX = f"$KV.{KV_LEASES}.{_PREFIX}"
REVOKED_SUBJECTS = f"{_KV_PREFIX}>"
"""The subjects revocations are written to (a worker subscribes to them)."""
REVOKED_KEYS = f"{_PREFIX}>"
"""The key filter of every revocation in the ``ebind-leases`` bucket."""
_MIN_TTL = 1.0


class Revocation(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`revoke` recorded: the id and when the record lapses."""

    task_id: str
    until: datetime


def revoke_key(task_id: str) -> str:
    """The ``ebind-leases`` key of ``task_id``'s revocation (the id is validated)."""
    return _PREFIX + check_id(task_id, "task id")


def revoked_id(subject: str) -> str | None:
    """The task id a revocation subject names, None for any other subject."""
    if not subject.startswith(_KV_PREFIX):
        return None
    return revoked_key_id(subject[len(_KV_PREFIX) - len(_PREFIX) :])


def revoked_key_id(key: str) -> str | None:
    """The task id a bucket key ``revoked.<id>`` names, None for any other key."""
    if not key.startswith(_PREFIX):
        return None
    task_id = key[len(_PREFIX) :]
    return task_id if task_id and "." not in task_id else None


def revoke_ttl_header(horizon: float) -> str:
    """``Nats-TTL`` for a revocation: the tasks horizon in ms, at least one second."""
    return f"{round(max(horizon, _MIN_TTL) * 1000)}ms"


def revoked_error(task_id: str) -> TaskError:
    """The non-retryable ``revoked`` error a revoked task is dead-lettered and answered with."""
    return TaskError(
        kind=ErrorKind.REVOKED.value,
        message=f"task {task_id} was revoked",
        retryable=False,
    )


async def revoke(app: Any, task_id: str) -> Revocation:
    """Record ``task_id`` as revoked for the tasks horizon (unknown or finished ids too)."""
    from ebind._jsreq import requests_for

    key = revoke_key(task_id)
    horizon = float(app.tasks_horizon or 0.0)
    ttl = max(horizon, _MIN_TTL)
    await requests_for(app.nc).publish(
        f"$KV.{KV_LEASES}.{key}", b"", {"Nats-TTL": revoke_ttl_header(horizon)}
    )
    return Revocation(task_id=task_id, until=datetime.now(UTC) + timedelta(seconds=ttl))
