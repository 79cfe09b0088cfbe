"""The frozen permission sets: their shape, their inputs' validation, the server config."""

from __future__ import annotations

import re

import pytest

from ebind.errors import InvalidArguments, InvalidName
from ebind.permissions import (
    EBIND_STREAMS,
    ROLES,
    Permissions,
    check_inbox_prefix,
    inbox_prefix_for,
    markdown,
    operator,
    permissions_for,
    producer,
    server_config,
    worker,
)


def _covered(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more trailing tokens."""
    want, have = pattern.split("."), subject.split(".")
    for i, tok in enumerate(want):
        if tok == ">":
            return len(have) > i
        if i >= len(have) or tok not in ("*", have[i]):
            return False
    return len(want) == len(have)


def _allows(subjects: tuple[str, ...], subject: str) -> bool:
    return any(_covered(p, subject) for p in subjects)


PRODUCER = producer(inbox_prefix="_INBOX_p", client_id="orders-api")
DAG_PRODUCER = producer(inbox_prefix="_INBOX_p", client_id="orders-api", dags=True)
WORKER = worker(inbox_prefix="_INBOX_w")
OPERATOR = operator(inbox_prefix="_INBOX_o")

# What no producer may do: administer streams, consume tasks, touch leases.
PRODUCER_DENIED_PUBLISH = [
    "$JS.API.STREAM.CREATE.EBIND_TASKS",
    "$JS.API.STREAM.UPDATE.EBIND_TASKS",
    "$JS.API.STREAM.DELETE.EBIND_TASKS",
    "$JS.API.STREAM.PURGE.EBIND_TASKS",
    "$JS.API.STREAM.PURGE.EBIND_DLQ",
    "$JS.API.CONSUMER.CREATE.EBIND_TASKS.ebind-worker.TASKS.>",
    "$JS.API.CONSUMER.MSG.NEXT.EBIND_TASKS.ebind-worker",
    "$JS.ACK.EBIND_TASKS.ebind-worker.1.1.1.1.0",
    "$KV.ebind-leases.scheduler",
    "$JS.API.DIRECT.GET.EBIND_RESP.RESP.someone-else.task-1",
    "TASKS_SCHEDULES.nightly",
    "RESP.someone-else.task-1",
    "DLQ.perm.add",
]


@pytest.mark.parametrize("perms", [PRODUCER, DAG_PRODUCER], ids=["plain", "dags"])
@pytest.mark.parametrize("subject", PRODUCER_DENIED_PUBLISH)
def test_no_producer_may_administer_consume_or_write_leases(
    perms: Permissions, subject: str
) -> None:
    assert not _allows(perms.publish, subject)


@pytest.mark.parametrize(
    "subject", ["_INBOX.>", "_INBOX.abc.1", "_INBOX_w.abc.1", "RESP.>", "RESP.other.t1", "TASKS.>"]
)
def test_a_producer_subscribes_only_to_its_own_inbox_and_results(subject: str) -> None:
    assert not _allows(PRODUCER.subscribe, subject)


def test_a_producer_publishes_tasks_and_reads_its_own_results() -> None:
    for subject in (
        "TASKS.perm.add",
        "TASKS_TARGET.Z3B1.perm.add",
        "TASKS_SCHEDULED.t1",
        "$JS.API.DIRECT.GET.EBIND_RESP.RESP.orders-api.t1",
        "$JS.API.DIRECT.GET.KV_ebind-dags.$KV.ebind-dags.d.result.s",
    ):
        assert _allows(PRODUCER.publish, subject), subject
    for subject in ("_INBOX_p.abc.1", "RESP.orders-api.t1", "$KV.ebind-dags.d.result.s"):
        assert _allows(PRODUCER.subscribe, subject), subject
    assert all(_allows(PRODUCER.publish, f"$JS.API.STREAM.INFO.{s}") for s in EBIND_STREAMS)


def test_only_a_dag_producer_writes_dag_records_and_countdown_can_be_withheld() -> None:
    assert not _allows(PRODUCER.publish, "$KV.ebind-dags.d.meta")
    assert _allows(DAG_PRODUCER.publish, "$KV.ebind-dags.d.meta")
    assert _allows(DAG_PRODUCER.publish, "DAG.d.signal.Z28")
    no_countdown = producer(inbox_prefix="_INBOX_p", client_id="c", countdown=False)
    assert not _allows(no_countdown.publish, "TASKS_SCHEDULED.t1")


@pytest.mark.parametrize(
    "subject",
    [
        "$JS.API.STREAM.CREATE.EBIND_TASKS",
        "$JS.API.STREAM.UPDATE.EBIND_RESP",
        "$JS.API.STREAM.DELETE.EBIND_TASKS",
        "$JS.API.STREAM.PURGE.EBIND_DLQ",
        "$JS.API.CONSUMER.DELETE.EBIND_TASKS.ebind-worker",
        "$JS.API.CONSUMER.CREATE.EBIND_RESP.spy.RESP.>",
        "TASKS_SCHEDULES.nightly",
        "$KV.other-bucket.key",
    ],
)
def test_a_worker_administers_no_stream(subject: str) -> None:
    assert not _allows(WORKER.publish, subject)


def test_a_worker_pulls_acks_and_writes_what_it_must() -> None:
    for subject in (
        "$JS.API.CONSUMER.CREATE.EBIND_TASKS.ebind-worker.TASKS.>",
        "$JS.API.CONSUMER.CREATE.EBIND_TASKS.ebind-targets-Z3B1.TASKS_TARGET.Z3B1.>",
        "$JS.API.CONSUMER.MSG.NEXT.EBIND_TASKS.ebind-worker",
        "$JS.API.CONSUMER.DURABLE.CREATE.EBIND_DAG_EVENTS.ebind-scheduler",
        "$JS.API.CONSUMER.MSG.NEXT.EBIND_DAG_EVENTS.ebind-scheduler",
        "$JS.ACK.EBIND_TASKS.ebind-worker.1.2.1.1.0",
        "RESP.c.t",
        "DLQ.perm.add",
        "DAG.d.completed.s",
        "$KV.ebind-dags.d.step.s",
        "$KV.ebind-leases.scheduler",
    ):
        assert _allows(WORKER.publish, subject), subject
    assert not _allows(WORKER.subscribe, "_INBOX.>")
    assert not _allows(WORKER.subscribe, "_INBOX_p.x")


def test_the_operator_has_the_whole_jetstream_api_and_every_ebind_subject() -> None:
    for subject in (
        "$JS.API.STREAM.PURGE.EBIND_DLQ",
        "$JS.API.STREAM.CREATE.EBIND_TASKS",
        "TASKS_SCHEDULES.nightly",
        "$KV.ebind-leases.scheduler",
    ):
        assert _allows(OPERATOR.publish, subject), subject
    assert _allows(OPERATOR.subscribe, "RESP.anyone.t1")
    assert not _allows(OPERATOR.subscribe, "_INBOX.>")


def test_every_set_uses_the_given_inbox_prefix_only() -> None:
    for perms, prefix in ((PRODUCER, "_INBOX_p"), (WORKER, "_INBOX_w"), (OPERATOR, "_INBOX_o")):
        inboxes = [s for s in perms.subscribe if s.startswith("_INBOX")]
        assert inboxes == [f"{prefix}.>"]


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("", "non-empty"),
        ("_INBOX", "shared by every user"),
        ("_INBOX.>", "no wildcards"),
        ("_INBOX_a.*", "no wildcards"),
        ("a b", "no wildcards, spaces"),
        ("a..b", "empty parts"),
    ],
)
def test_bad_inbox_prefixes_are_refused_with_the_reason(prefix: str, message: str) -> None:
    with pytest.raises(InvalidArguments, match=re.escape(message)):
        producer(inbox_prefix=prefix, client_id="c")


def test_inbox_prefix_helpers() -> None:
    assert inbox_prefix_for("alice") == "_INBOX_alice"
    assert check_inbox_prefix("_INBOX", shared_ok=True) == "_INBOX"
    assert check_inbox_prefix("_INBOX_alice.app") == "_INBOX_alice.app"
    with pytest.raises(InvalidName, match="user name"):
        inbox_prefix_for("al.ice")


def test_client_ids_are_checked_like_every_id() -> None:
    with pytest.raises(InvalidName, match="client_id"):
        producer(inbox_prefix="_INBOX_p", client_id="*")
    with pytest.raises(InvalidArguments, match="pass client_id="):
        permissions_for("producer", inbox_prefix="_INBOX_p")


def test_permissions_for_names_every_role_and_refuses_others() -> None:
    assert ROLES == ("producer", "worker", "operator")
    assert permissions_for("producer", inbox_prefix="_INBOX_p", client_id="orders-api") == PRODUCER
    assert permissions_for("worker", inbox_prefix="_INBOX_w") == WORKER
    assert permissions_for("operator", inbox_prefix="_INBOX_o") == OPERATOR
    with pytest.raises(InvalidArguments, match="unknown role 'admin'; use one of producer"):
        permissions_for("admin", inbox_prefix="_INBOX_a")


def test_server_config_quotes_every_name_and_subject() -> None:
    text = server_config({'a"b': ("p w", Permissions(publish=("$KV.x.>",), subscribe=("i.>",)))})
    assert text == (
        "authorization {\n  users = [\n"
        '    {user: "a\\"b", password: "p w", permissions: {publish: {allow: ["$KV.x.>"]}, '
        'subscribe: {allow: ["i.>"]}}}\n  ]\n}'
    )
    assert PRODUCER.to_dict()["subscribe"] == {"allow": list(PRODUCER.subscribe)}


def test_markdown_lists_every_subject_of_every_role() -> None:
    text = markdown()
    for perms in (PRODUCER, WORKER, OPERATOR):
        for subject in perms.publish + perms.subscribe:
            subject = subject.replace("_INBOX_p", "_INBOX_producer")
            subject = subject.replace("_INBOX_w", "_INBOX_worker")
            assert f"`{subject.replace('_INBOX_o', '_INBOX_operator')}`" in text
