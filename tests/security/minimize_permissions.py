"""Re-derive the producer and worker permission sets: drop each allow entry in turn.

Not a test (pytest does not collect it); run it after changing what a role does:

    .venv/bin/python tests/security/minimize_permissions.py [producer] [worker]

For every entry of a role's set it starts a fresh server whose user lacks just that entry,
runs the flows of ``test_least_privilege.py`` and reports whether they still pass without
a single permission violation. An entry reported "not exercised" is either dead weight or
serves a path those flows do not reach (its comment in ``ebind/permissions.py`` says
which); every other entry is needed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).parent))

import test_least_privilege as flows

from ebind.embed import Node, start_node
from ebind.permissions import Permissions

_LIMIT = 40.0  # seconds a flow may take before the run counts as broken
_ORIGINAL: dict[str, Callable[..., Permissions]] = {
    "producer": flows.producer,
    "worker": flows.worker,
}


def _without(role: str, kind: str, entry: str) -> Callable[..., Permissions]:
    def build(**options: object) -> Permissions:
        perms = _ORIGINAL[role](**options)
        if role == "producer" and options.get("client_id") != flows.PRODUCER_ID:
            return perms  # the second producer keeps its set
        lists = {"publish": perms.publish, "subscribe": perms.subscribe}
        lists[kind] = tuple(e for e in lists[kind] if e != entry)
        return Permissions(**lists)

    return build


async def _attempt(node: Node) -> str:
    run = asyncio.create_task(flows.run_flows(node))
    started = time.monotonic()
    while not run.done():
        if flows.violations(node) or time.monotonic() - started > _LIMIT:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            found = flows.violations(node)
            return found[0] if found else f"no result within {_LIMIT:g}s"
        await asyncio.sleep(0.1)
    exc = run.exception()
    if exc is not None:
        return repr(exc)
    found = flows.violations(node)  # the flows passed, but something may have been refused
    return found[0] if found else ""


def _sample(role: str) -> Permissions:
    prefix = flows.inbox_prefix_for(role)
    if role == "producer":
        return _ORIGINAL[role](inbox_prefix=prefix, client_id=flows.PRODUCER_ID, dags=True)
    return _ORIGINAL[role](inbox_prefix=prefix)


def main(roles: list[str]) -> None:
    """Report, for each entry of each role, whether the flows need it."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    for role in roles:
        sample = _sample(role)
        for kind in ("publish", "subscribe"):
            for entry in getattr(sample, kind):
                setattr(flows, role, _without(role, kind, entry))
                with tempfile.TemporaryDirectory(prefix="ebind-min-") as store:
                    node = start_node(store_dir=Path(store), extra_config=flows.users_config())
                    try:
                        broken = asyncio.run(_attempt(node))
                    finally:
                        node.shutdown()
                        setattr(flows, role, _ORIGINAL[role])
                verdict = f"needed ({broken[:100]})" if broken else "not exercised"
                sys.stdout.write(f"{role:9} {kind:9} {entry:62} {verdict}\n")
                sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:] or ["producer", "worker"])
