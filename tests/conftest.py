"""Shared fixtures: real nats-server processes owned by the test.

Every server runs on 127.0.0.1 with an OS-picked port read from its log, stores under the
test's tmp dir, and is stopped by PID in ``finally``. Nothing is skipped and no port is
assumed. Pass ``start_node`` keyword arguments through indirect parametrization, e.g.
``@pytest.mark.parametrize("nats_node", [{"sync_interval": "default"}], indirect=True)``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from refused_port import RefusedPort

from ebind.embed import Cluster, Node, start_cluster, start_node


@pytest.fixture(autouse=True)
def _baseline_logging() -> Iterator[None]:
    """Each test starts with library logs on stderr (captured by pytest, shown on failure).

    structlog.testing.capture_logs restores the previous processors with configure(),
    which flips is_configured() on with structlog's stdout defaults; without a baseline a
    later CLI test would print log lines into the stdout it parses. No level filter here:
    capture_logs keeps the wrapper class, so a filter would hide events tests assert on.
    """
    structlog.reset_defaults()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    yield


def _owned_node(request: pytest.FixtureRequest, store: Path) -> Iterator[Node]:
    """Start a node with the test's parametrized options and shut it down by PID after."""
    param = getattr(request, "param", None)
    node = start_node(store_dir=store, **(dict(param) if param else {}))
    try:
        yield node
    finally:
        node.shutdown()


@pytest.fixture
def nats_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """A fresh JetStream node for one test (sync_interval always unless parametrized)."""
    yield from _owned_node(request, tmp_path_factory.mktemp("nats-store"))


@pytest.fixture
def nats_url(nats_node: Node) -> str:
    """Client URL of this test's ``nats_node``."""
    return nats_node.client_url


@pytest.fixture(scope="module")
def nats_node_module(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """One node shared by a whole module, for suites where server startup dominates."""
    yield from _owned_node(request, tmp_path_factory.mktemp("nats-store-mod"))


@pytest.fixture
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-node JetStream cluster with a meta leader that sees all peers."""
    cluster = start_cluster(3, store_dir=tmp_path_factory.mktemp("nats-cluster"))
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def refused_port() -> Iterator[RefusedPort]:
    """A loopback port that refuses connects and stays ours for the test (see RefusedPort)."""
    held = RefusedPort()
    try:
        yield held
    finally:
        held.release()
