"""The producer's IO: the one task publish path and the one response subscription.

Publishing pipelines (awaiting each PubAck before the next publish caps a producer at one
round trip per task): every publish goes out as a core publish whose
reply subject is the App's PubAck inbox, and its PubAck future is awaited with a bound, so
concurrent ``delay()`` calls share round trips while no accepted task goes unconfirmed.
Results arrive on a single core subscription per App, ``RESP.<client_id>.>``; a
waiter that may have missed its message asks the EBIND_RESP stream with a direct get — no
consumer is ever created for a result (consumers are costly server state, and a consumer
per waiter would soon exhaust the stream's consumer limit).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ebind._denied import Violation, denial, denials_for
from ebind._jsreq import HEADER_EXPECTED_LAST_SUBJECT_SEQ, PubAck, decode_ack, requests_for
from ebind.direct import header_block, publish_nowait, subscribe_direct
from ebind.errors import PayloadTooLarge, PermissionDenied, PublishFailed, ResultExpired, StreamFull
from ebind.logging import get_logger
from ebind.payload import PayloadCodec
from ebind.schedule import MAX_SCHEDULE_AHEAD, resolve_at, schedule_headers, scheduled_subject
from ebind.signing import HEADER_SIGNATURE, Signer
from ebind.streams import RESP_STREAM, TASKS_STREAM, resp_subject, task_subject
from ebind.wire import TaskEnvelope, TaskResponse, decode_response, encoder

__all__ = [
    "HEADER_MARKER_REASON",
    "HEADER_MSG_ID",
    "Publisher",
    "ResponseRouter",
    "expired_message",
    "is_stream_full",
    "message_size",
]

log = get_logger("ebind.client")

HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_MARKER_REASON = "Nats-Marker-Reason"
"""Set on the marker the server leaves where it removed a subject's last message."""
# "NATS/1.0\r\n" + the blank line closing the header block.
_HEADER_FRAME = len(b"NATS/1.0\r\n") + 2
# The header block of an ordinary task publish, minus the id: "Nats-Msg-Id: <id>\r\n".
_MSG_ID_FRAME = len(HEADER_MSG_ID) + 4 + _HEADER_FRAME
# A signature header line past the first header: "Ebind-Signature: <value>\r\n".
_SIGNATURE_FRAME = len(HEADER_SIGNATURE) + 4


def message_size(subject: str, payload: bytes, headers: dict[str, str]) -> int:
    """Bytes the server counts against max_payload: headers block plus payload."""
    header_bytes = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    return len(payload) + (header_bytes + _HEADER_FRAME if headers else 0)


_EXPECT_EMPTY = header_block({HEADER_EXPECTED_LAST_SUBJECT_SEQ: "0"})

DEFAULT_WINDOW = 4000
"""PubAcks awaited at once per App before a publish waits for a free slot (nats-py's default)."""


class _PubAckTimeout(TimeoutError):
    """The PubAck did not arrive within the publish timeout."""


