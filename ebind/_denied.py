"""Turn the server's asynchronous permission violations into a typed error at the call site.

A publish the user may not make is dropped by nats-server, which only sends the
connection an ``-ERR 'Permissions Violation for Publish to "<subject>"'``; a request to a
JetStream API subject the user may not use would then wait for a reply that never comes.
:func:`guarded` races such a request against that error, and request pipelines (PubAcks,
KV writes) register a listener that fails their own pending request on that subject, so
the caller gets :class:`ebind.errors.PermissionDenied` at once instead of a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from ebind.errors import PermissionDenied

__all__ = [
    "Denials",
    "Violation",
    "attach_denials",
    "covers",
    "denial",
    "denials_for",
    "describe",
    "guarded",
    "parse_violation",
]

T = TypeVar("T")

# nats-py lowercases the whole -ERR text before handing it on, subject included.
_VIOLATION_RE = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"')


class Violation(NamedTuple):
    """One permission violation the server reported: ``publish`` or ``subscription``."""

    operation: str
    subject: str
    handled: bool = False


def parse_violation(error: object) -> Violation | None:
    """The violation described by a connection error (its text), or None for any other error."""
    m = _VIOLATION_RE.search(str(error).lower())
    return None if m is None else Violation(m.group(1), m.group(2))


def covers(prefix: str, subject: str) -> bool:
    """Whether ``subject`` is ``prefix`` itself or lies under it (whole tokens, any case)."""
    p, s = prefix.lower(), subject.lower()
    return s == p or s.startswith(p + ".")


# (subject prefix, what a refused publish there means), most specific first; matched in
# lower case because that is how the server's report arrives.
_ACTIONS: tuple[tuple[str, str], ...] = (
    ("$js.api.stream.purge.", "purge stream {}"),
    ("$js.api.stream.delete.", "delete stream {}"),
    ("$js.api.stream.create.", "create stream {}"),
    ("$js.api.stream.update.", "update stream {}"),
    ("$js.api.stream.info.", "read the info of stream {}"),
    ("$js.api.stream.msg.get.", "read messages of stream {}"),
    ("$js.api.direct.get.", "read from stream {}"),
    ("$js.api.consumer.msg.next.", "pull from consumer {}"),
    ("$js.api.consumer.", "manage consumers of stream {}"),
    ("$js.ack.", "acknowledge messages of stream {}"),
    ("$kv.", "write to KV bucket {}"),
    ("tasks_scheduled.", "publish delayed tasks (countdown / eta)"),
    ("tasks_schedules.", "publish periodic schedules"),
    ("tasks.", "publish tasks"),
    ("tasks_target.", "publish targeted tasks"),
    ("resp.", "publish task responses"),
    ("dlq.", "publish dead letters"),
    ("dag.", "publish DAG events"),
)


def describe(subject: str) -> str:
    """What a refused publish to ``subject`` was for, in words (for the error message)."""
    low = subject.lower()
    for prefix, text in _ACTIONS:
        if low.startswith(prefix):
            rest = subject[len(prefix) :].split(".")
            if prefix == "$js.api.consumer.msg.next.":
                return text.format(".".join(rest[:2]))
            if prefix == "$js.api.consumer.":  # <op>.<stream>… or DURABLE.CREATE.<stream>…
                rest = rest[2:] if rest[0].lower() == "durable" else rest[1:]
            return text.format(rest[0] if rest else "?")
    return f"publish to {subject}"


def denial(subject: str, action: str | None = None) -> PermissionDenied:
    """The PermissionDenied for a publish to ``subject`` that the server refused."""
    what = action or describe(subject)
    return PermissionDenied(
        f"permission denied: this NATS user may not {what} (the server refused a publish to "
        f"{subject!r}); grant it in the user's NATS permissions or use a user that has it",
        subject=subject,
        action=what,
    )


Listener = Callable[[Violation], bool]
"""Called with each violation; returns True when it failed a request of its own."""


class Denials:
    """Per-connection registry of requests waiting to learn whether their publish was denied."""

    def __init__(self) -> None:
        self._waiting: list[tuple[tuple[str, ...], asyncio.Future[Violation]]] = []
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Also tell ``listener`` about every violation (a request pipeline's own check)."""
        self._listeners.append(listener)

    def notice(self, error: object) -> Violation | None:
        """Feed one connection error; the violation it reports, if it is one.

        Waiting requests the violation covers fail with PermissionDenied; ``handled`` on
        the result says whether any did (otherwise only a log line can tell).
        """
        violation = parse_violation(error)
        if violation is None:
            return None
        handled = False
        for prefixes, fut in self._waiting:
            if not fut.done() and any(covers(p, violation.subject) for p in prefixes):
                fut.set_result(violation)
                handled = True
        for listener in self._listeners:
            handled = listener(violation) or handled
        return violation._replace(handled=handled)

    async def guard(
        self, subjects: str | tuple[str, ...], awaitable: Awaitable[T], action: str
    ) -> T:
        """Await ``awaitable``, a request published on (or under) ``subjects``.

        Raises:
            PermissionDenied: the server refused that publish.
        """
        prefixes = (subjects,) if isinstance(subjects, str) else subjects
        denied: asyncio.Future[Violation] = asyncio.get_running_loop().create_future()
        entry = (prefixes, denied)
        self._waiting.append(entry)
        work = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait((work, denied), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            work.cancel()
            raise
        finally:
            self._waiting.remove(entry)
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            seen = denied.result().subject
            # the server's text arrives lowercased; name the subject as the caller spelled it
            raise denial(next((p for p in prefixes if p.lower() == seen), seen), action)
        return work.result()


_ATTR = "_ebind_denials"


def attach_denials(nc: Any, denials: Denials) -> None:
    """Make ``denials`` the registry :func:`denials_for` returns for connection ``nc``."""
    with contextlib.suppress(AttributeError):
        setattr(nc, _ATTR, denials)


def denials_for(nc: Any) -> Denials:
    """The registry of ``nc``; a connection nobody feeds errors to gets an idle one."""
    got: Denials | None = getattr(nc, _ATTR, None)
    return Denials() if got is None else got


async def guarded(
    js: Any, subjects: str | tuple[str, ...], awaitable: Awaitable[T], action: str
) -> T:
    """Await a JetStream request through ``js``'s connection registry (see :class:`Denials`)."""
    return await denials_for(getattr(js, "_nc", js)).guard(subjects, awaitable, action)
