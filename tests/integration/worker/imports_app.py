"""App whose one task reports which optional modules its worker process has imported."""

from __future__ import annotations

import sys

from ebind.app import App

app = App("importstest")

OPTIONAL = (
    "prometheus_client",
    "opentelemetry",
    "cryptography",
    "multiprocessing",
    "django",
    "flask",
    "fastapi",
    "ebind.contrib",
    "ebind.cli.worker_procs",
)
"""Modules a plain worker (thread pool, no metrics, no tracing, no signing) never needs."""


@app.task(name="imports.loaded")
async def loaded() -> list[str]:
    """The modules of ``OPTIONAL`` (or under them) loaded in this process."""
    return sorted(m for m in sys.modules if any(m == o or m.startswith(o + ".") for o in OPTIONAL))
