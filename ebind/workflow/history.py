"""Finished-DAG history: the live index's upkeep and the collector that removes old DAGs.

The live index (``=.live.<dag>``) lists the DAGs that are not finished, so the sweep and
``list_dags(status=running)`` cost what the live DAGs cost, whatever the history holds.
Submit writes the entry before the meta, finishing removes it after the final meta, and
the sweep removes entries whose DAG finished or never appeared (``prune_live``).

The collector (``collect``) removes every DAG that finished more than ``older_than``
seconds ago with one stream purge per DAG (meta, steps, results, signals, no tombstones
left behind). It lists every meta record, so it runs rarely, on the scheduler leader
(``SchedulerConfig.history``) or from ``ebind dag gc``; it also writes the live-index entry
of any unfinished DAG that has none (DAGs submitted before the index existed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from ebind.errors import DAGNotFound, RecordCorrupt
from ebind.logging import get_logger
from ebind.workflow.lifecycle import (
    LiveEntry,
    collectable,
    decode_live,
    encode_live,
    live_entry_removable,
)
from ebind.workflow.protocols import StateStore
from ebind.workflow.types import DAGMeta

__all__ = ["CollectReport", "collect", "drop_live", "live_metas", "prune_live"]

_log = get_logger("ebind.workflow.history")
_T = TypeVar("_T")
# Meta reads in flight while pruning or listing the live DAGs.
_READS_IN_FLIGHT = 64


@dataclass
class CollectReport:
    """What one collection did: DAGs examined, removed, and re-indexed as live."""

    examined: int = 0
    removed: list[str] = field(default_factory=list)
    indexed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """DAGs that could not be examined this time (logged; the next collection tries again)."""


async def drop_live(store: StateStore, dag_id: str) -> None:
    """Remove a finished DAG's live-index entry; on failure the sweep removes it later."""
    try:
        await store.delete_live(dag_id)
    except Exception as exc:
        _log.info("live.drop_failed", dag_id=dag_id, error=repr(exc))


async def _meta_or_none(store: StateStore, dag_id: str) -> DAGMeta | None:
    try:
        meta, _ = await store.get_meta(dag_id)
    except DAGNotFound:
        return None
    return meta


async def _each(items: Iterable[_T], fn: Callable[[_T], Awaitable[None]]) -> None:
    """``fn(item)`` for every item, a bounded number at a time."""
    slots = asyncio.Semaphore(_READS_IN_FLIGHT)

    async def run(item: _T) -> None:
        async with slots:
            await fn(item)

    await asyncio.gather(*(run(i) for i in items))


async def live_metas(store: StateStore) -> list[DAGMeta]:
    """Meta records of every DAG in the live index that is not finished."""
    entries = await store.list_live()
    found: dict[str, DAGMeta] = {}

    async def read(entry: tuple[str, bytes]) -> None:
        try:
            meta = await _meta_or_none(store, entry[0])
        except RecordCorrupt as exc:  # left out, as the full listing leaves it out
            _log.warning("kv.record_unusable", dag_id=entry[0], error=str(exc))
            return
        if meta is not None and not meta.status.terminal:
            found[entry[0]] = meta

    await _each(entries, read)
    return [found[d] for d, _ in entries if d in found]


async def prune_live(
    store: StateStore, entries: list[tuple[str, bytes]], now: datetime | None = None
) -> int:
    """Remove the entries whose DAG finished or is missing (see live_entry_removable)."""
    at = now or datetime.now(UTC)
    removed = 0

    async def check(entry: tuple[str, bytes]) -> None:
        nonlocal removed
        dag_id, raw = entry
        try:
            meta = await _meta_or_none(store, dag_id)
            if live_entry_removable(decode_live(raw), meta, at):
                await store.delete_live(dag_id)
                removed += 1
        except Exception as exc:  # one entry must not stop the others; next sweep retries
            _log.info("live.prune_failed", dag_id=dag_id, error=repr(exc))

    await _each(entries, check)
    if removed:
        _log.info("live.pruned", entries=removed)
    return removed


async def _collect_one(
    store: StateStore,
    meta: DAGMeta,
    at: datetime,
    older_than: float,
    live: set[str],
    dry_run: bool,
    report: CollectReport,
) -> None:
    """Remove one finished DAG, or re-index one live DAG missing from the index."""
    if collectable(meta, at, older_than):
        current = await _meta_or_none(store, meta.id)
        if current is not None and collectable(current, at, older_than):
            if not dry_run:
                await store.purge_dag(meta.id)
            report.removed.append(meta.id)
    elif not meta.status.terminal and meta.id not in live and not dry_run:
        entry = LiveEntry(at=at, run_id=meta.run_id)
        await store.put_live(meta.id, encode_live(entry))
        report.indexed.append(meta.id)


async def collect(
    store: StateStore,
    older_than: float,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    on_each: Callable[[int], None] | None = None,
    metas: list[DAGMeta] | None = None,
) -> CollectReport:
    """Remove every DAG finished at least ``older_than`` seconds ago; re-index live ones.

    ``dry_run`` only reports what would be removed. ``on_each(n)`` follows progress
    (one call per DAG examined); ``metas`` is the meta listing if the caller already
    read it. A DAG that turns live again meanwhile (a retry) is kept:
    its meta is read again just before the purge.
    """
    at = now or datetime.now(UTC)
    report = CollectReport()
    if metas is None:
        metas = await store.list_dags()
    live = {dag_id for dag_id, _ in await store.list_live()}
    for meta in metas:
        report.examined += 1
        try:
            await _collect_one(store, meta, at, older_than, live, dry_run, report)
        except Exception as exc:  # one DAG must not stop the collection of every other
            _log.warning("history.collect_skipped", dag_id=meta.id, error=repr(exc))
            report.failed.append(meta.id)
        if on_each is not None:
            on_each(1)
    _log.info(
        "history.collected",
        examined=report.examined,
        removed=len(report.removed),
        indexed=len(report.indexed),
        dry_run=dry_run,
    )
    return report
