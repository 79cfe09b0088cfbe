"""``App.workflow`` follows the App across ``close()`` and ``connect()``."""

from __future__ import annotations

from ebind.app import App


async def test_workflow_is_rebuilt_after_reconnect(nats_url: str) -> None:
    app = App("reconnect", nats_url=nats_url)
    await app.connect()
    first = app.workflow
    first.hook()  # starts the hook, whose background work must stop with the App
    await app.close()
    await app.connect()
    try:
        second = app.workflow
        assert second is not first
        # The new engine works on the new connection: listing DAGs reads the KV bucket.
        assert await second.list_dags() == []
    finally:
        await app.close()
