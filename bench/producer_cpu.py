"""Producer CPU per ``await t.delay(i)``, beside the raw nats-py floor, in one run.

An embedded node (NATS default sync) and no worker: only this process's CPU time
(``time.process_time()``) is measured, so load from other processes on a shared machine
barely moves it. Rows, alternating within each repetition:

- ``floor``: ``await js.publish(subject, payload)`` on a work-queue stream, one PubAck at a
  time, with a payload the size of one ebind envelope;
- ``core``: the least a confirmed publish costs with nats-py (a core publish whose reply
  subject is a subscribed inbox, awaited on a future; the PubAck is not read), the same size;
- ``ebind``: ``await t.delay(i)`` on a registered task, the loop a user writes.

One JSON line per row and repetition (µs of producer CPU per call), then one with the
medians and the ratios ``ebind_vs_floor`` and ``ebind_vs_core`` (1.0 is that row).

Usage: ``python bench/producer_cpu.py [--calls 20000] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tasks import ROOT, _run  # noqa: E402

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ebind.app import App  # noqa: E402

app = App("bench-producer", publish_timeout=30.0)


@app.task(name="bench.echo")
async def echo(i: int) -> int:
    """Returns its argument (never runs here: the bench has no worker)."""
    return i


FLOOR_STREAM = "FLOORP"
FLOOR_SUBJECT = "floorp.task"


async def _ebind(n: int) -> float:
    t0 = time.process_time()
    for i in range(n):
        await echo.delay(i)
    return (time.process_time() - t0) / n * 1e6


async def _floor(js: Any, n: int, payload: bytes) -> float:
    t0 = time.process_time()
    for _ in range(n):
        await js.publish(FLOOR_SUBJECT, payload)
    return (time.process_time() - t0) / n * 1e6


async def _core(nc: Any, n: int, payload: bytes) -> float:
    """The least a confirmed publish costs with nats-py: a core publish whose reply
    subject is a subscribed inbox, and a future the PubAck resolves (no JSON read)."""
    loop = asyncio.get_running_loop()
    inbox = nc.new_inbox()
    box: list[asyncio.Future[None]] = []

    async def on_ack(msg: Any) -> None:
        box.pop().set_result(None)

    sub = await nc.subscribe(inbox, cb=on_ack)
    t0 = time.process_time()
    for _ in range(n):
        fut = loop.create_future()
        box.append(fut)
        await nc.publish(FLOOR_SUBJECT, payload, reply=inbox)
        await fut
    cpu = (time.process_time() - t0) / n * 1e6
    await sub.unsubscribe()
    return cpu


def _envelope_size() -> int:
    """Bytes of one envelope as delay() publishes it (the floor publishes as many)."""
    from ebind.task import DEFAULT_OPTIONS
    from ebind.wire import encoder

    env, _ = app._prepare(echo.spec, echo.spec.name, (12345,), {}, DEFAULT_OPTIONS)
    return len(encoder.encode(env))


async def _main(n: int, repeat: int) -> None:
    import nats
    from nats.js.api import RetentionPolicy, StreamConfig

    from ebind.embed import start_node
    from ebind.streams import TASKS_STREAM

    with tempfile.TemporaryDirectory(prefix="ebind-bench-producer-") as store:
        node = start_node(store_dir=store, sync_interval=None)
        try:
            app.servers = [node.client_url]
            await app.connect()
            nc = await nats.connect(node.client_url)
            js = nc.jetstream()
            await js.add_stream(
                StreamConfig(
                    name=FLOOR_STREAM,
                    subjects=[FLOOR_SUBJECT],
                    retention=RetentionPolicy.WORK_QUEUE,
                )
            )
            payload = b"x" * _envelope_size()
            await _ebind(500)  # warm up both paths outside the measurement
            await _floor(js, 500, payload)
            await _core(nc, 500, payload)
            rows: dict[str, list[float]] = {"floor": [], "core": [], "ebind": []}
            for rep in range(repeat):
                for name in rows:
                    if name == "floor":
                        us = await _floor(js, n, payload)
                    elif name == "core":
                        us = await _core(nc, n, payload)
                    else:
                        us = await _ebind(n)
                    rows[name].append(us)
                    line = {"rep": rep, "row": name, "cpu_us_per_call": round(us, 2)}
                    print(json.dumps(line), flush=True)
                # Keep the streams small: no worker drains them.
                await js.purge_stream(FLOOR_STREAM)
                await js.purge_stream(TASKS_STREAM)
            floor = statistics.median(rows["floor"])
            core = statistics.median(rows["core"])
            ours = statistics.median(rows["ebind"])
            summary = {
                "calls": n,
                "median_of": repeat,
                "payload_bytes": len(payload),
                "floor_cpu_us_per_call": round(floor, 2),
                "core_cpu_us_per_call": round(core, 2),
                "ebind_cpu_us_per_call": round(ours, 2),
                "ebind_vs_floor": round(ours / floor, 3),
                "ebind_vs_core": round(ours / core, 3),
            }
            print(json.dumps(summary), flush=True)
            await nc.close()
            await app.close()
        finally:
            node.shutdown()


def main() -> None:
    """Measure both rows ``--repeat`` times and print the medians."""
    import ebind.logging

    ebind.logging.configure(level="warning")  # stderr; stdout holds the report
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    _run(_main(args.calls, args.repeat))


if __name__ == "__main__":
    main()