class Publisher:
    """Publishes task envelopes to EBIND_TASKS and checks every PubAck.

    The pipeline is ebind's own rather than ``js.publish_async``: each publish is a core
    publish with a reply subject under one wildcard inbox subscription, its PubAck future
    lives in a dict, and one timer per App (re-armed for the oldest publish) bounds every
    wait. ``publish_async(wait_stall=...)`` plus ``asyncio.wait_for`` cost two Tasks per
    enqueue; this costs one future and a dict entry.
    """

    def __init__(
        self,
        nc: Any,
        js: Any,
        *,
        timeout: float,
        window: int = DEFAULT_WINDOW,
        signer: Signer | None = None,
        max_ahead: timedelta = MAX_SCHEDULE_AHEAD,
    ) -> None:
        self._nc = nc
        self._signer = signer
        self._max_ahead = max_ahead
        self._js = js
        self._timeout = timeout
        self._window = window
        self._prefix = ""
        self._sub: Any = None
        self._ids = itertools.count(1)
        # token -> (PubAck future, monotonic deadline, subject); insertion order is deadline
        # order because every publish waits the same timeout, so the sweep stops at the
        # first live entry. The subject lets a permission violation fail the publish at once.
        self._acks: dict[str, tuple[asyncio.Future[PubAck], float, str]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._slots: collections.deque[asyncio.Future[None]] = collections.deque()
        # The loop the connection runs on, kept by start(): asyncio.get_running_loop() costs a
        # getpid system call on Python 3.11, and this path ran it on every publish.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Subscribe the PubAck inbox; call once after connecting."""
        self._loop = asyncio.get_running_loop()
        denials_for(self._nc).listen(self._denied)
        self._prefix = self._nc.new_inbox() + "."
        self._sub = await subscribe_direct(
            self._nc, self._prefix + "*", self._on_ack, pending_msgs_limit=1_000_000
        )

    def _frame(
        self,
        env: TaskEnvelope,
        msg_id: str,
        countdown: float | timedelta | None,
        eta: datetime | None,
    ) -> tuple[str, bytes, dict[str, str]]:
        data = encoder.encode(env)
        subject = task_subject(env.name, env.target, env.queue, env.priority)
        if self._signer is not None:
            msg_id = self._signer.dedupe_id(msg_id)
        headers = {HEADER_MSG_ID: msg_id}
        if self._signer is not None:
            # Signed for the subject the task is delivered on: a scheduled copy arrives on
            # its schedule target, which is this subject.
            headers[HEADER_SIGNATURE] = self._signer.sign(subject, data)
        if countdown is None and eta is None:
            # The common case: headers whose framing is known (message_size, unrolled).
            id_len = len(msg_id) if msg_id.isascii() else len(msg_id.encode())
            size = len(data) + _MSG_ID_FRAME + id_len
            if self._signer is not None:
                size += _SIGNATURE_FRAME + len(headers[HEADER_SIGNATURE])
        else:
            at = resolve_at(countdown, eta, datetime.now(UTC), self._max_ahead)
            if at is not None:
                headers.update(schedule_headers(at, subject))
                subject = scheduled_subject(env.id)
            size = message_size(subject, data, headers)
        limit = int(self._nc.max_payload)
        if size > limit:
            raise PayloadTooLarge(
                f"task {env.name!r} ({env.id}) encodes to {size} bytes with its headers; the "
                f"server accepts at most {limit} (max_payload). Pass large data by reference "
                "(a URL, an object-store key) or raise max_payload in the server config",
                size=size,
                limit=limit,
            )
        return subject, data, headers

    async def publish(
        self,
        env: TaskEnvelope,
        *,
        msg_id: str | None = None,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
    ) -> PubAck:
        """Publish ``env`` (scheduled when countdown/eta is set); returns the server's PubAck.

        A publish this NATS user may not make raises PermissionDenied at once.

        Safe to retry with the same envelope id: inside the 5-minute duplicate window
        the server drops the repeat (``Nats-Msg-Id``), which resolves an unknown outcome.
        """
        mid = msg_id or env.id
        subject, data, headers = self._frame(env, mid, countdown, eta)
        try:
            ack = await self._confirmed(subject, data, headers)
        except (asyncio.CancelledError, PermissionDenied):
            raise
        except Exception as exc:
            raise _task_failure(env, subject, exc, self._timeout) from exc
        return _checked(env, subject, mid, ack)

    async def publish_many(
        self,
        envs: list[TaskEnvelope],
        *,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        on_duplicate: Callable[[int], None] | None = None,
    ) -> list[tuple[int, Exception]]:
        """Publish every envelope before awaiting PubAcks; each PubAck is still checked.

        All are framed (size-checked) before the first goes out, so a PayloadTooLarge
        publishes nothing. Returns ``(index, error)`` of each publish that was not
        confirmed, in order (PublishFailed, StreamFull or PermissionDenied); the rest are
        stored. At most the window is unconfirmed at once: the oldest is settled first.
        ``on_duplicate(index)`` is called for each envelope the stream already held (its
        id was published before, within the duplicate window).
        """
        framed = [self._frame(env, env.id, countdown, eta) for env in envs]
        failures: list[tuple[int, Exception]] = []
        waiting: collections.deque[tuple[int, str, asyncio.Future[PubAck]]] = collections.deque()

        async def settle_oldest() -> None:
            # Taken off ``waiting`` only once settled: a cancel while its PubAck is awaited
            # leaves it there, for the cleanup to forget and name with the rest.
            i, token, fut = waiting[0]
            outcome: PubAck | Exception
            try:
                outcome = await fut
            except PermissionDenied as exc:
                outcome = exc
            except Exception as exc:
                outcome = _task_failure(envs[i], framed[i][0], exc, self._timeout)
            waiting.popleft()
            self._settled(token)
            if isinstance(outcome, Exception):
                failures.append((i, outcome))
                return
            ack = outcome
            try:
                _checked(envs[i], framed[i][0], envs[i].id, ack)
            except PublishFailed as exc:
                failures.append((i, exc))
                return
            if ack.duplicate and on_duplicate is not None:
                on_duplicate(i)

        try:
            for i, (subject, data, headers) in enumerate(framed):
                while waiting and len(self._acks) >= self._window:
                    await settle_oldest()  # our own oldest frees a slot; never wait on it
                try:
                    token, fut = await self._start(subject, data, headers)
                except PermissionDenied as exc:
                    failures.extend((j, exc) for j in range(i, len(envs)))
                    break
                except Exception as exc:
                    # Closed connection, or a window held by others that did not free in
                    # time: this and every later envelope are not published, each says so.
                    failures.extend(
                        (j, _task_failure(envs[j], framed[j][0], exc, self._timeout))
                        for j in range(i, len(envs))
                    )
                    break
                waiting.append((i, token, fut))
            while waiting:
                await settle_oldest()
        finally:
            self._abandon(envs, waiting)
        failures.sort(key=lambda f: f[0])
        return failures

    def _abandon(
        self,
        envs: list[TaskEnvelope],
        waiting: collections.deque[tuple[int, str, asyncio.Future[PubAck]]],
    ) -> None:
        """Forget the PubAcks a batch no longer awaits (it was cancelled), and say which."""
        if not waiting:
            return
        for _, token, _ in waiting:
            self._settled(token)
        _log_cancelled([envs[i].id for i, _, _ in waiting])

    async def publish_stored(
        self,
        subject: str,
        data: bytes,
        *,
        stream: str,
        expected_last_seq: int | None = None,
    ) -> None:
        """Publish ``data`` and wait until ``stream`` confirms storing it (else PublishFailed).

        With ``expected_last_seq`` the stream stores it only if the subject's newest message
        has that sequence (0: the subject holds none); otherwise SubjectMoved is raised.
        """
        headers = (
            None
            if expected_last_seq is None
            else {HEADER_EXPECTED_LAST_SUBJECT_SEQ: str(expected_last_seq)}
        )
        # A first response (nothing stored yet) is the common case: its block is built once.
        block = _EXPECT_EMPTY if expected_last_seq == 0 else b""
        try:
            ack = await self._confirmed(subject, data, headers, block)
        except (asyncio.CancelledError, PermissionDenied):
            raise
        except Exception as exc:
            if expected_last_seq is not None and _wrong_last_seq(exc):
                raise SubjectMoved(
                    f"{stream} refused the publish to {subject!r}: the subject's newest "
                    f"message is no longer sequence {expected_last_seq}",
                    subject=subject,
                ) from exc
            if is_stream_full(exc):
                raise StreamFull(
                    f"publish to {subject!r} was refused by {stream}: {_describe(exc)}; nothing "
                    "was stored (the stream's max_msgs/max_bytes bound with discard new is "
                    "reached)",
                    subject=subject,
                    stream=stream,
                ) from exc
            raise PublishFailed(
                f"publish to {subject!r} was not confirmed by {stream} within {self._timeout}s "
                f"({exc!r})",
                subject=subject,
            ) from exc
        if ack.stream != stream:
            raise PublishFailed(
                f"{subject!r} was stored in stream {ack.stream!r}, not {stream}",
                subject=subject,
            )

    async def _confirmed(
        self, subject: str, data: bytes, headers: dict[str, str] | None, block: bytes = b""
    ) -> PubAck:
        """One publish through the PubAck pipeline; raises on timeout or a server error.

        ``block``, when given, is ``headers`` already encoded.
        """
        # _start's steps inline: one coroutine fewer on every delay().
        if len(self._acks) >= self._window:
            await self._wait_slot()
        token, fut = self._register(subject)
        try:
            reply = self._prefix + token
            if not publish_nowait(self._nc, subject, data, reply, headers, block=block):
                await self._nc.publish(subject, data, reply=reply, headers=headers)
            return await fut
        finally:
            self._settled(token)

    async def _start(
        self, subject: str, data: bytes, headers: dict[str, str] | None
    ) -> tuple[str, asyncio.Future[PubAck]]:
        """Publish with a PubAck reply subject; the caller must pass the token to _settled."""
        if len(self._acks) >= self._window:
            await self._wait_slot()
        token, fut = self._register(subject)
        try:
            reply = self._prefix + token
            if not publish_nowait(self._nc, subject, data, reply, headers):
                await self._nc.publish(subject, data, reply=reply, headers=headers)
        except BaseException:
            self._settled(token)
            raise
        return token, fut

    def _register(self, subject: str) -> tuple[str, asyncio.Future[PubAck]]:
        """A PubAck wait bounded by the publish timeout, under a fresh reply token."""
        loop = self._loop or asyncio.get_running_loop()
        token = str(next(self._ids))
        fut: asyncio.Future[PubAck] = loop.create_future()
        deadline = loop.time() + self._timeout
        self._acks[token] = (fut, deadline, subject)
        if self._sweeper is None:
            self._sweeper = loop.call_at(deadline, self._sweep)
        return token, fut

    def _settled(self, token: str) -> None:
        """Forget a publish's PubAck wait and hand its window slot on."""
        del self._acks[token]
        if self._slots:
            _wake_one(self._slots)

    async def _wait_slot(self) -> None:
        # Rare: the window of unconfirmed publishes is full. Wait for a PubAck, bounded like
        # the PubAck itself (nats-py's wait_stall); a timer, not wait_for, so no Task.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while len(self._acks) >= self._window:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _PubAckTimeout(f"{len(self._acks)} publishes awaiting confirmation")
            slot: asyncio.Future[None] = loop.create_future()
            self._slots.append(slot)
            handle = loop.call_later(remaining, _resolve, slot)
            try:
                await slot
            finally:
                handle.cancel()

    def _sweep(self) -> None:
        """Fail every PubAck wait past its deadline; re-arm for the oldest one still live."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for fut, deadline, _ in self._acks.values():
            if deadline > now:
                self._sweeper = loop.call_at(deadline, self._sweep)
                return
            if not fut.done():
                fut.set_exception(_PubAckTimeout())

    def _denied(self, violation: Violation) -> bool:
        hit = False
        for fut, _, subject in self._acks.values():
            if not fut.done() and subject.lower() == violation.subject:
                fut.set_exception(denial(subject))
                hit = True
        return hit

    def _on_ack(self, msg: Any) -> None:
        entry = self._acks.get(msg.subject[len(self._prefix) :])
        if entry is None or entry[0].done():
            return  # a late PubAck for a publish that already timed out
        fut = entry[0]
        try:
            fut.set_result(decode_ack(msg))
        except Exception as exc:  # no responders, an undecodable reply, a server error
            fut.set_exception(exc)


def _task_failure(env: TaskEnvelope, subject: str, exc: Exception, timeout: float) -> PublishFailed:
    """The typed error of a task publish the server did not confirm."""
    if is_stream_full(exc):
        return StreamFull(
            f"task {env.name!r} ({env.id}) was refused by {TASKS_STREAM}: "
            f"{_describe(exc)}; nothing was stored (the stream's max_msgs/max_bytes "
            "bound with discard new is reached): retry once workers drain the "
            "backlog, or raise the bound",
            task_id=env.id,
            subject=subject,
            stream=TASKS_STREAM,
        )
    if _refused(exc):
        return PublishFailed(
            f"task {env.name!r} ({env.id}) was refused by the server: {_describe(exc)}; "
            "nothing was stored",
            task_id=env.id,
            subject=subject,
        )
    reason = "no confirmation" if isinstance(exc, TimeoutError) else repr(exc)
    return PublishFailed(
        f"publishing task {env.name!r} ({env.id}) was not confirmed within "
        f"{timeout}s ({reason}); it may or may not be stored: retry with the same "
        "task_id within 5 minutes and the server drops the duplicate",
        task_id=env.id,
        subject=subject,
        maybe_stored=True,
    )


_IDS_LOGGED = 50  # task ids a log line names; the rest are counted


def _log_cancelled(sent: list[str]) -> None:
    """A batch's caller that was cancelled gets no Futures, but what went out may run."""
    log.warning(
        "task.batch_cancelled",
        published_unconfirmed=len(sent),
        task_ids=sent[:_IDS_LOGGED],
        more=max(len(sent) - _IDS_LOGGED, 0),
        note="the batch's caller was cancelled: these tasks were published and may run "
        "(earlier ones in the batch were confirmed); look them up by id",
    )


def _refused(exc: Exception) -> bool:
    """Whether the server answered the publish with an error: a definite "not stored".

    A 400 (a bad request: an invalid schedule, a failed expectation) is the server's
    answer to this very publish; a timeout, a 503 (no stream leader) or a lost connection
    leaves the outcome unknown.
    """
    from nats.js.errors import APIError

    return isinstance(exc, APIError) and getattr(exc, "code", None) == 400


def _checked(env: TaskEnvelope, subject: str, msg_id: str, ack: PubAck) -> PubAck:
    """``ack`` if it confirms the task landed in EBIND_TASKS, else PublishFailed."""
    if ack.stream != TASKS_STREAM:
        raise PublishFailed(
            f"task {env.name!r} ({env.id}) was stored in stream {ack.stream!r}, not "
            f"{TASKS_STREAM}; another stream claims subject {subject!r}",
            task_id=env.id,
            subject=subject,
        )
    if ack.duplicate:
        log.info("task.duplicate", task_id=env.id, task_name=env.name, msg_id=msg_id, seq=ack.seq)
    return ack


class SubjectMoved(PublishFailed):
    """A conditional publish was refused: the subject's newest message is not the expected one."""


def _wrong_last_seq(exc: BaseException) -> bool:
    from nats.js.errors import KeyWrongLastSequenceError  # decode_ack's type for that refusal

    return isinstance(exc, KeyWrongLastSequenceError)


# JSStreamStoreFailedF: the server could not store the message; with a "maximum ..."
# description it is a max_msgs / max_bytes / per-subject bound under discard new.
_STORE_FAILED = 10077


def is_stream_full(exc: BaseException) -> bool:
    """Whether ``exc`` is the server refusing a publish because a stream bound is reached."""
    code = getattr(exc, "err_code", None)
    description = str(getattr(exc, "description", "") or "")
    return code == _STORE_FAILED and "maximum" in description.lower()


def expired_message(task_id: str, reason: str) -> str:
    """Why a task's stored response is gone, from the server's marker reason."""
    if reason == "MaxAge":
        why = "its response outlived the results retention (Retention.results) and was removed"
    else:
        why = f"its response was removed from {RESP_STREAM} ({reason})"
    return f"the result of task {task_id} can no longer be read: {why}"


def _describe(exc: BaseException) -> str:
    return str(getattr(exc, "description", "") or exc)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _wake_one(slots: collections.deque[asyncio.Future[None]]) -> None:
    while slots:
        slot = slots.popleft()
        if not slot.done():
            slot.set_result(None)
            return


class ResponseRouter:
    """The App's one subscription on ``RESP.<client_id>.>``, resolving waiters by task id."""

    def __init__(
        self, nc: Any, js: Any, client_id: str, *, codec: PayloadCodec | None = None
    ) -> None:
        self._nc = nc
        self._js = js
        self.client_id = client_id
        self.codec = codec
        """The App's payload codec: Futures open sealed results with it."""
        self._pending: dict[str, asyncio.Future[TaskResponse]] = {}
        # The reply tokens a waited-for id accepts, one per live Future of it (no entry: any
        # answer is taken): a response echoing another token answers someone else's task
        # that reused the id.
        self._tokens: dict[str, list[str]] = {}
        # Futures sharing one id's waiter, counted only while there are two or more, so
        # that dropping one of them leaves the waiter to the others.
        self._refs: dict[str, int] = {}
        self._sub: Any = None
        # Wake futures of result() calls currently waiting; missed() resolves them all. A set
        # (O(1) add/discard) instead of one shared epoch future, whose remove_done_callback
        # scanned every other waiter's callback (O(n²) with thousands of waiting results).
        self._sleepers: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        """The connection's loop, kept by start() (one getpid system call less per waiter)."""
        self.closed = False
        """Set by stop(): no response reaches this router's waiters any more."""

    async def start(self) -> None:
        """Subscribe; call once after connecting."""
        self._loop = asyncio.get_running_loop()
        self._sub = await subscribe_direct(
            self._nc, f"RESP.{self.client_id}.>", self._on_msg, pending_msgs_limit=1_000_000
        )

    async def stop(self) -> None:
        """Unsubscribe and wake every waiter: ``Future.result`` then raises NotConnected."""
        self.closed = True
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # closing anyway; nothing to recover
                log.debug("client.unsubscribe_failed", error=repr(exc))
        self.missed()

    def _on_msg(self, msg: Any) -> None:
        try:
            resp = decode_response(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("task.response_undecodable", subject=msg.subject, error=str(exc))
            return
        task_id = resp.task_id
        if msg.subject.rpartition(".")[2] != task_id:
            # Only the response subject of the task's own id may answer it.
            log.warning("task.response_mismatch", subject=msg.subject, task_id=task_id)
            return
        tokens = self._tokens
        if tokens:
            accepted = tokens.get(task_id)
            if accepted is not None:
                if resp.token not in accepted:
                    log.warning("task.response_foreign", subject=msg.subject, task_id=task_id)
                    return
                del tokens[task_id]
        if self._refs:
            self._refs.pop(task_id, None)
        waiter = self._pending.pop(task_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)

    def waiter(self, task_id: str, token: str = "") -> asyncio.Future[TaskResponse]:
        """The future resolved when ``task_id``'s response arrives (shared per task id).

        With ``token``, only a response echoing it resolves the future.
        """
        fut = self._pending.get(task_id)
        if fut is None:
            fut = (self._loop or asyncio.get_running_loop()).create_future()
            self._pending[task_id] = fut
            if token:
                self._tokens[task_id] = [token]
            return fut
        # Another Future of a waited-for id (a resend, a rebuilt Future): its token is
        # accepted too; one without a token takes any answer, and so does the shared waiter.
        self._refs[task_id] = self._refs.get(task_id, 1) + 1
        accepted = self._tokens.get(task_id)
        if accepted is not None:
            if token:
                accepted.append(token)
            else:
                del self._tokens[task_id]
        return fut

    def lenient(self, task_id: str) -> None:
        """Take any answer for ``task_id``: the stored task is another call's (a duplicate)."""
        self._tokens.pop(task_id, None)

    def forget(self, task_id: str, fut: asyncio.Future[TaskResponse], token: str = "") -> None:
        """A Future of ``task_id`` (with ``token``) that nobody holds any more lets go."""
        if self._pending.get(task_id) is not fut:
            return
        others = self._refs.get(task_id)
        if others:
            if others <= 2:
                del self._refs[task_id]
            else:
                self._refs[task_id] = others - 1
            accepted = self._tokens.get(task_id)
            if accepted is not None and token in accepted and len(accepted) > 1:
                accepted.remove(token)
            return
        del self._pending[task_id]
        self._tokens.pop(task_id, None)

    async def sleep(self, waiter: asyncio.Future[TaskResponse], within: float) -> None:
        """Return once ``waiter`` is done, :meth:`missed` is called, or ``within`` s pass."""
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()

        def on_done(_: object) -> None:
            if not wake.done():
                wake.set_result(None)

        waiter.add_done_callback(on_done)
        # A timer plus one future: asyncio.wait built a set, a callback per future and its
        # own timer on every call.
        handle = loop.call_later(within, on_done, None)
        self._sleepers.add(wake)
        try:
            await wake
        finally:
            handle.cancel()
            self._sleepers.discard(wake)
            waiter.remove_done_callback(on_done)

    def missed(self) -> None:
        """Wake every waiter so it checks the stream for a response it may have missed."""
        sleepers, self._sleepers = self._sleepers, set()
        for wake in sleepers:
            if not wake.done():
                wake.set_result(None)

    async def fetch(
        self, task_id: str, client_id: str | None = None, token: str = ""
    ) -> TaskResponse | None:
        """The stored response of ``task_id`` from EBIND_RESP (direct get), or None.

        With ``token``, a response echoing another token is not this task's (None).

        Raises:
            ResultExpired: the server left a removal marker where the response was.
            PermissionDenied: this NATS user may not read that client's responses.
        """
        subject = resp_subject(client_id or self.client_id, task_id)
        # ebind's own request path: a refused read fails at once instead of timing out
        raw = await requests_for(self._nc).get_last(RESP_STREAM, subject)
        if raw is None:
            return None
        reason = (raw.headers or {}).get(HEADER_MARKER_REASON)
        if reason:
            raise ResultExpired(expired_message(task_id, reason), task_id=task_id)
        if not raw.data:
            return None
        try:
            resp = decode_response(raw.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("task.response_undecodable", subject=subject, error=str(exc))
            return None
        if resp.task_id != task_id:
            # Not this task's answer (forged or misrouted): the waiter keeps waiting.
            log.warning("task.response_mismatch", subject=subject, task_id=resp.task_id)
            return None
        if token and resp.token != token:
            log.warning("task.response_foreign", subject=subject, task_id=task_id)
            return None
        return resp
