"""The queue-depth gauge's label set is bounded whatever queue names producers invent."""

from __future__ import annotations

from ebind.contrib.prometheus import MAX_OTHER_QUEUES, OTHER_QUEUES, bounded_queues


def test_known_and_the_deepest_others_keep_their_series_the_rest_are_summed() -> None:
    depths = {("default", "normal"): 3, ("billing", "high"): 1}
    depths |= {(f"junk{i}", "normal"): i for i in range(100)}
    got = bounded_queues(depths, {"billing"})
    queues = {q for q, _ in got}
    assert {"default", "billing", OTHER_QUEUES} <= queues
    assert len(queues) == 2 + MAX_OTHER_QUEUES + 1
    assert {f"junk{i}" for i in range(100 - MAX_OTHER_QUEUES, 100)} <= queues  # the deepest
    assert sum(got.values()) == sum(depths.values())  # nothing dropped, only summed


def test_few_queues_are_left_alone() -> None:
    depths = {("default", "normal"): 3, ("a", "low"): 2}
    assert bounded_queues(depths, set()) == depths
