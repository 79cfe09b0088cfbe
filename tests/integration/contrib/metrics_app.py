"""The App served by the ``ebind worker --metrics-port`` test."""

from __future__ import annotations

import ebind

app = ebind.App("metrics-cli")


@app.task(name="double")
async def double(x: int) -> int:
    return 2 * x
