"""App served by the ``ebind worker`` subprocess of the secret-leak test."""

from __future__ import annotations

from ebind.app import App
from ebind.errors import NonRetryable

app = App("leaktest")


@app.task(name="sec.add")
async def add(a: int, b: int) -> int:
    """Succeeds."""
    return a + b


@app.task(name="sec.fail")
async def fail(reason: str) -> None:
    """Dead-letters at once."""
    raise NonRetryable(f"refusing: {reason}")
