"""Which store and bus errors are worth retrying: the cluster may answer differently soon.

During a JetStream leader election requests time out, find no responders,
or meet a reconnecting connection. Such an error says nothing about the write itself (it
may or may not have landed), so callers re-read and retry instead of giving up, and the
scheduler never counts it towards an event's poison limit.
"""

from __future__ import annotations

from ebind.errors import PublishFailed

__all__ = ["is_leaderless", "is_transient"]


def is_transient(exc: BaseException) -> bool:
    """True for timeouts, missing responders and connection trouble (retry later)."""
    if isinstance(exc, TimeoutError | ConnectionError | PublishFailed):
        return True
    # Imported here: the workflow core must stay importable without touching nats.
    import nats.errors
    import nats.js.errors

    return isinstance(
        exc,
        nats.errors.NoRespondersError
        | nats.errors.ConnectionClosedError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.StaleConnectionError
        | nats.errors.FlushTimeoutError
        | nats.errors.OutboundBufferLimitError
        | nats.errors.NoServersError
        | nats.js.errors.ServiceUnavailableError
        # A publish that met no stream leader (an election): nothing was stored.
        | nats.js.errors.NoStreamResponseError,
    )


def is_leaderless(exc: BaseException) -> bool:
    """True when the request met no responder: the stream has no leader (yet).

    Nothing was stored, so an immediate retry is safe and cheap (a fresh R3 stream, an
    election).
    """
    import nats.errors
    import nats.js.errors

    seen: BaseException | None = exc
    for _ in range(4):  # PublishFailed and friends wrap the client's error
        if seen is None:
            return False
        if isinstance(seen, nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError):
            return True
        seen = seen.__cause__
    return False
