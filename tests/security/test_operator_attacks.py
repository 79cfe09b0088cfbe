"""Operator surfaces against hostile records: dead-letter requeue and purge, CLI output,
schedule listing, retention bounds.

Dead letters and schedules are read back from streams others may write to. A requeue
publishes only what a worker would accept, never drops a dead letter whose task was not
queued, and one bad entry does not stop the rest; a purge deletes only what it counted;
terminal output carries no escape sequences from records. Real embedded nats-server.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "integration" / "cli"))

from worker_helpers import running

from ebind import App, Retention
from ebind.errors import EbindError, PublishFailed
from ebind.expirer import Expirer
from ebind.streams import DLQ_STREAM, TASKS_STREAM
from ebind.wire import DLQEntry, TaskEnvelope, TaskError, encoder

pytestmark = pytest.mark.timeout(90)

KEY = "review-signing-key-0123456789abcdef"


async def _only_letter(app: App) -> int:
    letters = await app.dlq.list()
    assert len(letters) == 1, letters
    return letters[0].seq


# ---------------------------------------------------------------------------------------
# An expired forgery is kept as raw bytes; a requeue cannot sign and re-route it.
# ---------------------------------------------------------------------------------------
async def test_expired_forged_envelope_is_not_requeued_signed_to_another_task(
    nats_url: str,
) -> None:
    """A producer without the signing key publishes, on a subject no worker serves, an
    unsigned envelope whose ``name`` is another task. The expirer applies a worker's checks
    (signature, subject matching name/target/queue) before keeping a decoded task, so the
    dead letter holds raw bytes only and ``dlq requeue`` refuses it: the operator's key
    never signs the forgery and the victim task never runs it."""
    ran: list[int] = []
    app = App(
        "review",
        nats_url=nats_url,
        retention=Retention(tasks=1),
        signing_keys=[KEY],
    )

    @app.task(name="rev.victim")
    async def victim(x: int) -> int:
        ran.append(x)
        return x

    async with app:
        # The attacker: a plain connection, no key; it may publish on TASKS.> like any
        # producer. Nobody serves "rev.nobody", so the message waits for the expirer.
        nc = await nats.connect(nats_url)
        try:
            forged = b'{"id":"evil-1","name":"rev.victim","payload":[666]}'
            await nc.jetstream().publish("TASKS.rev.nobody", forged)
        finally:
            await nc.close()
        await asyncio.sleep(1.3)
        assert await Expirer(app).sweep() == 1
        seq = await _only_letter(app)
        letter = await app.dlq.show(seq)
        # The envelope arrived on TASKS.rev.nobody but names rev.victim, and is unsigned:
        # kept as raw bytes (task=None), as a worker would have stored it.
        assert letter.task is None and "raw bytes only" in letter.entry.error.message
        async with running(app):
            try:
                await app.dlq.requeue(seq)
                requeued = True
            except EbindError:
                requeued = False
            await asyncio.sleep(1.5)
        assert not requeued and ran == [], (
            f"dead letter of an unsigned message on TASKS.rev.nobody (task={letter.task}) was "
            f"requeued to TASKS.rev.victim with the operator's signature and ran: {ran}"
        )


# ---------------------------------------------------------------------------------------
# A requeue the server deduplicated against another message keeps the dead letter.
# ---------------------------------------------------------------------------------------
async def test_requeue_swallowed_as_duplicate_keeps_the_dead_letter(nats_url: str) -> None:
    """A producer who stores a message under a requeue's ``Nats-Msg-Id`` first (the id and
    the DLQ sequence are readable to it) makes the server drop the operator's requeue as
    a duplicate. The requeue sees that the kept message is not its task: it raises
    PublishFailed and the dead letter stays, instead of reporting success with nothing
    queued and the record gone."""
    app = App("review", nats_url=nats_url)
    async with app:
        env = TaskEnvelope(id="t-victim", name="rev.lost", enqueued_at=datetime.now(UTC))
        entry = DLQEntry(
            error=TaskError(kind="error", message="boom", retryable=False),
            final_attempt=1,
            dead_lettered_at=datetime.now(UTC),
            task=env,
        )
        await app.js.publish("DLQ.rev.lost", encoder.encode(entry))
        seq = await _only_letter(app)
        # The attacker pre-claims the requeue's msg-id with a harmless body elsewhere.
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().publish(
                "TASKS.rev.decoy", b"{}", headers={"Nats-Msg-Id": f"t-victim:requeue:{seq}"}
            )
        finally:
            await nc.close()
        with pytest.raises(PublishFailed, match="dead letter is kept"):
            await app.dlq.requeue(seq)
        after = await app.js.stream_info(TASKS_STREAM, subjects_filter="TASKS.rev.lost")
        assert sum((after.state.subjects or {}).values()) == 0
        assert await app.dlq.count() == 1


async def test_a_repeated_requeue_of_the_same_entry_is_recognised(nats_url: str) -> None:
    """A requeue whose first publish landed but whose dead letter was not deleted (a crash
    in between) is retried under the same id: the server keeps the first copy, which is
    this task, so the retry deletes the dead letter and the task is queued once."""
    app = App("review", nats_url=nats_url)
    async with app:
        env = TaskEnvelope(id="t-again", name="rev.again", enqueued_at=datetime.now(UTC))
        entry = DLQEntry(
            error=TaskError(kind="error", message="boom", retryable=False),
            final_attempt=1,
            dead_lettered_at=datetime.now(UTC),
            task=env,
        )
        await app.js.publish("DLQ.rev.again", encoder.encode(entry))
        seq = await _only_letter(app)
        import ebind.dlq

        real_delete = ebind.dlq.delete_message
        calls = 0

        async def crash_once(*args: object, **kwargs: object) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("crashed before the delete")
            await real_delete(*args, **kwargs)  # type: ignore[arg-type]

        ebind.dlq.delete_message = crash_once  # type: ignore[assignment]
        try:
            with pytest.raises(OSError):
                await app.dlq.requeue(seq)
            assert await app.dlq.requeue(seq) == "t-again"
        finally:
            ebind.dlq.delete_message = real_delete
        after = await app.js.stream_info(TASKS_STREAM, subjects_filter="TASKS.rev.again")
        assert sum((after.state.subjects or {}).values()) == 1
        assert await app.dlq.count() == 0


# ---------------------------------------------------------------------------------------
# dlq purge deletes only the dead letters it counted.
# ---------------------------------------------------------------------------------------
async def test_dlq_purge_does_not_drop_letters_it_did_not_count(nats_url: str) -> None:
    """``DeadLetters.purge`` counts, then purges only up to the last sequence it counted: a
    dead letter a worker stores in between stays, and the count it returns (what ``ebind
    dlq purge`` prints) is what it deleted, so no record disappears uncounted."""
    app = App("review", nats_url=nats_url)
    entry = DLQEntry(
        error=TaskError(kind="error", message="boom", retryable=False),
        final_attempt=1,
        dead_lettered_at=datetime.now(UTC),
    )
    async with app:
        await app.js.publish("DLQ.rev.a", encoder.encode(entry))
        js = app.js
        real_info = js.stream_info

        async def info_then_a_worker_dead_letters(*args: object, **kwargs: object) -> object:
            info = await real_info(*args, **kwargs)
            if args and args[0] == DLQ_STREAM:
                # a worker's dead letter lands right after the count was read
                await real_info.__self__.publish("DLQ.rev.b", encoder.encode(entry))  # type: ignore[attr-defined]
            return info

        js.stream_info = info_then_a_worker_dead_letters  # type: ignore[method-assign]
        try:
            purged = await app.dlq.purge()
        finally:
            js.stream_info = real_info  # type: ignore[method-assign]
        remaining = await app.dlq.count()
        assert purged + remaining == 2, (
            f"purge reported {purged} removed, {remaining} remain: "
            f"{2 - purged - remaining} dead letter(s) vanished uncounted"
        )


# ---------------------------------------------------------------------------------------
# `ebind dlq show` prints record strings without their control characters.
# ---------------------------------------------------------------------------------------
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[1;1Hall clear\r"


def test_dlq_show_does_not_pass_escape_sequences_to_the_terminal(nats_node: object) -> None:
    """A handler's error message (often quoting producer-controlled arguments) or a forged
    dead letter's fields are printed by ``ebind dlq show`` with every control character
    shown as ``?``: no OSC / CSI sequence sets the terminal title, clears the screen or
    moves the cursor."""
    from cli_helpers import invoke, publish_raw

    url = nats_node.client_url  # type: ignore[attr-defined]
    entry = DLQEntry(
        error=TaskError(kind="error", message=HOSTILE, retryable=False),
        final_attempt=1,
        dead_lettered_at=datetime.now(UTC),
        task=TaskEnvelope(
            id="t1", name="rev.x", payload=msgspec.Raw(b'["' + b"\\u001b[2J" + b'"]')
        ),
    )
    publish_raw(url, "DLQ.rev.x", encoder.encode(entry))
    result = invoke(url, "dlq", "show", "1")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "\x1b]" not in result.output and "\x1b[2J" not in result.output, repr(result.output)


# ---------------------------------------------------------------------------------------
# Requeue checks the task as a worker would; one bad entry does not stop requeue --all.
# ---------------------------------------------------------------------------------------
def _letter(name: str, task_id: str) -> bytes:
    return encoder.encode(
        DLQEntry(
            error=TaskError(kind="error", message="boom", retryable=False),
            final_attempt=1,
            dead_lettered_at=datetime.now(UTC),
            task=TaskEnvelope(id=task_id, name=name),
        )
    )


@pytest.mark.parametrize("name", ["rev.*", "rev.>", "rev bad"])
async def test_requeue_refuses_an_envelope_that_fails_validation(nats_url: str, name: str) -> None:
    """``DeadLetters.requeue`` checks the task as a worker would before publishing: a dead
    letter whose task name is a wildcard (no worker's filter would take the literal
    subject) or has a space is refused with InvalidArguments naming the name, at once, and
    the dead letter is kept."""
    from ebind.errors import InvalidArguments

    async with App("review", nats_url=nats_url) as app:
        ack = await app.js.publish("DLQ.rev.x", _letter(name, "t1"))
        with pytest.raises(InvalidArguments, match="name"):
            await app.dlq.requeue(ack.seq)
        assert await app.dlq.count() == 1


async def test_one_bad_dead_letter_does_not_stop_requeue_all(nats_url: str) -> None:
    """``requeue_all`` (``ebind dlq requeue --all``) goes on past an entry whose task cannot
    be queued: that entry stays and is named in the report's ``failed``, the entries after
    it are requeued. A producer's expired junk is kept as raw bytes (``skipped``)."""
    async with App("review", nats_url=nats_url, retention=Retention(tasks=1)) as app:
        await app.js.publish("DLQ.rev.a", _letter("rev.a", "good-1"))
        nc = await nats.connect(nats_url)  # any producer
        try:
            await nc.jetstream().publish("TASKS.rev.nobody", b'{"id":"bad-1","name":"rev bad"}')
        finally:
            await nc.close()
        await asyncio.sleep(1.3)
        assert await Expirer(app).sweep() == 1
        bad = await app.js.publish("DLQ.rev.b", _letter("rev bad", "bad-2"))
        await app.js.publish("DLQ.rev.c", _letter("rev.c", "good-2"))
        report = await app.dlq.requeue_all()
        assert report.task_ids == ["good-1", "good-2"]
        assert [seq for seq, _ in report.failed] == [bad.seq]
        assert "no worker would accept" in report.failed[0][1]
        assert len(report.skipped) == 1  # the expired junk: raw bytes, nothing to requeue
        left = [letter.task.id for letter in await app.dlq.list() if letter.task]
        assert left == ["bad-2"]


