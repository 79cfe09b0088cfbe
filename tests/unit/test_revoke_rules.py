"""The pure parts of revoke: keys, subjects, the TTL header, the error and the context flag."""

from __future__ import annotations

import pytest

from ebind.context import Context
from ebind.errors import InvalidName, TaskRevoked
from ebind.revoke import (
    REVOKED_KEYS,
    REVOKED_SUBJECTS,
    revoke_key,
    revoke_ttl_header,
    revoked_error,
    revoked_id,
    revoked_key_id,
)


def test_the_key_names_the_task_id_under_revoked() -> None:
    assert revoke_key("abc-123_x") == "revoked.abc-123_x"
    assert REVOKED_KEYS == "revoked.>"
    assert REVOKED_SUBJECTS == "$KV.ebind-leases.revoked.>"


@pytest.mark.parametrize("bad", ["", "a.b", "*", ">", "a b", "x" * 129])
def test_a_task_id_that_is_not_a_plain_id_is_refused_by_name(bad: str) -> None:
    with pytest.raises(InvalidName, match="task id"):
        revoke_key(bad)


def test_a_non_string_task_id_is_refused() -> None:
    with pytest.raises(InvalidName, match="task id must be a string"):
        revoke_key(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("subject", "task_id"),
    [
        ("$KV.ebind-leases.revoked.abc", "abc"),
        ("$KV.ebind-leases.revoked.sched-7", "sched-7"),
        ("$KV.ebind-leases.revoked.", None),
        ("$KV.ebind-leases.revoked.a.b", None),
        ("$KV.ebind-leases.scheduler", None),
        ("$KV.ebind-dags.revoked.abc", None),
        ("revoked.abc", None),
    ],
)
def test_a_revocation_subject_gives_its_task_id(subject: str, task_id: str | None) -> None:
    assert revoked_id(subject) == task_id


@pytest.mark.parametrize(
    ("key", "task_id"),
    [("revoked.abc", "abc"), ("revoked.", None), ("revoked.a.b", None), ("scheduler", None)],
)
def test_a_bucket_key_gives_its_task_id(key: str, task_id: str | None) -> None:
    assert revoked_key_id(key) == task_id


@pytest.mark.parametrize(
    ("horizon", "header"),
    [(604800.0, "604800000ms"), (2.5, "2500ms"), (0.0, "1000ms"), (0.2, "1000ms")],
)
def test_the_record_lasts_the_tasks_horizon_and_at_least_a_second(
    horizon: float, header: str
) -> None:
    assert revoke_ttl_header(horizon) == header


def test_the_error_is_the_non_retryable_revoked_kind_naming_the_task() -> None:
    error = revoked_error("t-1")
    assert error.kind == "revoked"
    assert not error.retryable
    assert error.message == "task t-1 was revoked"


def test_check_revoked_raises_only_once_the_flag_is_set() -> None:
    ctx = Context(task_id="t-2", name="n")
    assert ctx.revoked is False
    ctx.check_revoked()
    ctx.revoked = True
    with pytest.raises(TaskRevoked, match="task t-2 was revoked"):
        ctx.check_revoked()
