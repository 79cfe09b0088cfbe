"""App.close() on a connection whose server already died does not raise."""

from __future__ import annotations

import pytest

from ebind.app import App


async def test_close_tolerates_a_connection_lost_while_draining(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App("closing", nats_url=nats_url)
    await app.connect()
    nc = app.nc
    real_close = nc.close

    async def lost() -> None:
        await real_close()
        raise ConnectionResetError("Connection lost")

    monkeypatch.setattr(nc, "close", lost)
    await app.close()  # must not raise
    assert not app.is_connected
