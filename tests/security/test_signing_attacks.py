"""Signing (signing_keys=) against a producer that may publish task subjects but holds no key.

An expired unsigned message is kept as raw bytes (never re-signed by a requeue, never
answered), and a keyed ``Nats-Msg-Id`` keeps such a producer from pre-empting a task id.
"""

from __future__ import annotations

import asyncio

import msgspec
import nats
import nats.js.errors
from worker_helpers import dlq_entries, running

from ebind import App, Retention
from ebind.expirer import Expirer
from ebind.wire import TaskEnvelope, encoder

KEY = b"K" * 32


async def test_expired_unsigned_message_is_not_signed_by_dlq_requeue(nats_url: str) -> None:
    """An unsigned forged task never comes out of the DLQ validly signed.

    The attacker publishes on ``TASKS.rev.nobody`` (a subject no worker consumes, so only
    the expirer ever reads it) a body naming the real task ``rev.pay``. The expirer checks
    the signature as a worker would: the dead letter is filed under the subject's name with
    the raw bytes only (``task=None``), so ``app.dlq.requeue_all()`` (``ebind dlq requeue``)
    skips it and no signing worker ever runs it.
    """
    app = App("rev", nats_url=nats_url, signing_keys=[KEY], retention=Retention(tasks=2))
    ran: list[str] = []

    @app.task(name="rev.pay")
    async def pay(to: str) -> str:
        ran.append(to)
        return to

    async with app:
        forged = TaskEnvelope(id="forged-1", name="rev.pay", payload=msgspec.Raw(b'["mallory"]'))
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().publish("TASKS.rev.nobody", encoder.encode(forged))
        finally:
            await nc.close()
        await asyncio.sleep(2.3)  # past the tasks horizon, nobody took it
        assert await Expirer(app).sweep() == 1
        assert await dlq_entries(app, "rev.pay") == []
        (entry,) = await dlq_entries(app, "rev.nobody")
        assert entry.error.kind == "expired" and entry.task is None
        assert "unsigned" in entry.error.message and entry.raw == encoder.encode(forged)
        # The operator requeues expired work after an outage, as the docs suggest.
        report = await app.dlq.requeue_all()
        async with running(app):
            await asyncio.sleep(2.0)
        assert (ran, report.task_ids) == ([], []), (
            f"an unsigned message was requeued {report.task_ids!r} (signed on the way) and "
            f"the signing worker ran it with {ran!r}"
        )


async def test_expirer_never_answers_an_unsigned_message(nats_url: str) -> None:
    """A signing deployment never answers the reply subject of an unauthenticated message.

    A rejected message gets no response, because its reply subject is unauthenticated: the
    expirer (run by every scheduler worker of a signing App) keeps that rule as the worker
    does, so a forgery naming a victim client's ``RESP.<client>.<id>`` gets no ``expired``
    answer there.
    """
    app = App("rev", nats_url=nats_url, signing_keys=[KEY], retention=Retention(tasks=2))

    async with app:
        reply = f"RESP.{app.client_id}.forged-2"
        forged = TaskEnvelope(id="forged-2", name="rev.pay", reply_to=reply, reply_token="ab" * 16)
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().publish("TASKS.rev.nobody", encoder.encode(forged))
        finally:
            await nc.close()
        await asyncio.sleep(2.3)
        assert await Expirer(app).sweep() == 1
        try:
            got = await app.js.get_last_msg("EBIND_RESP", reply)
        except nats.js.errors.NotFoundError:
            got = None
        assert got is None, f"the expirer answered an unsigned message: {bytes(got.data)!r}"


async def test_unsigned_message_cannot_preempt_a_signed_task_by_msg_id(nats_url: str) -> None:
    """An unsigned message cannot make the server drop a signed task as its duplicate.

    The stream dedupes on ``Nats-Msg-Id`` before any worker verifies anything. An attacker
    who knows a caller-chosen ``task_id`` (e.g. an invoice number) publishes an unsigned
    message with that msg-id first. A signing App publishes under a keyed msg-id the
    attacker cannot compute, so the genuine task is stored and runs; the worker
    dead-letters only the forgery.
    """
    app = App("rev", nats_url=nats_url, signing_keys=[KEY])
    ran: list[str] = []

    @app.task(name="rev.invoice")
    async def invoice(n: str) -> str:
        ran.append(n)
        return n

    async with app:
        junk = TaskEnvelope(id="invoice-42", name="rev.invoice", payload=msgspec.Raw(b'["x"]'))
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().publish(
                "TASKS.rev.invoice", encoder.encode(junk), headers={"Nats-Msg-Id": "invoice-42"}
            )
        finally:
            await nc.close()
        raised: Exception | None = None
        try:
            fut = await invoice.apply_async(["genuine"], task_id="invoice-42")
        except Exception as exc:  # a typed refusal here would be a fine outcome
            raised = exc
        async with running(app):
            if raised is None:
                try:
                    await fut.result(timeout=4)
                except Exception as exc:
                    raised = exc
        assert (ran, raised) == (["genuine"], None), (
            f"the signed task was dropped as a duplicate of an unsigned one "
            f"(ran={ran!r}, waiter got {type(raised).__name__}: {raised})"
        )
        (junk_letter,) = await dlq_entries(app, "rev.invoice")
        assert junk_letter.error.kind == "unsigned"
        assert b"Nats-Msg-Id: invoice-42" in junk_letter.raw_headers  # kept whole


def test_keyed_msg_ids_are_stable_per_key_and_unguessable_without_it() -> None:
    """The same id under the same key gives the same msg-id (a resend still deduplicates);
    another key or another id gives another, and the plain id never appears in it."""
    from ebind.signing import Signer

    a, b = Signer([KEY]), Signer([b"L" * 32, KEY])
    assert a.dedupe_id("invoice-42") == Signer([KEY, b"M" * 32]).dedupe_id("invoice-42")
    assert a.dedupe_id("invoice-42") != b.dedupe_id("invoice-42")
    assert a.dedupe_id("invoice-42") != a.dedupe_id("invoice-43")
    assert "invoice" not in a.dedupe_id("invoice-42") and len(a.dedupe_id("x")) == 24
