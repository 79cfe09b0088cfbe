"""What stored writes cost under ``sync_interval: always``, one stream and several at once.

Under ``always`` the server fsyncs every stored message before it answers. A 1,000-leaf
fan-out stores about 8 messages per step in three streams (4 in the workflow bucket, 2 in
the events stream, 2 in the task stream); whether those three rows of fsyncs overlap or
queue behind one another decides how long the fan-out takes, whatever the CPU does.

Rows, on one embedded node under ``always``, publishes pipelined 64 at a time per stream:

- ``one``: N messages into one stream;
- ``three``: N messages into each of three streams at once;
- ``fanout_now``: the fan-out's mix for N steps today, 4N / 2N / 2N messages into three streams;
- ``fanout_plan``: the mix of the plan in docs/performance.md, 2N / 2N / 2N;
- ``ack_workqueue`` / ``ack_limits``: N stored messages fetched and acked one awaited ack at
  a time, from a work-queue stream (the ack removes the message, as ebind's task and event
  streams do) and from a stream that keeps its messages.

One JSON line per row and repetition (seconds, µs per message), then one with the medians
and ``overlap`` (three rows' time against one row's: 1.0 means the rows run fully side by
side, 3.0 that they queue).

Usage: ``python bench/fsync_rows.py [--n 1000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
from nats.js.api import RetentionPolicy, StreamConfig  # noqa: E402

from ebind.embed import start_node  # noqa: E402

PAYLOAD = b"x" * 200  # about a step record's size
IN_FLIGHT = 64


async def _pump(js: Any, subject: str, n: int) -> None:
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with sem:
            await js.publish(subject, PAYLOAD)

    await asyncio.gather(*(one() for _ in range(n)))


async def _timed(js: Any, counts: dict[str, int]) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(_pump(js, f"{s}.x", n) for s, n in counts.items() if n))
    return time.perf_counter() - t0


async def _acks(js: Any, stream: str, n: int, durable: str) -> float:
    """Seconds for ``n`` awaited acks of messages stored in ``stream`` (pull consumer)."""
    subject = f"{stream.lower()}.x"
    sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
    try:
        await _pump(js, subject, n)
        got, t0 = 0, time.perf_counter()
        while got < n:
            for msg in await sub.fetch(256, timeout=10):
                await msg.ack_sync()
                got += 1
        return time.perf_counter() - t0
    finally:
        await sub.unsubscribe()
        await js.delete_consumer(stream, durable)


async def _run(n: int, repeat: int) -> None:
    rows: dict[str, tuple[dict[str, int], list[float]]] = {
        "one": ({"a": n}, []),
        "three": ({"a": n, "b": n, "c": n}, []),
        "fanout_now": ({"a": 4 * n, "b": 2 * n, "c": 2 * n}, []),
        "fanout_plan": ({"a": 2 * n, "b": 2 * n, "c": 2 * n}, []),
    }
    acks: dict[str, list[float]] = {}
    with start_node(sync_interval="always") as node:
        nc = await nats.connect(node.client_url)
        try:
            js = nc.jetstream()
            for s in "abc":
                await js.add_stream(name=f"FSYNC_{s.upper()}", subjects=[f"{s}.>"])
            for name, kind in (("ACKWQ", RetentionPolicy.WORK_QUEUE), ("ACKLIM", None)):
                cfg = StreamConfig(name=name, subjects=[f"{name.lower()}.>"])
                if kind is not None:
                    cfg.retention = kind
                await js.add_stream(cfg)
            await _timed(js, {"a": 200, "b": 200, "c": 200})  # warm-up
            for rep in range(repeat):
                for name, (counts, times) in rows.items():
                    took = await _timed(js, counts)
                    times.append(took)
                    total = sum(counts.values())
                    line = {"row": name, "rep": rep, "messages": total, "seconds": round(took, 3)}
                    line["us_per_msg"] = round(took / total * 1e6, 1)
                    print(json.dumps(line), flush=True)
                for name, stream in (("ack_workqueue", "ACKWQ"), ("ack_limits", "ACKLIM")):
                    took = await _acks(js, stream, n, f"d{rep}")
                    acks.setdefault(name, []).append(took)
                    line = {"row": name, "rep": rep, "acks": n, "seconds": round(took, 3)}
                    line["us_per_ack"] = round(took / n * 1e6, 1)
                    print(json.dumps(line), flush=True)
        finally:
            await nc.close()
    med = {name: statistics.median(times) for name, (_, times) in rows.items()}
    summary: dict[str, Any] = {"summary": True, "n": n, "sync": "always"}
    summary.update({f"{k}_s": round(v, 3) for k, v in med.items()})
    summary["one_us_per_msg"] = round(med["one"] / n * 1e6, 1)
    summary["overlap"] = round(med["three"] / med["one"], 2)
    for name, times in acks.items():
        summary[f"{name}_us"] = round(statistics.median(times) / n * 1e6, 1)
    print(json.dumps(summary), flush=True)


def main() -> None:
    """Parse the arguments and run the rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="messages per stream in a row (steps)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    asyncio.run(_run(args.n, args.repeat))


if __name__ == "__main__":
    main()
