"""Payload codec, pure parts: sealing, opening, redaction, FernetCodec, the sealed store."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from cryptography.fernet import Fernet

from ebind.app import App
from ebind.contrib.fernet import FernetCodec, generate_key
from ebind.errors import InvalidArguments, StaleRevision
from ebind.payload import (
    PayloadUnreadable,
    check_codec,
    check_redactor,
    is_sealed,
    open_args,
    redact,
    seal,
    unseal,
)
from ebind.periodic import HEADER_TARGET, plan_schedule
from ebind.registry import Registry
from ebind.signature import inspect_handler
from ebind.signing import HEADER_SIGNATURE, Signer
from ebind.wire import TaskEnvelope
from ebind.workflow.sealed import SealedStore, sealing_publisher
from ebind.workflow.store_mem import MemStore
from ebind.workflow.types import SignalRecord, StepRecord, StepStatus

KEY = generate_key()
MARKER = b"zebra-7731"


class Reverse:
    """A toy codec: ASCII in, reversed ASCII out."""

    def encode(self, data: bytes) -> bytes:
        return data[::-1]

    def decode(self, token: bytes) -> bytes:
        return token[::-1]


class Binary:
    """A codec whose tokens are not text."""

    def encode(self, data: bytes) -> bytes:
        return b"\xff\x00" + data

    def decode(self, token: bytes) -> bytes:
        return token[2:]


def test_seal_is_a_json_string_without_the_plaintext() -> None:
    codec = FernetCodec([KEY])
    sealed = seal(codec, b'["' + MARKER + b'"]')
    assert is_sealed(sealed)
    assert MARKER not in sealed
    assert isinstance(msgspec.json.decode(sealed), str)
    assert unseal(codec, sealed, "x") == b'["' + MARKER + b'"]'


def test_tokens_needing_json_escapes_round_trip() -> None:
    sealed = seal(Reverse(), b'["a\\"b"]')
    assert unseal(Reverse(), sealed, "x") == b'["a\\"b"]'


def test_a_codec_returning_binary_is_refused() -> None:
    with pytest.raises(InvalidArguments, match="ASCII"):
        seal(Binary(), b"[]")


def test_plaintext_where_sealed_is_required_names_the_payload() -> None:
    with pytest.raises(PayloadUnreadable, match=r"arguments of task 'a\.b' arrived in plaintext"):
        unseal(FernetCodec([KEY]), b"[1]", "arguments of task 'a.b'")


def test_another_key_cannot_open_and_says_so() -> None:
    sealed = seal(FernetCodec([generate_key()]), b"[1]")
    with pytest.raises(PayloadUnreadable, match="another key") as info:
        unseal(FernetCodec([KEY]), sealed, "result of task t")
    assert "InvalidToken" in str(info.value)


def test_a_json_string_that_is_no_token_is_unreadable() -> None:
    with pytest.raises(PayloadUnreadable, match="could not be opened"):
        unseal(FernetCodec([KEY]), b'"hello"', "result")


def test_fernet_rotation_new_key_first_reads_old_tokens() -> None:
    old, new = generate_key(), generate_key()
    token = seal(FernetCodec([old]), b"[42]")
    assert unseal(FernetCodec([new, old]), token, "x") == b"[42]"
    with pytest.raises(PayloadUnreadable):
        unseal(FernetCodec([new]), token, "x")
    # The first key encrypts.
    fresh = seal(FernetCodec([new, old]), b"[1]")
    assert unseal(FernetCodec([new]), fresh, "x") == b"[1]"


@pytest.mark.parametrize(
    ("keys", "needle"),
    [(KEY, "list of keys"), ([], "at least one"), (["not-a-key"], "keys\\[0\\] is not a Fernet")],
    ids=["a bare key", "no keys", "a bad key"],  # a random key would make the id differ per run
)
def test_fernet_codec_refuses_bad_keys(keys: object, needle: str) -> None:
    with pytest.raises(InvalidArguments, match=needle):
        FernetCodec(keys)  # type: ignore[arg-type]


def test_fernet_codec_accepts_bytes_and_str_keys() -> None:
    raw = Fernet.generate_key()
    assert FernetCodec([raw]).decode(FernetCodec([raw.decode()]).encode(b"x")) == b"x"
    assert "keys=1" in repr(FernetCodec([raw]))


def test_open_args_without_codec() -> None:
    assert open_args(None, b"[1,2]", "args") == b"[1,2]"
    with pytest.raises(PayloadUnreadable, match="sealed with a payload codec, but this App"):
        open_args(None, seal(Reverse(), b"[1]"), "arguments of task 'x'")


def test_open_args_with_codec() -> None:
    assert open_args(Reverse(), seal(Reverse(), b"[1]"), "args") == b"[1]"
    with pytest.raises(PayloadUnreadable, match="plaintext"):
        open_args(Reverse(), b"[1]", "args")


def test_redact() -> None:
    assert redact(None, "pw=hunter2") == "pw=hunter2"
    assert redact(lambda s: s.replace("hunter2", "***"), "pw=hunter2") == "pw=***"


def test_a_failing_redactor_withholds_the_whole_text() -> None:
    def boom(text: str) -> str:
        raise RuntimeError(text)

    out = redact(boom, "pw=hunter2")
    assert "hunter2" not in out and "RuntimeError" in out
    assert "hunter2" not in redact(lambda s: None, "pw=hunter2")  # type: ignore[arg-type,return-value]


def test_settings_are_checked() -> None:
    assert check_codec(None) is None
    codec = Reverse()
    assert check_codec(codec) is codec
    with pytest.raises(InvalidArguments, match="payload_codec must have encode"):
        check_codec("fernet")
    assert check_redactor(None) is None
    assert check_redactor(str.upper) is str.upper
    with pytest.raises(InvalidArguments, match="redact_error must be a callable"):
        check_redactor("***")


def test_app_refuses_bad_trust_settings() -> None:
    with pytest.raises(InvalidArguments, match="signing_keys"):
        App(nats_url="nats://127.0.0.1:1", signing_keys=b"k" * 32)  # type: ignore[arg-type]
    with pytest.raises(InvalidArguments, match="payload_codec"):
        App(nats_url="nats://127.0.0.1:1", payload_codec=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArguments, match="redact_error"):
        App(nats_url="nats://127.0.0.1:1", redact_error="x")  # type: ignore[arg-type]
    app = App(nats_url="nats://127.0.0.1:1", signing_keys=["k" * 32], payload_codec=Reverse())
    assert app.signer is not None and app.payload_codec is not None


def _echo(value: str) -> str:
    return value


def test_plan_schedule_seals_and_signs_for_the_target_subject() -> None:
    registry = Registry()
    spec = inspect_handler(_echo, name="sched.echo")
    registry.register(spec)
    signer = Signer([b"s" * 32])
    codec = FernetCodec([KEY])
    plan = plan_schedule(
        registry, "nightly", "sched.echo", [MARKER.decode()], every=60, codec=codec, signer=signer
    )
    assert MARKER not in plan.data
    env = msgspec.json.decode(plan.data, type=TaskEnvelope)
    assert open_args(codec, bytes(env.payload), "x") == b'["' + MARKER + b'"]'
    assert signer.check(plan.headers[HEADER_TARGET], plan.data, plan.headers) is None
    plain = plan_schedule(registry, "nightly", "sched.echo", ["x"], every=60)
    assert HEADER_SIGNATURE not in plain.headers


def _record(args: bytes) -> StepRecord:
    return StepRecord(
        dag_id="d1",
        step_id="s1",
        fn_name="wf.echo",
        args_json=msgspec.Raw(args),
        status=StepStatus.PENDING,
        added_at=datetime.now(UTC),
    )


async def test_sealed_store_keeps_step_args_sealed_at_rest() -> None:
    inner = MemStore()
    store = SealedStore(inner, FernetCodec([KEY]))
    args = b'["' + MARKER + b'"]'
    rev = await store.put_step("d1", "s1", _record(args), 0)
    stored, _ = await inner.get_step("d1", "s1")
    assert MARKER not in bytes(stored.args_json) and is_sealed(bytes(stored.args_json))
    got, got_rev = await store.get_step("d1", "s1")
    assert bytes(got.args_json) == args and got_rev == rev
    listed = await store.list_steps("d1")
    assert [bytes(r.args_json) for r, _ in listed] == [args]


async def test_sealed_store_read_dag_opens_steps_and_results() -> None:
    inner = MemStore()
    store = SealedStore(inner, FernetCodec([KEY]))
    args = b'["' + MARKER + b'"]'
    rev = await store.put_step("d1", "s1", _record(args), 0)
    await store.put_result("d1", "s1", b'"' + MARKER + b'"')
    raw = await inner.read_dag("d1", ["s1"], ["s1"])
    assert MARKER not in bytes(raw.steps["s1"][0].args_json)
    snap = await store.read_dag("d1", ["s1", "s2"], ["s1", "s2"])
    assert bytes(snap.steps["s1"][0].args_json) == args and snap.steps["s1"][1] == rev
    assert snap.results == {"s1": b'"' + MARKER + b'"'} and snap.meta is None


async def test_sealed_store_results_create_once_by_plaintext() -> None:
    inner = MemStore()
    store = SealedStore(inner, FernetCodec([KEY]))
    await store.put_result("d1", "s1", b'"' + MARKER + b'"')
    assert MARKER not in await inner.get_result("d1", "s1")
    assert await store.get_result("d1", "s1") == b'"' + MARKER + b'"'
    # Tokens differ per call; the same plaintext again is accepted, another one is not.
    await store.put_result("d1", "s1", b'"' + MARKER + b'"')
    with pytest.raises(StaleRevision):
        await store.put_result("d1", "s1", b'"other"')
    async for raw in store.watch_result("d1", "s1"):
        assert raw == b'"' + MARKER + b'"'


async def test_sealed_store_signal_payloads() -> None:
    inner = MemStore()
    store = SealedStore(inner, FernetCodec([KEY]))
    await store.put_signal("d1", SignalRecord(dag_id="d1", name="ok", payload=msgspec.Raw(b"7")))
    await store.put_signal("d1", SignalRecord(dag_id="d1", name="empty"))
    raw = await inner.get_signal("d1", "ok")
    assert raw.payload is not None and is_sealed(bytes(raw.payload))
    assert bytes((await store.get_signal("d1", "ok")).payload or b"") == b"7"
    listed = {s.name: s.payload for s in await store.list_signals("d1")}
    assert listed["empty"] is None and bytes(listed["ok"] or b"") == b"7"


async def test_sealed_store_reads_plaintext_records_as_an_error() -> None:
    inner = MemStore()
    await inner.put_step("d1", "s1", _record(b"[1]"), 0)
    with pytest.raises(PayloadUnreadable, match="arguments of step 's1' of DAG 'd1'"):
        await SealedStore(inner, FernetCodec([KEY])).get_step("d1", "s1")


async def test_sealing_publisher_seals_resolved_arguments() -> None:
    sent: list[TaskEnvelope] = []

    async def publish(env: TaskEnvelope, *, msg_id: str) -> None:
        sent.append(env)

    codec = FernetCodec([KEY])
    env = TaskEnvelope(id="d1:s1", name="wf.echo", payload=msgspec.Raw(b'["' + MARKER + b'"]'))
    await sealing_publisher(publish, codec)(env, msg_id="d1:s1:1")
    assert MARKER not in bytes(sent[0].payload)
    assert unseal(codec, bytes(sent[0].payload), "x") == b'["' + MARKER + b'"]'


def test_codec_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from ebind.payload import ENV_FERNET_KEYS, codec_from_env

    assert codec_from_env({}) is None
    other = generate_key()
    codec = codec_from_env({ENV_FERNET_KEYS: f"{KEY}, {other}"})
    assert codec is not None
    assert unseal(FernetCodec([KEY]), seal(codec, b"[1]"), "x") == b"[1]"
    with pytest.raises(InvalidArguments, match="not a Fernet key"):
        codec_from_env({ENV_FERNET_KEYS: "nope"})
    monkeypatch.delenv(ENV_FERNET_KEYS, raising=False)
    assert App(nats_url="nats://127.0.0.1:1").payload_codec is None
    monkeypatch.setenv(ENV_FERNET_KEYS, KEY)
    assert isinstance(App(nats_url="nats://127.0.0.1:1").payload_codec, FernetCodec)
