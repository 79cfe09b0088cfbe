"""CLI fixtures: one node per module, an App + worker on a background event loop."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import structlog
from cli_helpers import Background

from ebind.embed import Node


@pytest.fixture(scope="module", autouse=True)
def quiet_logs() -> Iterator[None]:
    """Library logs to the real stderr at warning level (never into CliRunner's stdout)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30),
        logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__),
    )
    try:
        yield
    finally:
        structlog.reset_defaults()


@pytest.fixture(scope="module")
def bg(nats_node_module: Node, quiet_logs: None) -> Iterator[Background]:
    """A module-wide App + worker on the module's node."""
    b = Background(nats_node_module.client_url)
    try:
        b.start()
        yield b
    finally:
        b.stop()
