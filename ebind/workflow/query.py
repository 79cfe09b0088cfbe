"""Label and status queries: ``list_dags(labels=..., status=...)``, newest first.

Labels are set once by ``DAG(labels=...)`` and stored in the immutable meta record.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from ebind.workflow.dag import clean_labels
from ebind.workflow.debug import matches_labels
from ebind.workflow.history import live_metas
from ebind.workflow.protocols import StateStore
from ebind.workflow.types import DAGMeta, DAGStatus

__all__ = ["list_dags", "matches_labels"]

_EPOCH = datetime.min.replace(tzinfo=UTC)


async def list_dags(
    store: StateStore, labels: Iterable[str] | str = (), status: DAGStatus | None = None
) -> list[DAGMeta]:
    """Every DAG carrying all ``labels`` (none given: every DAG) in ``status``, newest first.

    An unfinished ``status`` lists only the live index, never the finished history.
    """
    want = clean_labels(labels, "query")
    listed = await (store.list_dags() if status is None or status.terminal else live_metas(store))
    metas = [
        m for m in listed if matches_labels(m, want) and (status is None or m.status is status)
    ]
    metas.sort(key=lambda m: (m.created_at or _EPOCH, m.id), reverse=True)
    return metas
