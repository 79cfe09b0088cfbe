"""Which store and bus errors the workflow retries (cluster elections) and which it does not."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest

from ebind.errors import PublishFailed, StaleRevision
from ebind.workflow._transient import is_leaderless, is_transient


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        nats.errors.TimeoutError(),
        ConnectionResetError(),
        PublishFailed("not confirmed"),
        nats.errors.NoRespondersError(),
        nats.errors.ConnectionClosedError(),
        nats.errors.ConnectionReconnectingError(),
        nats.js.errors.ServiceUnavailableError(),
        nats.js.errors.NoStreamResponseError(),
    ],
)
def test_election_and_connection_trouble_is_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        StaleRevision("cas lost"),
        nats.js.errors.KeyWrongLastSequenceError(),
        nats.js.errors.BadRequestError(),
        ValueError("bug"),
    ],
)
def test_answers_that_a_retry_would_not_change_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_leaderless_looks_through_wrapping_errors() -> None:
    inner = nats.js.errors.NoStreamResponseError()
    outer = PublishFailed("wrapped")
    outer.__cause__ = inner
    assert is_leaderless(outer) and is_leaderless(nats.errors.NoRespondersError())
    assert not is_leaderless(TimeoutError())
