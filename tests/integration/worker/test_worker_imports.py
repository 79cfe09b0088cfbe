"""A running worker imports only what it uses: optional integrations stay out of memory."""

from __future__ import annotations

import subprocess
from pathlib import Path

from worker_helpers import spawn_cli_worker, wait_cli_ready

from ebind.app import App


async def test_a_plain_worker_has_not_imported_the_optional_modules(
    nats_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    import imports_app

    w = spawn_cli_worker(nats_url, tmp_path / "ledger", app_path="imports_app:app")
    procs.append(w)
    wait_cli_ready(w, 30)
    async with App("producer", nats_url=nats_url) as producer:
        producer.registry.register(imports_app.loaded.spec)
        fut = await producer.enqueue("imports.loaded")
        assert await fut.result(20) == []
