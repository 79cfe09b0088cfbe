"""Least-privilege NATS permission sets for ebind's three roles, frozen as data.

NATS authorizes each user with publish and subscribe allow/deny lists (deny wins).
JetStream is driven over ``$JS.API.…`` request subjects, acks go to ``$JS.ACK.…`` and a
KV write is a publish to ``$KV.<bucket>.<key>``, so these lists decide which streams,
consumers and buckets a user may touch. The sets below were derived by running each
role's flows against a server that reports every permission violation and adding only
what they needed; ``docs/security.md`` prints them from this module and a test runs ebind
under exactly these sets.

Roles:

- **producer**: publishes tasks and reads its own results and DAG state. It cannot
  create, delete or purge streams, consume tasks or write leases. ``dags=True`` adds
  DAG submission and signals, which need writes to the ``ebind-dags`` bucket.
- **worker**: pulls from its durables, acks, publishes responses, dead letters, DAG
  events and KV records. Streams are provisioned by the operator beforehand.
- **operator**: everything ebind uses, including stream provisioning and purges.

Each user gets its own inbox prefix (nats-py's ``inbox_prefix``) so one user cannot read
another's request replies through ``_INBOX.>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import cast

import msgspec

from ebind.errors import InvalidArguments
from ebind.progress import PROGRESS_STREAM
from ebind.streams import (
    DAG_EVENTS_STREAM,
    DLQ_STREAM,
    KV_DAGS,
    KV_LEASES,
    KV_RATELIMITS,
    RESP_STREAM,
    SCHEDULER_DURABLE,
    TASKS_STREAM,
    check_id,
)

__all__ = [
    "EBIND_STREAMS",
    "EXAMPLE_USERS",
    "ROLES",
    "Permissions",
    "check_inbox_prefix",
    "inbox_prefix_for",
    "markdown",
    "operator",
    "permissions_block",
    "permissions_for",
    "producer",
    "server_config",
    "worker",
]

ROLES = ("producer", "worker", "operator")
"""The role names :func:`permissions_for` accepts."""

_API = "$JS.API"
_KV_STREAMS = (f"KV_{KV_DAGS}", f"KV_{KV_LEASES}", f"KV_{KV_RATELIMITS}")
EBIND_STREAMS = (
    TASKS_STREAM,
    RESP_STREAM,
    DLQ_STREAM,
    DAG_EVENTS_STREAM,
    *_KV_STREAMS,
    PROGRESS_STREAM,
)
"""Every stream ebind provisions (KV buckets are the ``KV_`` streams)."""
# A subject token of an inbox prefix: no wildcards, no whitespace, not empty.
_PREFIX_TOKEN = re.compile(r"[A-Za-z0-9_$-]+")


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """The publish and subscribe allow lists of one NATS user (everything else is denied)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def to_dict(self) -> dict[str, dict[str, list[str]]]:
        """The ``permissions`` block of a nats-server user, as plain data."""
        return {
            "publish": {"allow": list(self.publish)},
            "subscribe": {"allow": list(self.subscribe)},
        }


def check_inbox_prefix(prefix: str, *, shared_ok: bool = False) -> str:
    """Return ``prefix`` if it can be a per-user inbox prefix, else raise InvalidArguments.

    It must be one or more dot-separated tokens without wildcards and, unless
    ``shared_ok``, must not be the shared default ``_INBOX``: a user allowed to subscribe
    to ``_INBOX.>`` reads every other user's replies.
    """
    if not isinstance(cast(object, prefix), str) or not prefix:
        raise InvalidArguments(f"inbox prefix must be a non-empty string, got {prefix!r}")
    for token in prefix.split("."):
        if not _PREFIX_TOKEN.fullmatch(token):
            raise InvalidArguments(
                f"invalid inbox prefix {prefix!r}: use dot-separated parts of letters, digits, "
                "'-', '_' and '$' (no wildcards, spaces or empty parts)",
                parameter="inbox_prefix",
            )
    if prefix == "_INBOX" and not shared_ok:
        raise InvalidArguments(
            "inbox prefix '_INBOX' is shared by every user; give each user its own, e.g. "
            "'_INBOX_<user>', so no user can read another's replies",
            parameter="inbox_prefix",
        )
    return prefix


def inbox_prefix_for(user: str) -> str:
    """The conventional inbox prefix of NATS user ``user``: ``_INBOX_<user>``."""
    return f"_INBOX_{check_id(user, 'user name')}"


def _stream_info() -> tuple[str, ...]:
    # Every client checks the streams exist when it connects; reading their config and
    # state reveals no message content.
    return tuple(f"{_API}.STREAM.INFO.{s}" for s in EBIND_STREAMS)


def _dag_reads() -> tuple[str, ...]:
    # Step results and DAG status are read with direct gets (one key, or a batch whose
    # subjects travel in the request body, hence the bare stream subject too).
    return (f"{_API}.DIRECT.GET.KV_{KV_DAGS}", f"{_API}.DIRECT.GET.KV_{KV_DAGS}.>")


