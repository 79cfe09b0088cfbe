"""NatsStore: the StateStore over the JetStream KV bucket ``ebind-dags``.

Keys: ``<dag>.meta``, ``<dag>.step.<step>``, ``<dag>.result.<step>``,
``<dag>.signal.<b64url(name)>``. CAS is KV create (expected revision 0) / update
(expected revision = the KV revision); "wrong last sequence" becomes StaleRevision, and
every put returns the revision the server assigned, so nobody reads back their own write
(a direct get may be answered by a lagging replica). Per-DAG listings read only that
DAG's keys with a batched direct get (see ``_kvread``); ``list_dags`` reads only the
``*.meta`` keys. ``watch_result`` creates no consumer at all: a core subscription on the
result key plus direct gets, so any number of waiters costs the server nothing (a
consumer per wait would exhaust the stream's consumer limit).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Self, TypeVar

import msgspec
import nats.js.errors
from nats.js.api import KeyValueConfig

from ebind._jsreq import (
    HEADER_EXPECTED_LAST_SUBJECT_SEQ,
    Requests,
    expect_last_block,
    requests_for,
)
from ebind.errors import DAGNotFound, RecordCorrupt, SignalNotFound, StaleRevision, StepNotFound
from ebind.logging import get_logger
from ebind.streams import KV_DAGS
from ebind.workflow import _keys
from ebind.workflow._kvread import DirectReader, KVMessage, is_tombstone
from ebind.workflow._records import meta_for_key, step_for_key
from ebind.workflow._transient import is_transient
from ebind.workflow.snapshot import Snapshot, read_each
from ebind.workflow.types import DAGMeta, SignalRecord, StepRecord

__all__ = ["NatsStore"]

_log = get_logger("ebind.workflow.store")
_enc = msgspec.json.Encoder()

_T = TypeVar("_T")
_SEQ = "Nats-Sequence"
_SUBJECT = "Nats-Subject"
# Keys read by one batched direct get (the server refuses more than 1024 per request).
_BATCH_KEYS = 512
_TTL = "Nats-TTL"
_TOMBSTONE_TTL = "1s"

# How often a result waiter re-reads the key in case its subscription missed the write
# (reconnect, or a lagging replica answered the first read).
_WATCH_RECHECK = 5.0


class NatsStore:
    """JetStream-KV StateStore; construct synchronously, the bucket is bound on first use.

    Args:
        js: a nats-py JetStream context.
        bucket: KV bucket name.
        replicas: replicas used if this store has to create the bucket.
    """

    def __init__(self, js: Any, *, bucket: str = KV_DAGS, replicas: int = 1) -> None:
        self._js = js
        self._bucket = bucket
        self._stream = f"KV_{bucket}"
        self._pre = f"$KV.{bucket}."
        self._replicas = replicas
        self._kv: Any = None
        self._reader: DirectReader | None = None
        self._fast: Requests | None = None
        self._bind_lock = asyncio.Lock()

    @classmethod
    async def create(cls, js: Any, *, bucket: str = KV_DAGS, replicas: int = 1) -> Self:
        """Create-or-open the bucket and return a bound store."""
        store = cls(js, bucket=bucket, replicas=replicas)
        await store._bind()
        return store

    async def _bind(self) -> Any:
        if self._kv is not None:
            return self._kv
        async with self._bind_lock:
            if self._kv is None:
                try:
                    kv = await self._js.key_value(self._bucket)
                except nats.js.errors.BucketNotFoundError:
                    # Identical configs make a concurrent create by another process a no-op.
                    kv = await self._js.create_key_value(
                        KeyValueConfig(
                            bucket=self._bucket,
                            history=1,
                            replicas=self._replicas,
                            direct=True,
                        )
                    )
                    _log.info("kv.bucket_created", bucket=self._bucket, replicas=self._replicas)
                # nats-py records whether the bucket allows direct gets; multi_last needs it.
                direct = bool(kv._direct)
                self._reader = DirectReader(self._js, self._stream, direct=direct)
                # Direct gets and CAS publishes through ebind's lean request path; a
                # bucket without allow_direct keeps nats-py's KV calls.
                self._fast = requests_for(self._js._nc) if direct else None
                self._kv = kv
        return self._kv

    async def _reader_(self) -> DirectReader:
        await self._bind()
        assert self._reader is not None
        return self._reader

    async def close(self) -> None:
        """Release the listing subscription (the connection stays open)."""
        if self._reader is not None:
            await self._reader.close()

    # -- primitives --------------------------------------------------------------------

    async def _get(self, key: str) -> tuple[bytes, int] | None:
        """The live value and revision of ``key``; None if absent or deleted."""
        kv = await self._bind()
        if self._fast is None:
            try:
                entry = await kv.get(key, validate_keys=False)
            except nats.js.errors.KeyNotFoundError:
                return None
            return bytes(entry.value or b""), int(entry.revision)
        msg = await self._fast.get_last(self._stream, self._pre + key)
        if msg is None or is_tombstone(msg.headers):
            return None
        return bytes(msg.data), int(msg.headers[_SEQ])

    async def _cas(self, key: str, data: bytes, expected_rev: int, *, dag: str, step: str) -> int:
        kv = await self._bind()
        try:
            if self._fast is None:
                if expected_rev == 0:
                    return int(await kv.create(key, data, validate_keys=False))
                return int(await kv.update(key, data, last=expected_rev, validate_keys=False))
            return await self._fast_cas(key, data, expected_rev)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise StaleRevision(
                f"workflow: stale revision (expected {expected_rev}): {exc.description}",
                dag_id=dag,
                step_id=step,
            ) from exc

    async def _fast_cas(self, key: str, data: bytes, expected_rev: int) -> int:
        assert self._fast is not None
        subject = self._pre + key
        try:
            ack = await self._fast.publish(
                subject,
                data,
                {HEADER_EXPECTED_LAST_SUBJECT_SEQ: str(expected_rev)},
                block=expect_last_block(expected_rev),
            )
        except nats.js.errors.KeyWrongLastSequenceError:
            if expected_rev != 0:
                raise
            # Create over a deleted key: its tombstone is the last message, so the create
            # expects the tombstone's sequence (as nats-py's kv.create does).
            msg = await self._fast.get_last(self._stream, subject)
            if msg is None or not is_tombstone(msg.headers):
                raise
            last = msg.headers[_SEQ]
            ack = await self._fast.publish(subject, data, {HEADER_EXPECTED_LAST_SUBJECT_SEQ: last})
        return ack.seq

    async def _delete(self, key: str) -> None:
        kv = await self._bind()
        await kv.delete(key, validate_keys=False)

    async def _list(self, filter_key: str) -> list[KVMessage]:
        reader = await self._reader_()
        return await reader.last_per_subject(self._pre + filter_key)

    @staticmethod
    def _readable(
        msgs: list[KVMessage], read: Callable[[KVMessage], _T], kind: str
    ) -> list[tuple[_T, int]]:
        """``read(m)`` of every listed record; one that cannot be used is logged and left out.

        One corrupt record must not stop a listing (a sweep) over every other DAG or step.
        """
        out: list[tuple[_T, int]] = []
        for m in msgs:
            try:
                out.append((read(m), m.seq))
            except RecordCorrupt as exc:  # decoded or not, it names another key
                _log.warning("kv.record_unusable", subject=m.subject, error=str(exc))
            except Exception as exc:  # RecursionError from a deeply nested record too
                _log.warning("kv.record_undecodable", kind=kind, subject=m.subject, error=repr(exc))
        return out

    # -- meta --------------------------------------------------------------------------

    async def get_meta(self, dag_id: str) -> tuple[DAGMeta, int]:
        """Meta record and its revision."""
        key = _keys.meta_key(dag_id)
        got = await self._get(key)
        if got is None:
            raise DAGNotFound(dag_id=dag_id)
        return meta_for_key(got[0], dag_id, key), got[1]

    async def put_meta(self, dag_id: str, meta: DAGMeta, expected_rev: int) -> int:
        """CAS-write the meta record; returns the new revision."""
        key = _keys.meta_key(dag_id)
        return await self._cas(key, _enc.encode(meta), expected_rev, dag=dag_id, step="")

    async def list_dags(self) -> list[DAGMeta]:
        """Every DAG's meta record, sorted by DAG id (reads only ``*.meta`` keys)."""
        pre, tail = len(self._pre), -len(".meta")

        def read(m: KVMessage) -> DAGMeta:
            key = m.subject[pre:]
            return meta_for_key(m.data, key[:tail], key)

        metas = self._readable(await self._list("*.meta"), read, "meta")
        return sorted((m for m, _ in metas), key=lambda m: m.id)

    async def delete_meta(self, dag_id: str) -> None:
        """Remove the meta record (idempotent)."""
        await self._delete(_keys.meta_key(dag_id))

    # -- steps -------------------------------------------------------------------------

    async def get_step(self, dag_id: str, step_id: str) -> tuple[StepRecord, int]:
        """Step record and its revision."""
        key = _keys.step_key(dag_id, step_id)
        got = await self._get(key)
        if got is None:
            raise StepNotFound(dag_id=dag_id, step_id=step_id)
        return step_for_key(got[0], dag_id, step_id, key), got[1]

    async def put_step(self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int) -> int:
        """CAS-write a step record; returns the new revision."""
        key = _keys.step_key(dag_id, step_id)
        return await self._cas(key, _enc.encode(rec), expected_rev, dag=dag_id, step=step_id)

    async def list_steps(self, dag_id: str) -> list[tuple[StepRecord, int]]:
        """All step records of one DAG with their revisions, sorted by step id."""
        prefix = _keys.step_prefix(dag_id)
        pre = len(self._pre)
        cut = pre + len(prefix)

        def read(m: KVMessage) -> StepRecord:
            return step_for_key(m.data, dag_id, m.subject[cut:], m.subject[pre:])

        steps = self._readable(await self._list(prefix + ">"), read, "step")
        return sorted(steps, key=lambda pair: pair[0].step_id)

    async def delete_step(self, dag_id: str, step_id: str) -> None:
        """Remove a step record (idempotent)."""
        await self._delete(_keys.step_key(dag_id, step_id))

    # -- results -----------------------------------------------------------------------

    async def get_result(self, dag_id: str, step_id: str, run_id: str = "") -> bytes:
        """A step's result bytes (JSON), stored under the DAG run ``run_id``."""
        got = await self._get(_keys.result_key(dag_id, step_id, run_id))
        if got is None:
            raise StepNotFound(
                f"workflow: no result for step {step_id!r}", dag_id=dag_id, step_id=step_id
            )
        return got[0]

    async def read_dag(
        self,
        dag_id: str,
        step_ids: Sequence[str],
        result_ids: Sequence[str] = (),
        run_id: str = "",
    ) -> Snapshot:
        """The meta, some steps and some results in one batched direct get per 512 keys."""
        await self._bind()
        if self._fast is None:
            return await read_each(self, dag_id, step_ids, result_ids, run_id)
        meta_key = self._pre + _keys.meta_key(dag_id)
        steps = {self._pre + _keys.step_key(dag_id, s): s for s in step_ids}
        results = {self._pre + _keys.result_key(dag_id, s, run_id): s for s in result_ids}
        subjects = [meta_key, *steps, *results]
        fast = self._fast
        chunks = await asyncio.gather(
            *(
                fast.get_batch(self._stream, subjects[i : i + _BATCH_KEYS])
                for i in range(0, len(subjects), _BATCH_KEYS)
            )
        )
        snap = Snapshot()
        pre = len(self._pre)
        for msg in (m for chunk in chunks for m in chunk):
            headers = msg.headers
            if is_tombstone(headers):
                continue
            subject, rev = headers.get(_SUBJECT, ""), int(headers[_SEQ])
            # Decoded by the key's kind; a subject nobody asked for is ignored, and an
            # unusable record is left out as if absent (logged).
            try:
                if subject == meta_key:
                    snap.meta = (meta_for_key(msg.data, dag_id, subject[pre:]), rev)
                elif subject in steps:
                    sid = steps[subject]
                    snap.steps[sid] = (step_for_key(msg.data, dag_id, sid, subject[pre:]), rev)
                elif subject in results:
                    snap.results[results[subject]] = bytes(msg.data)
            except RecordCorrupt as exc:
                _log.warning("kv.record_unusable", subject=subject, error=str(exc))
        return snap

    async def put_result(self, dag_id: str, step_id: str, data: bytes, run_id: str = "") -> None:
        """Write a result once; identical bytes are fine, different ones raise StaleRevision."""
        key = _keys.result_key(dag_id, step_id, run_id)
        data = bytes(data)
        try:
            await self._cas(key, data, 0, dag=dag_id, step=step_id)
        except StaleRevision:
            got = await self._get(key)
            if got is not None and got[0] == data:
                return
            raise StaleRevision(
                "workflow: a different result is already stored", dag_id=dag_id, step_id=step_id
            ) from None

    async def watch_result(
        self, dag_id: str, step_id: str, run_id: str = ""
    ) -> AsyncIterator[bytes]:
        """Yield the result once it exists (immediately if it already does), then stop."""
        key = _keys.result_key(dag_id, step_id, run_id)
        await self._bind()
        nc = self._js._nc
        wake = asyncio.Event()

        async def on_msg(_msg: Any) -> None:
            wake.set()

        # Subscribe before the first read: a write landing between the two is then seen
        # either by the read or by the subscription.
        sub = await nc.subscribe(self._pre + key, cb=on_msg)
        try:
            data = await self._await_key(key, wake)
        finally:
            # Cleanup must never replace the exception in flight (a CancelledError above
            # all): once the connection is closed, unsubscribing raises and is moot.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        yield data

    async def _await_key(self, key: str, wake: asyncio.Event) -> bytes:
        """Read ``key`` until it exists, re-reading when ``wake`` fires or every few seconds."""
        delay = 0.0
        while True:
            try:
                got = await self._get(key)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # A leader election or reconnect: the key will be readable again soon.
                got = None
                wake.set()
            if got is not None:
                return got[0]
            try:
                # asyncio.timeout raises TimeoutError only for its own expiry; a cancel
                # from outside arriving meanwhile still propagates as CancelledError.
                async with asyncio.timeout(_WATCH_RECHECK):
                    await wake.wait()
            except TimeoutError:
                continue
            wake.clear()
            # The message may be a rejected write or reach us before a lagging replica
            # has it, so re-read shortly, backing off, until the stored value shows.
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, 0.05), 1.0)

    async def delete_result(self, dag_id: str, step_id: str, run_id: str = "") -> None:
        """Remove a result (idempotent)."""
        await self._delete(_keys.result_key(dag_id, step_id, run_id))

    # -- signals -----------------------------------------------------------------------

    async def get_signal(self, dag_id: str, name: str) -> SignalRecord:
        """One delivered signal."""
        got = await self._get(_keys.signal_key(dag_id, name))
        if got is None:
            raise SignalNotFound(f"workflow: signal {name!r} not found", dag_id=dag_id)
        return _keys.decode_signal(got[0])

    async def put_signal(self, dag_id: str, rec: SignalRecord) -> None:
        """Create a signal record; raises StaleRevision if one exists (first wins)."""
        key = _keys.signal_key(dag_id, rec.name)
        await self._cas(key, _enc.encode(rec), 0, dag=dag_id, step="")

    async def list_signals(self, dag_id: str) -> list[SignalRecord]:
        """All delivered signals of one DAG, sorted by name."""
        msgs = await self._list(_keys.signal_prefix(dag_id) + ">")
        signals = self._readable(msgs, lambda m: _keys.decode_signal(m.data), "signal")
        return sorted((s for s, _ in signals), key=lambda s: s.name)

    async def delete_signal(self, dag_id: str, name: str) -> None:
        """Remove a signal record (idempotent)."""
        await self._delete(_keys.signal_key(dag_id, name))

    # -- live index and history ----------------------------------------------------------

    async def put_live(self, dag_id: str, data: bytes) -> None:
        """Write the DAG's live-index entry (overwrites)."""
        await self._bind()
        await self._js.publish(self._pre + _keys.live_key(dag_id), data)

    async def delete_live(self, dag_id: str) -> None:
        """Remove the DAG's live-index entry; its tombstone expires after a second.

        A plain tombstone would stay forever, and listing the index would then cost
        every DAG ever finished: the index must cost what the live DAGs cost.
        """
        await self._delete_expiring(_keys.live_key(dag_id))

    async def list_live(self) -> list[tuple[str, bytes]]:
        """Every live-index entry as (DAG id, value), sorted by DAG id."""
        prefix = self._pre + _keys.live_prefix()
        msgs = await self._list(_keys.live_prefix() + "*")
        return sorted((m.subject[len(prefix) :], m.data) for m in msgs)

    async def delete_dag_keys(self, dag_id: str) -> int:
        """Delete every key of one DAG (a KV delete each, the meta last); returns how many.

        Each kind of key is listed on its own (a listing of more subjects than one batched
        read answers needs a consumer, which producers may not create), and the delete
        markers expire, so deleted DAGs cost later listings nothing.
        """
        pre = len(self._pre)
        keys: list[str] = []
        results = f"{_keys.check_dag(dag_id)}.result."
        for prefix in (_keys.step_prefix(dag_id), results, _keys.signal_prefix(dag_id)):
            keys += [m.subject[pre:] for m in await self._list(prefix + ">")]
        meta = _keys.meta_key(dag_id)
        if await self._get(meta) is not None:
            keys.append(meta)  # the meta last: a delete cut short is done again from it
        for key in keys:
            await self._delete_expiring(key)
        return len(keys)

    async def _delete_expiring(self, key: str) -> None:
        """Delete ``key`` with a delete marker that expires after a second.

        A plain marker would stay forever, and listings would then cost every key ever
        deleted. A bucket made without per-message TTLs refuses the header: a lasting
        marker is still better than a key that stays.
        """
        await self._bind()
        headers = {"KV-Operation": "DEL", _TTL: _TOMBSTONE_TTL}
        try:
            await self._js.publish(self._pre + key, b"", headers=headers)
        except nats.js.errors.APIError as exc:
            _log.warning("kv.delete_ttl_refused", bucket=self._bucket, error=exc.description)
            await self._delete(key)

    async def purge_dag(self, dag_id: str) -> None:
        """Remove every key of one DAG with one stream purge (no tombstones are left)."""
        await self._bind()
        await self._js.purge_stream(self._stream, subject=f"{self._pre}{_keys.check_dag(dag_id)}.>")
