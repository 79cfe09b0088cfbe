"""The leader's memory of DAGs it is driving, so an event costs O(1) reads, not a listing.

A cached DAG is reused only for ``completed`` events: the step they name is re-read
(with the meta) and everything else is taken from memory. That is sound because every
other change to a step record is either made by this scheduler, announced by an event
that forces a full reload (``step_added``, ``signal``, ``resumed``), or makes this
scheduler's next CAS on that record fail (pause holds), which drops the entry. Any error,
a sweep, a finished DAG or a lost leadership drops it too. Results are create-only and
immutable, so they are cached by (dag, step) within a byte budget.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ebind.workflow.engine import Loaded

__all__ = ["ResultCache", "StateCache"]


class StateCache:
    """Least-recently-used map of DAG id to its loaded state."""

    def __init__(self, max_dags: int = 1024) -> None:
        self._max = max_dags
        self._items: OrderedDict[str, Loaded] = OrderedDict()

    def get(self, dag_id: str) -> Loaded | None:
        """The cached DAG, marked most recently used."""
        ld = self._items.get(dag_id)
        if ld is not None:
            self._items.move_to_end(dag_id)
        return ld

    def put(self, dag_id: str, ld: Loaded) -> None:
        """Remember a DAG's state after a successful evaluation."""
        self._items[dag_id] = ld
        self._items.move_to_end(dag_id)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def forget(self, dag_id: str) -> None:
        """Drop one DAG (after an error or when it finished)."""
        self._items.pop(dag_id, None)

    def clear(self) -> None:
        """Drop everything (leadership lost)."""
        self._items.clear()


class ResultCache:
    """Immutable step results by (dag, step, run), bounded by total bytes (oldest evicted)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._max = max_bytes
        self._size = 0
        self._items: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()

    def get(self, dag_id: str, step_id: str, run_id: str = "") -> bytes | None:
        """A cached result, if any."""
        return self._items.get((dag_id, step_id, run_id))

    def put(self, dag_id: str, step_id: str, data: bytes, run_id: str = "") -> None:
        """Cache a result read from the store."""
        key = (dag_id, step_id, run_id)
        if key in self._items or len(data) > self._max // 4:
            return
        self._items[key] = data
        self._size += len(data)
        while self._size > self._max:
            _, old = self._items.popitem(last=False)
            self._size -= len(old)

    def clear(self) -> None:
        """Drop everything."""
        self._items.clear()
        self._size = 0