# ---------------------------------------------------------------------------------------
# One hostile schedule record does not break `ebind schedule ls` / app.schedules().
# ---------------------------------------------------------------------------------------
async def test_a_deeply_nested_schedule_record_does_not_break_listing(nats_url: str) -> None:
    """A schedule record nested too deeply to decode is listed as ``?`` instead of raising
    RecursionError out of ``app.schedules()`` (and ``ebind schedule ls``), so every valid
    schedule is still listed."""
    from ebind.periodic import HEADER_SCHEDULE, HEADER_TARGET

    async with App("review", nats_url=nats_url) as app:
        await app.schedule("good", "rev.tick", [1], every=3600)
        deep = b'{"x":' + b"[" * 50_000 + b"]" * 50_000 + b',"id":"evil","name":"rev.tick"}'
        await app.js.publish(
            "TASKS_SCHEDULES.evil",
            deep,
            headers={
                HEADER_SCHEDULE: "@every 1h",
                HEADER_TARGET: "TASKS.rev.tick",
                "Nats-TTL": "never",
            },
        )
        try:
            names = [s.name for s in await app.schedules()]
        except RecursionError as exc:
            pytest.fail(f"app.schedules() raised {exc!r} on one record; 'good' is unlisted")
        assert "good" in names


# ---------------------------------------------------------------------------------------
# A retention the server cannot store is refused by name.
# ---------------------------------------------------------------------------------------
async def test_a_retention_beyond_the_server_limit_gets_a_clear_error(nats_url: str) -> None:
    """A stream's max age is a 64-bit count of nanoseconds (about 292 years): a retention
    beyond 100 years is refused up front, naming the field, instead of the server's
    unmarshal error when the streams are created."""
    from ebind.errors import InvalidArguments

    with pytest.raises(InvalidArguments, match=r"Retention\.tasks"):
        Retention(tasks=1e10)
    with pytest.raises(InvalidArguments, match=r"Retention\.results"):
        Retention.from_env({"EBIND_RETENTION_RESULTS": "200w" * 60})
    async with App("review", nats_url=nats_url, retention=Retention(tasks=3e9)):
        pass
