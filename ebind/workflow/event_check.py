"""Untrusted scheduler events: decode and check one ``DAG.>`` message before it is used.

Anyone allowed to publish on ``DAG.>`` controls every byte of an event, so the shared
scheduler durable hands each message through :func:`admit_event` first; what fails goes
to the dead-letter queue with its raw bytes instead of circling forever.
"""

from __future__ import annotations

from ebind.validate import MAX_NESTING, id_problem, invalid, too_deep
from ebind.wire import TaskError
from ebind.workflow.events import unmarshal_event
from ebind.workflow.types import Event

__all__ = ["EVENTS_DLQ_NAME", "admit_event", "event_problem"]

EVENTS_DLQ_NAME = "_dag_event"
"""Dead letters of rejected scheduler events are stored on ``DLQ._dag_event``."""


def event_problem(event: Event, subject: str) -> str | None:
    """The first rule a scheduler event breaks (ids, DAG and kind of its subject), or None."""
    problem = id_problem(event.dag_id, "dag_id")
    if problem is None and event.step_id:
        problem = id_problem(event.step_id, "step_id")
    if problem is not None:
        return problem
    # The last token is the step id, a DAG id or a base64 signal name depending on the kind
    # (event_subject); the DAG and kind tokens are what consumers filter on, so they must agree.
    expected = f"DAG.{event.dag_id}.{event.kind.value}."
    if not subject.startswith(expected) or "." in subject[len(expected) :]:
        return (
            f"event arrived on {subject[:300]!r} but a {event.kind.value} event of DAG "
            f"{event.dag_id!r} belongs under {expected[:300]!r}"
        )
    return None


def admit_event(data: bytes, subject: str) -> Event | TaskError:
    """The scheduler event in ``data`` if it may be handled, else why not (kind ``invalid``)."""
    if too_deep(data):
        return invalid(f"DAG event nests JSON deeper than {MAX_NESTING} levels")
    try:
        event = unmarshal_event(data)
    except Exception as exc:  # any decode failure, RecursionError included
        return invalid(f"DAG event could not be decoded: {type(exc).__name__}: {exc}")
    problem = event_problem(event, subject)
    return invalid(problem) if problem is not None else event
