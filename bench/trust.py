"""Cost of message signing and of the payload codec: per-envelope micro-benchmarks.

Imported by ``bench/tasks.py``, which also runs the end-to-end benchmark with each one
switched on (``BENCH_TRUST=signing`` / ``codec`` in the worker's environment selects the
same settings there). The keys below are fixed benchmark keys, not secrets.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from ebind.contrib.fernet import FernetCodec
from ebind.payload import PayloadCodec, seal, unseal
from ebind.signing import HEADER_SIGNATURE, Signer
from ebind.wire import TaskEnvelope, encoder

ENV_TRUST = "BENCH_TRUST"
MODES = ("signing", "codec")
_SIGNING_KEYS = [b"bench-signing-key-new-0123456789", b"bench-signing-key-old-0123456789"]
_FERNET_KEY = "YmVuY2gtZmVybmV0LWtleS0wMTIzNDU2Nzg5YWJjZGU="


def trust_options(mode: str | None = None) -> dict[str, Any]:
    """App options for ``mode`` (``signing``, ``codec`` or empty); default: ``$BENCH_TRUST``."""
    mode = os.environ.get(ENV_TRUST, "") if mode is None else mode
    if mode == "signing":
        return {"signing_keys": _SIGNING_KEYS}
    if mode == "codec":
        return {"payload_codec": FernetCodec([_FERNET_KEY])}
    if mode:
        raise ValueError(f"unknown {ENV_TRUST} {mode!r}; use one of {MODES}")
    return {}


def _per_call_us(fn: Any, rounds: int, repeats: int = 5) -> float:
    # Best of several runs, like timeit: other processes on a shared machine only add time.
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / rounds * 1e6


def _envelope(args_bytes: int) -> bytes:
    payload = msgspec.json.encode(["x" * args_bytes])
    env = TaskEnvelope(
        id="0d5b2a3e-6c1f-4b8e-9a77-2f4c1d9e8b10",
        name="bench.noop",
        payload=msgspec.Raw(payload),
        reply_to="RESP.0123456789abcdef0123456789abcdef.0d5b2a3e-6c1f-4b8e-9a77-2f4c1d9e8b10",
    )
    return encoder.encode(env)


def micro(rounds: int = 4_000) -> dict[str, float]:
    """µs per envelope: sign+verify (HMAC-SHA256) and seal+open (Fernet), small and 1 KiB."""
    signer = Signer(_SIGNING_KEYS)
    codec: PayloadCodec = FernetCodec([_FERNET_KEY])
    out: dict[str, float] = {}
    subject = "TASKS.bench.noop"
    for label, size in (("small", 0), ("1k", 1024)):
        data = _envelope(size)

        def sign_verify(data: bytes = data) -> None:
            headers = {HEADER_SIGNATURE: signer.sign(subject, data)}
            assert signer.check(subject, data, headers) is None

        args = msgspec.json.encode(["x" * size])

        def seal_open(args: bytes = args) -> None:
            unseal(codec, seal(codec, args), "bench")

        out[f"sign_verify_us_{label}"] = _per_call_us(sign_verify, rounds)
        out[f"seal_open_us_{label}"] = _per_call_us(seal_open, rounds // 4)
    return out
