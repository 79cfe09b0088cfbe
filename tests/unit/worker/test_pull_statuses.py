"""Server statuses retire the pull requests they answer, found by the request's reply subject."""

from __future__ import annotations

from typing import Any

from ebind.worker.pull import Budget, Puller


class _Conn:
    """Takes pull requests without sending them."""

    is_closed = False

    def new_inbox(self) -> str:
        return "_INBOX.s"

    async def publish(self, subject: str, body: bytes, reply: str = "") -> None:
        return None


async def _with_requests(n: int) -> tuple[Puller, Budget]:
    budget = Budget(16)
    p = Puller(
        _Conn(),
        stream="EBIND_TASKS",
        durable="d",
        budget=budget,
        on_msg=lambda m, p: None,
        expires=1.0,
    )
    p._inbox = "_INBOX.s"  # what start() sets, without its pull loop
    for _ in range(n):
        await p._request(2)
    return p, budget


async def test_a_timeout_retires_the_request_it_answers_not_the_oldest() -> None:
    p, budget = await _with_requests(3)
    p._on_status({"Status": "408", "Description": "Request Timeout"}, "2")
    assert list(p._requests) == ["1", "3"] and budget.requested == 4


async def test_a_status_for_a_request_retired_already_changes_nothing() -> None:
    p, budget = await _with_requests(2)
    p._on_status({"Status": "408", "Description": "Request Timeout"}, "9")
    p._on_status({"Status": "408", "Description": "Request Timeout"}, "x")
    assert list(p._requests) == ["1", "2"] and budget.requested == 4


async def test_a_late_leadership_change_keeps_requests_made_after_it() -> None:
    """The server answers every request the old leader held; one such answer read after a
    request was made at the new leader must not retire that one."""
    p, budget = await _with_requests(3)
    change: dict[str, Any] = {"Status": "409", "Description": "Leadership Change"}
    p._on_status(change, "2")
    assert list(p._requests) == ["3"] and budget.requested == 2
    p._on_status({"Status": "409", "Description": "Consumer Deleted"}, "not-a-number")
    assert not p._requests and budget.requested == 0
