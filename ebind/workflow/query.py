"""Label queries: ``list_dags(labels=...)`` with AND semantics, newest first.

Labels are set once by ``DAG(labels=...)`` and stored in the immutable meta record.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from ebind.workflow.dag import clean_labels
from ebind.workflow.debug import matches_labels
from ebind.workflow.protocols import StateStore
from ebind.workflow.types import DAGMeta

__all__ = ["list_dags", "matches_labels"]

_EPOCH = datetime.min.replace(tzinfo=UTC)


async def list_dags(store: StateStore, labels: Iterable[str] | str = ()) -> list[DAGMeta]:
    """Every DAG carrying all ``labels`` (none given: every DAG), newest first."""
    want = clean_labels(labels, "query")
    metas = [m for m in await store.list_dags() if matches_labels(m, want)]
    metas.sort(key=lambda m: (m.created_at or _EPOCH, m.id), reverse=True)
    return metas
