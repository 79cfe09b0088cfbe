"""Subject/KV naming: ids, task names and targets are validated or encoded."""

from __future__ import annotations

import pytest

from ebind.errors import InvalidName
from ebind.streams import (
    b64_token,
    check_id,
    check_target,
    check_task_name,
    dlq_subject,
    resp_subject,
    target_durable,
    target_filter,
    task_subject,
    unb64_token,
)

ODD = [
    ("", "it is empty"),
    (" ", r"' ' \(U\+0020\)"),
    ("a.b", r"'\.' \(U\+002E\)"),
    ("*", r"'\*'"),
    (">", "'>'"),
    ("a/b", "'/'"),
    (".a", r"'\.'"),
    ("a.", r"'\.'"),
    ("$SYS", r"'\$'"),
    ("café", "'é'"),
    ("🚀", "U\\+1F680"),
    ("a\x00b", "U\\+0000"),
    ("\n", "U\\+000A"),
    ("x" * 10_240, "10240 characters long; the limit is 128"),
]


@pytest.mark.parametrize(("value", "match"), ODD, ids=[repr(v[:8]) for v, _ in ODD])
def test_odd_ids_are_rejected_naming_the_character(value: str, match: str) -> None:
    with pytest.raises(InvalidName, match=match):
        check_id(value, "step id")


@pytest.mark.parametrize("value", ["a", "A-b_9", "x" * 128, "0"])
def test_good_ids_pass(value: str) -> None:
    assert check_id(value) == value


def test_id_must_be_a_string() -> None:
    with pytest.raises(InvalidName, match="dag id must be a string, got int"):
        check_id(5, "dag id")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["a", "img.resize", "__main__.f", "mod.Class.method", "a-b.c_d"])
def test_good_task_names_pass(name: str) -> None:
    assert check_task_name(name) == name


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", "non-empty"),
        ("a b", "' '"),
        ("a..b", "empty part"),
        (".a", "empty part"),
        ("a.", "empty part"),
        ("a.*", r"'\*'"),
        ("a.>", "'>'"),
        ("$SYS.x", r"'\$'"),
        ("mod.f.<locals>.g", "'<'"),
        ("x" * 300, "300 characters long"),
        ("a\nb", "U\\+000A"),
    ],
)
def test_bad_task_names_are_rejected(name: str, match: str) -> None:
    with pytest.raises(InvalidName, match=match):
        check_task_name(name)


@pytest.mark.parametrize("target", ["gpu", "worker:w1", "a b", "café", "🚀", "a.b.*.>", "$SYS"])
def test_targets_are_encoded_as_one_safe_token(target: str) -> None:
    token = b64_token(target)
    assert unb64_token(token) == target
    assert all(c.isalnum() or c in "-_" for c in token)
    assert task_subject("t.x", target) == f"TASKS_TARGET.{token}.t.x"
    assert target_filter(target) == f"TASKS_TARGET.{token}.>"
    assert target_durable(target) == f"ebind-targets-{token}"


def test_seed_target_tokens() -> None:
    assert [b64_token(t) for t in ("primary", "worker:w1", "gpu")] == [
        "cHJpbWFyeQ",
        "d29ya2VyOncx",
        "Z3B1",
    ]


@pytest.mark.parametrize(
    ("target", "match"), [("", "non-empty"), ("   ", "non-empty"), ("x" * 3000, "3000 bytes")]
)
def test_bad_targets_are_rejected(target: str, match: str) -> None:
    with pytest.raises(InvalidName, match=match):
        check_target(target)


def test_subjects() -> None:
    assert task_subject("a.b") == "TASKS.a.b"
    assert resp_subject("c1", "t1") == "RESP.c1.t1"
    assert dlq_subject("a.b") == "DLQ.a.b"


class _FlakyJs:
    """A JetStream stand-in whose stream creation times out ``failures`` times first."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.creates = 0

    async def stream_info(self, name: str) -> object:
        from nats.js.errors import NotFoundError

        raise NotFoundError()

    async def add_stream(self, config: object) -> None:
        self.creates += 1
        if self.creates <= self.failures:
            raise TimeoutError("nats: timeout")


async def test_provisioning_rides_out_a_cluster_that_is_still_forming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ebind.streams as streams

    monkeypatch.setattr(streams, "_PROVISION_BACKOFF", (0.0, 0.0, 0.0, 0.0))
    want = streams._stream_configs(3)[0]
    js = _FlakyJs(failures=2)
    await streams._ensure_retrying(js, want, 0)
    assert js.creates == 3
    stuck = _FlakyJs(failures=100)
    with pytest.raises(TimeoutError):
        await streams._ensure_retrying(stuck, want, 0)
    assert stuck.creates == 5  # bounded: gives up with the last error
