"""Progress records and dead letters another tool wrote: a time without a zone or a deeply
nested body is treated as unreadable, never a traceback."""

from __future__ import annotations

import pytest
from cli_helpers import invoke, publish_raw

from ebind.embed import Node

pytestmark = pytest.mark.timeout(60)

DEEP = b"[" * 50_000 + b"]" * 50_000
ENTRY = b'"error":{"kind":"k","message":"m"},"final_attempt":1'


@pytest.mark.parametrize(
    ("task_id", "body"),
    [
        ("t-naive", b'{"task_id":"t-naive","fraction":0.5,"at":"2020-01-01T00:00:00"}'),
        ("t-deep", b'{"x":' + DEEP + b',"task_id":"t-deep","fraction":0.5,"at":"2020-01-01Z"}'),
    ],
)
def test_task_get_reads_a_bad_progress_record_as_none(
    nats_node: Node, task_id: str, body: bytes
) -> None:
    url = nats_node.client_url
    publish_raw(url, f"PROGRESS.c1.{task_id}", body)
    result = invoke(url, "task", "get", task_id)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "no progress reported" in result.output


@pytest.mark.parametrize(
    "body",
    [
        b"{" + ENTRY + b',"dead_lettered_at":"2020-01-01T00:00:00"}',
        b'{"zz":' + DEEP + b"," + ENTRY + b',"dead_lettered_at":"2020-01-01T00:00:00Z"}',
    ],
)
def test_dlq_ls_leaves_a_bad_entry_out(nats_node: Node, body: bytes) -> None:
    url = nats_node.client_url
    publish_raw(url, "DLQ.hostile", body)
    for args in (("dlq", "ls"), ("dlq", "ls", "--json")):
        result = invoke(url, *args)
        assert result.exit_code == 0, (args, result.output, repr(result.exception))
        assert "Traceback" not in result.output
