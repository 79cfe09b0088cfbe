"""Turn the server's asynchronous permission violations into a typed error at the call site.

A publish the user may not make is dropped by nats-server, which only sends the
connection an ``-ERR 'Permissions Violation for Publish to "<subject>"'``; a request to a
JetStream API subject the user may not use would then wait for a reply that never comes.
:func:`guarded` races such a request against that error, so the caller gets
:class:`ebind.errors.PermissionDenied` at once instead of a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable
from typing import Any, NamedTuple, TypeVar

from ebind.errors import PermissionDenied

__all__ = [
    "Denials",
    "Violation",
    "attach_denials",
    "covers",
    "denials_for",
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


class Denials:
    """Per-connection registry of requests waiting to learn whether their publish was denied."""

    def __init__(self) -> None:
        self._waiting: list[tuple[tuple[str, ...], asyncio.Future[Violation]]] = []

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
            subject = next((p for p in prefixes if p.lower() == seen), seen)
            raise PermissionDenied(
                f"permission denied: this NATS user may not {action} (the server refused a "
                f"publish to {subject!r}); use a user with the operator's permissions",
                subject=subject,
                action=action,
            )
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
