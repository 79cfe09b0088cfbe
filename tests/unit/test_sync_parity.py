"""The blocking API takes every option the async one does."""

from __future__ import annotations

import inspect

from ebind.sync import SyncTask
from ebind.task import Task, TaskOptions


def test_sync_apply_async_takes_every_option_of_the_async_one() -> None:
    want = set(inspect.signature(Task.apply_async).parameters)
    got = set(inspect.signature(SyncTask.apply_async).parameters)
    assert want == got, want ^ got


def test_apply_async_offers_every_publish_option() -> None:
    fields = set(TaskOptions.__dataclass_fields__)
    assert fields <= set(inspect.signature(Task.apply_async).parameters), fields
