"""Fencing a plain task's outcome: one recorded outcome per run, whoever finishes last (pure).

A worker paused past ``ack_wait`` (SIGSTOP, a long GC or VM pause) loses its message to a
redelivery that another worker runs; when it resumes it still finishes its own run. Its
late result, dead letter or failure response must not become a second outcome beside the
one the takeover recorded. Responses are therefore stored with an expected last subject
sequence (0: the subject holds none), and a refused publish or a dead letter first looks
at the newest response on the task's subject: if it answers this run, the outcome is
already recorded and the late one is dropped.
"""

from __future__ import annotations

from ebind.wire import TaskEnvelope, TaskResponse, decode_response

__all__ = ["answers_run", "response_fence"]


def answers_run(resp: TaskResponse, env: TaskEnvelope) -> bool:
    """Whether ``resp`` records the outcome of the run ``env`` belongs to.

    A response echoing another ``reply_token`` answers another sender's task that reused
    this id and reply subject: the run's own response is stored over it. A DLQ requeue
    keeps the task id (and token), so a response completed before the envelope's
    ``enqueued_at`` belongs to an earlier run; without both times nothing tells the runs
    apart and the answer is "no" (run it, answer it).
    """
    if resp.task_id != env.id or resp.token != env.reply_token:
        return False  # another task's answer (a sender reusing this id and subject)
    if env.enqueued_at is None or resp.completed_at is None:
        return False
    return resp.completed_at >= env.enqueued_at


def response_fence(last: bytes | None, last_seq: int, env: TaskEnvelope) -> int | None:
    """The sequence to expect when storing this run's response; None if it is stored already.

    ``last`` is the newest message on the task's response subject (None: there is none) and
    ``last_seq`` its stream sequence. A message that is not a response (a removal marker,
    bytes that do not decode) is something to publish over, like an earlier run's answer.
    """
    if last is None:
        return 0
    try:
        resp = decode_response(last)
    except Exception:
        return last_seq
    return None if answers_run(resp, env) else last_seq