def producer(
    *, inbox_prefix: str, client_id: str, dags: bool = False, countdown: bool = True
) -> Permissions:
    """What a producer needs: publish tasks, read its own results, read DAG state.

    Args:
        inbox_prefix: the user's own inbox prefix (pass the same to ``App(inbox_prefix=)``).
        client_id: the fixed client id of the producer's Apps (``App(client_id=)``); its
            results arrive on ``RESP.<client_id>.>`` and no other client's do.
        dags: also allow submitting DAGs and sending signals. That needs writes to the
            ``ebind-dags`` bucket, which also lets this user rewrite any DAG's records.
        countdown: allow ``countdown=`` / ``eta=`` (publishes to ``TASKS_SCHEDULED.>``).
    """
    inbox = check_inbox_prefix(inbox_prefix)
    cid = check_id(client_id, "client_id")
    publish = [
        "TASKS.>",
        "TASKS_TARGET.>",
        "TASKQ.>",  # tasks in a named queue or a priority band other than normal
        *(["TASKS_SCHEDULED.>"] if countdown else []),
        *_stream_info(),
        f"{_API}.DIRECT.GET.{RESP_STREAM}.RESP.{cid}.>",
        # the latest progress of its own tasks (fut.progress())
        f"{_API}.DIRECT.GET.{PROGRESS_STREAM}.PROGRESS.{cid}.>",
        *_dag_reads(),
        # app.revoke(): a revocation record in the leases bucket (only under revoked.)
        f"$KV.{KV_LEASES}.revoked.>",
    ]
    if dags:
        publish += [f"$KV.{KV_DAGS}.>", "DAG.>"]
    return Permissions(
        publish=tuple(publish),
        # A result waiter also listens for the record's write as it happens (the key ends
        # in the step id and, since DAG runs have ids, the run id).
        subscribe=(f"{inbox}.>", f"RESP.{cid}.>", f"$KV.{KV_DAGS}.*.result.>"),
    )


def worker(*, inbox_prefix: str) -> Permissions:
    """What a worker (with or without the DAG scheduler) needs; no stream administration."""
    inbox = check_inbox_prefix(inbox_prefix)
    consumers = (
        # its durables on EBIND_TASKS: one per lane (queue, band, task) and one
        # ebind-targets-<claim> per claim (consumer names are single tokens; nats-py puts
        # the filter subject after the name)
        f"{_API}.CONSUMER.CREATE.{TASKS_STREAM}.*.>",
        f"{_API}.CONSUMER.INFO.{TASKS_STREAM}.*",  # checked before re-creating a lost one
        f"{_API}.CONSUMER.MSG.NEXT.{TASKS_STREAM}.*",
        # the scheduler's durable on the DAG events
        f"{_API}.CONSUMER.DURABLE.CREATE.{DAG_EVENTS_STREAM}.{SCHEDULER_DURABLE}",
        f"{_API}.CONSUMER.MSG.NEXT.{DAG_EVENTS_STREAM}.{SCHEDULER_DURABLE}",
    )
    return Permissions(
        publish=(
            *_stream_info(),
            *consumers,
            f"$JS.ACK.{TASKS_STREAM}.>",
            f"$JS.ACK.{DAG_EVENTS_STREAM}.>",
            "TASKS.>",
            "TASKS_TARGET.>",  # the scheduler dispatches placed steps to their target
            "TASKS_SCHEDULED.>",  # a limited task waiting for its turn comes back as a delayed copy
            "TASKQ.>",  # and steps of tasks in a named queue or band
            "RESP.>",
            "DLQ.>",
            "DAG.>",
            f"$KV.{KV_DAGS}.>",
            f"$KV.{KV_LEASES}.>",
            "PROGRESS.>",  # handlers' progress reports
            # a redelivered task whose response is already stored is not run again
            f"{_API}.DIRECT.GET.{RESP_STREAM}.>",
            *_dag_reads(),
            # the scheduler lease and worker liveness records held by other workers; the
            # bare subject is the batched read that lists revoked task ids at start
            f"{_API}.DIRECT.GET.KV_{KV_LEASES}",
            f"{_API}.DIRECT.GET.KV_{KV_LEASES}.>",
            # rate limits: token blocks leased from the shared record (read, then CAS)
            f"$KV.{KV_RATELIMITS}.>",
            f"{_API}.DIRECT.GET.KV_{KV_RATELIMITS}.>",
            # past 1024 revoked ids the listing reads through a short-lived consumer
            f"{_API}.CONSUMER.CREATE.KV_{KV_LEASES}",
            f"{_API}.CONSUMER.INFO.KV_{KV_LEASES}.*",
            f"{_API}.CONSUMER.MSG.NEXT.KV_{KV_LEASES}.*",
            f"{_API}.CONSUMER.DELETE.KV_{KV_LEASES}.*",
            # a message out of deliveries is read by sequence, dead-lettered and removed;
            # the expirer does the same with tasks past their horizon
            f"{_API}.STREAM.MSG.GET.{TASKS_STREAM}",
            f"{_API}.STREAM.MSG.DELETE.{TASKS_STREAM}",
            f"{_API}.STREAM.MSG.GET.{DAG_EVENTS_STREAM}",
            f"{_API}.STREAM.MSG.DELETE.{DAG_EVENTS_STREAM}",
            # the scheduler leader removes finished DAGs past their history retention
            f"{_API}.STREAM.PURGE.KV_{KV_DAGS}",
        ),
        # Workers produce every result, so they may read them all (a handler's own
        # enqueue waits on RESP.<its App's random client id>); the scheduler watches its
        # lease.
        subscribe=(
            f"{inbox}.>",
            "RESP.>",
            f"$KV.{KV_LEASES}.>",
            # the server's notice that a message ran out of deliveries (becomes a dead letter)
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{TASKS_STREAM}.*",
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{DAG_EVENTS_STREAM}.*",
        ),
    )


