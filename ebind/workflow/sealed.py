"""The workflow store wrapper that keeps step arguments, results and signals sealed in KV."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from ebind._jsreq import PubAck
from ebind.errors import StaleRevision
from ebind.payload import PayloadCodec, seal, unseal
from ebind.wire import TaskEnvelope
from ebind.workflow.enqueuer import PublishFn
from ebind.workflow.protocols import StateStore
from ebind.workflow.snapshot import Snapshot
from ebind.workflow.types import DAGMeta, SignalRecord, StepRecord

__all__ = ["SealedStore", "sealing_publisher"]


class SealedStore:
    """A StateStore that seals step arguments, results and signal payloads before writing.

    Everything above it (scheduler, step hook, ``wf.result``) sees plaintext; the KV
    bucket holds tokens. Names, ids, statuses, dependencies and error texts stay readable
    (the scheduler needs them without a key; error texts go through ``redact_error``).
    Tokens are not deterministic, so the create-once result check compares plaintexts.
    """

    def __init__(self, inner: StateStore, codec: PayloadCodec) -> None:
        self.inner = inner
        self.codec = codec

    def __getattr__(self, name: str) -> Any:
        # Store-specific extras (close, create, ...) pass through untouched.
        return getattr(self.inner, name)

    # -- the sealing helpers ---------------------------------------------------------------
    def _seal_step(self, rec: StepRecord) -> StepRecord:
        return msgspec.structs.replace(
            rec, args_json=msgspec.Raw(seal(self.codec, bytes(rec.args_json)))
        )

    def _open_step(self, rec: StepRecord) -> StepRecord:
        what = f"arguments of step {rec.step_id!r} of DAG {rec.dag_id!r}"
        plain = unseal(self.codec, bytes(rec.args_json), what)
        return msgspec.structs.replace(rec, args_json=msgspec.Raw(plain))

    def _open_result(self, dag_id: str, step_id: str, raw: bytes) -> bytes:
        return unseal(self.codec, raw, f"result of step {step_id!r} of DAG {dag_id!r}")

    def _seal_signal(self, rec: SignalRecord) -> SignalRecord:
        if rec.payload is None:
            return rec
        return msgspec.structs.replace(
            rec, payload=msgspec.Raw(seal(self.codec, bytes(rec.payload)))
        )

    def _open_signal(self, rec: SignalRecord) -> SignalRecord:
        if rec.payload is None:
            return rec
        what = f"payload of signal {rec.name!r} of DAG {rec.dag_id!r}"
        plain = unseal(self.codec, bytes(rec.payload), what)
        return msgspec.structs.replace(rec, payload=msgspec.Raw(plain))

    # -- StateStore ------------------------------------------------------------------------
    async def get_meta(self, dag_id: str) -> tuple[DAGMeta, int]:
        """Meta record and its revision (not sealed: it holds no arguments)."""
        return await self.inner.get_meta(dag_id)

    async def put_meta(self, dag_id: str, meta: DAGMeta, expected_rev: int) -> int:
        """CAS-write the meta record."""
        return await self.inner.put_meta(dag_id, meta, expected_rev)

    async def list_dags(self) -> list[DAGMeta]:
        """Every DAG's meta record."""
        return await self.inner.list_dags()

    async def get_step(self, dag_id: str, step_id: str) -> tuple[StepRecord, int]:
        """Step record (arguments opened) and its revision."""
        rec, rev = await self.inner.get_step(dag_id, step_id)
        return self._open_step(rec), rev

    async def put_step(self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int) -> int:
        """CAS-write a step record with its arguments sealed."""
        return await self.inner.put_step(dag_id, step_id, self._seal_step(rec), expected_rev)

    async def list_steps(self, dag_id: str) -> list[tuple[StepRecord, int]]:
        """All step records of one DAG (arguments opened)."""
        return [(self._open_step(r), rev) for r, rev in await self.inner.list_steps(dag_id)]

    async def get_result(self, dag_id: str, step_id: str, run_id: str = "") -> bytes:
        """A step's result of the DAG run ``run_id``, opened."""
        raw = await self.inner.get_result(dag_id, step_id, run_id)
        return self._open_result(dag_id, step_id, raw)

    async def read_dag(
        self,
        dag_id: str,
        step_ids: Sequence[str],
        result_ids: Sequence[str] = (),
        run_id: str = "",
    ) -> Snapshot:
        """The inner store's read, step arguments and results opened."""
        snap = await self.inner.read_dag(dag_id, step_ids, result_ids, run_id)
        return Snapshot(
            meta=snap.meta,
            steps={sid: (self._open_step(r), rev) for sid, (r, rev) in snap.steps.items()},
            results={sid: self._open_result(dag_id, sid, raw) for sid, raw in snap.results.items()},
        )

    async def put_result(self, dag_id: str, step_id: str, data: bytes, run_id: str = "") -> None:
        """Write a sealed result once; a stored result with the same plaintext is fine."""
        try:
            await self.inner.put_result(dag_id, step_id, seal(self.codec, data), run_id)
        except StaleRevision:
            if await self.get_result(dag_id, step_id, run_id) != bytes(data):
                raise

    async def watch_result(
        self, dag_id: str, step_id: str, run_id: str = ""
    ) -> AsyncIterator[bytes]:
        """Yield the opened result once it exists, then stop."""
        async for raw in self.inner.watch_result(dag_id, step_id, run_id):
            yield self._open_result(dag_id, step_id, raw)

    async def get_signal(self, dag_id: str, name: str) -> SignalRecord:
        """One delivered signal, payload opened."""
        return self._open_signal(await self.inner.get_signal(dag_id, name))

    async def put_signal(self, dag_id: str, rec: SignalRecord) -> None:
        """Create a signal record with its payload sealed."""
        await self.inner.put_signal(dag_id, self._seal_signal(rec))

    async def list_signals(self, dag_id: str) -> list[SignalRecord]:
        """All delivered signals of one DAG, payloads opened."""
        return [self._open_signal(s) for s in await self.inner.list_signals(dag_id)]

    async def delete_meta(self, dag_id: str) -> None:
        """Remove the meta record."""
        await self.inner.delete_meta(dag_id)

    async def delete_step(self, dag_id: str, step_id: str) -> None:
        """Remove a step record."""
        await self.inner.delete_step(dag_id, step_id)

    async def delete_result(self, dag_id: str, step_id: str, run_id: str = "") -> None:
        """Remove a result."""
        await self.inner.delete_result(dag_id, step_id, run_id)

    async def delete_signal(self, dag_id: str, name: str) -> None:
        """Remove a signal record."""
        await self.inner.delete_signal(dag_id, name)


def sealing_publisher(publish: PublishFn, codec: PayloadCodec) -> PublishFn:
    """Wrap a step publish so the envelope's resolved arguments leave sealed."""

    async def sealed(env: TaskEnvelope, *, msg_id: str) -> PubAck | None:
        payload = msgspec.Raw(seal(codec, bytes(env.payload)))
        return await publish(msgspec.structs.replace(env, payload=payload), msg_id=msg_id)

    return sealed