def operator(*, inbox_prefix: str) -> Permissions:
    """Everything ebind uses: the JetStream API, every ebind subject, every result."""
    inbox = check_inbox_prefix(inbox_prefix)
    return Permissions(
        publish=(
            f"{_API}.>",
            "$JS.ACK.>",
            "TASKS.>",
            "TASKS_TARGET.>",
            "TASKQ.>",
            "TASKS_SCHEDULED.>",
            "TASKS_SCHEDULES.>",
            "RESP.>",
            "DLQ.>",
            "DAG.>",
            f"$KV.{KV_DAGS}.>",
            f"$KV.{KV_LEASES}.>",
            f"$KV.{KV_RATELIMITS}.>",
            "PROGRESS.>",
        ),
        subscribe=(f"{inbox}.>", "RESP.>"),
    )


def permissions_for(
    role: str, *, inbox_prefix: str, client_id: str = "", dags: bool = False
) -> Permissions:
    """The permission set of ``role`` (one of :data:`ROLES`)."""
    if role == "producer":
        if not client_id:
            raise InvalidArguments(
                "a producer's permissions name its results subject: pass client_id= "
                "(and the same App(client_id=))",
                parameter="client_id",
            )
        return producer(inbox_prefix=inbox_prefix, client_id=client_id, dags=dags)
    if role == "worker":
        return worker(inbox_prefix=inbox_prefix)
    if role == "operator":
        return operator(inbox_prefix=inbox_prefix)
    raise InvalidArguments(f"unknown role {role!r}; use one of {', '.join(ROLES)}")


def _quote(value: str) -> str:
    return msgspec.json.encode(value).decode()


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(_quote(i) for i in items) + "]"


def permissions_block(perms: Permissions) -> str:
    """The ``permissions: {...}`` entry of one nats-server user, on one line."""
    return (
        f"permissions: {{publish: {{allow: {_list(perms.publish)}}}, "
        f"subscribe: {{allow: {_list(perms.subscribe)}}}}}"
    )


def server_config(users: Mapping[str, tuple[str, Permissions]]) -> str:
    """An ``authorization`` block for nats-server: user name -> (password, permissions)."""
    lines = ["authorization {", "  users = ["]
    for name, (password, perms) in users.items():
        lines.append(
            f"    {{user: {_quote(name)}, password: {_quote(password)}, "
            f"{permissions_block(perms)}}}"
        )
    lines += ["  ]", "}"]
    return "\n".join(lines)


EXAMPLE_USERS = {"producer": "orders-api", "worker": "", "operator": ""}
"""The users the documented sets are printed for (role -> client id of the producer)."""


def markdown() -> str:
    """The permission sets of the three roles as Markdown, for ``docs/security.md``."""
    out: list[str] = []
    for role, client_id in EXAMPLE_USERS.items():
        prefix = inbox_prefix_for(role)
        variants = [("", permissions_for(role, inbox_prefix=prefix, client_id=client_id))]
        if role == "producer":
            dag = permissions_for(role, inbox_prefix=prefix, client_id=client_id, dags=True)
            variants.append((" with `dags=True`", dag))
        for suffix, perms in variants:
            out.append(f"#### {role}{suffix} (user `{role}`, inbox prefix `{prefix}`)\n")
            out.append("| publish allow | subscribe allow |")
            out.append("|---|---|")
            rows = max(len(perms.publish), len(perms.subscribe))
            for i in range(rows):
                pub = f"`{perms.publish[i]}`" if i < len(perms.publish) else ""
                sub = f"`{perms.subscribe[i]}`" if i < len(perms.subscribe) else ""
                out.append(f"| {pub} | {sub} |")
            out.append("")
    return "\n".join(out)
