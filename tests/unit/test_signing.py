"""Message signing, pure: header values, verification verdicts, key rules."""

from __future__ import annotations

import pytest

from ebind.errors import InvalidArguments
from ebind.signing import HEADER_SIGNATURE, MIN_KEY_BYTES, Signer, key_id, normalize_keys
from ebind.wire import ErrorKind

NEW = b"n" * 32
OLD = b"o" * 32
OTHER = b"x" * 32
SUBJECT = "TASKS.billing.charge"
BODY = b'{"id":"t1","name":"billing.charge","payload":[1,2]}'


def _headers(signer: Signer, subject: str = SUBJECT, body: bytes = BODY) -> dict[str, str]:
    return {HEADER_SIGNATURE: signer.sign(subject, body)}


def test_a_signed_message_verifies() -> None:
    s = Signer([NEW])
    assert s.check(SUBJECT, BODY, _headers(s)) is None


def test_header_value_is_key_id_and_unpadded_base64url_mac() -> None:
    value = Signer([NEW, OLD]).sign(SUBJECT, BODY)
    kid, _, mac = value.partition(":")
    assert kid == key_id(NEW)
    assert len(mac) == 43 and "=" not in mac and "+" not in mac and "/" not in mac


@pytest.mark.parametrize("headers", [None, {}, {HEADER_SIGNATURE: ""}, {"Nats-Msg-Id": "x"}])
def test_missing_signature_is_unsigned(headers: dict[str, str] | None) -> None:
    err = Signer([NEW]).check(SUBJECT, BODY, headers)
    assert err is not None and err.kind == ErrorKind.UNSIGNED.value
    assert HEADER_SIGNATURE in err.message and SUBJECT in err.message
    assert not err.retryable


def test_unknown_key_is_bad_signature_naming_the_key_id() -> None:
    err = Signer([NEW]).check(SUBJECT, BODY, _headers(Signer([OTHER])))
    assert err is not None and err.kind == ErrorKind.BAD_SIGNATURE.value
    assert key_id(OTHER) in err.message


def test_a_changed_body_is_bad_signature() -> None:
    s = Signer([NEW])
    err = s.check(SUBJECT, BODY.replace(b"[1,2]", b"[1,3]"), _headers(s))
    assert err is not None and err.kind == ErrorKind.BAD_SIGNATURE.value
    assert "does not match" in err.message


def test_a_signed_body_replayed_on_another_subject_is_bad_signature() -> None:
    s = Signer([NEW])
    err = s.check("TASKS.billing.refund", BODY, _headers(s))
    assert err is not None and err.kind == ErrorKind.BAD_SIGNATURE.value


@pytest.mark.parametrize(
    "mac",
    ["", "short", "A" * 42, "A" * 44, "!" * 43],
    ids=["empty", "short", "one-short", "one-long", "not-base64"],
)
def test_malformed_mac_is_bad_signature(mac: str) -> None:
    err = Signer([NEW]).check(SUBJECT, BODY, {HEADER_SIGNATURE: f"{key_id(NEW)}:{mac}"})
    assert err is not None and err.kind == ErrorKind.BAD_SIGNATURE.value


def test_header_without_separator_is_bad_signature() -> None:
    err = Signer([NEW]).check(SUBJECT, BODY, {HEADER_SIGNATURE: "garbage"})
    assert err is not None and err.kind == ErrorKind.BAD_SIGNATURE.value


def test_rotation_old_producer_new_worker() -> None:
    worker = Signer([NEW, OLD])
    assert worker.check(SUBJECT, BODY, _headers(Signer([OLD]))) is None
    assert worker.check(SUBJECT, BODY, _headers(Signer([NEW]))) is None
    # The worker signs with its first key only.
    assert worker.sign(SUBJECT, BODY) == Signer([NEW]).sign(SUBJECT, BODY)


def test_rotation_new_producer_old_worker_fails() -> None:
    err = Signer([OLD]).check(SUBJECT, BODY, _headers(Signer([NEW, OLD])))
    assert err is not None and err.kind == ErrorKind.BAD_SIGNATURE.value


def test_str_keys_are_utf8_and_equal_to_bytes_keys() -> None:
    assert Signer(["n" * 32]).sign(SUBJECT, BODY) == Signer([NEW]).sign(SUBJECT, BODY)


def test_key_id_is_short_stable_and_distinct() -> None:
    assert key_id(NEW) == key_id(NEW)
    assert len(key_id(NEW)) == 8
    assert key_id(NEW) != key_id(OLD)
    assert Signer([NEW, OLD]).key_ids == (key_id(NEW), key_id(OLD))
    assert NEW.decode() not in repr(Signer([NEW]))


@pytest.mark.parametrize(
    ("keys", "needle"),
    [
        (NEW, "single bytes"),
        ("n" * 32, "single str"),
        ([], "empty"),
        ([b"short"], f"at least {MIN_KEY_BYTES}"),
        ([NEW, 5], "must be bytes or str"),
        ([NEW, NEW], "same key twice"),
    ],
)
def test_unusable_keys_are_refused(keys: object, needle: str) -> None:
    with pytest.raises(InvalidArguments, match=needle) as info:
        normalize_keys(keys)  # type: ignore[arg-type]
    assert info.value.parameter == "signing_keys"


class _FakeNC:
    max_payload = 1 << 20


def test_publisher_signs_and_counts_the_signature_in_the_size_check() -> None:
    from ebind.client import Publisher, message_size
    from ebind.errors import PayloadTooLarge
    from ebind.wire import TaskEnvelope

    signer = Signer([NEW])
    pub = Publisher(_FakeNC(), None, timeout=1.0, signer=signer)
    env = TaskEnvelope(id="t1", name="billing.charge")
    subject, data, headers = pub._frame(env, "t1", None, None)
    assert signer.check(subject, data, headers) is None
    exact = message_size(subject, data, headers)
    tight = _FakeNC()
    tight.max_payload = exact
    Publisher(tight, None, timeout=1.0, signer=signer)._frame(env, "t1", None, None)
    tight.max_payload = exact - 1
    with pytest.raises(PayloadTooLarge):
        Publisher(tight, None, timeout=1.0, signer=signer)._frame(env, "t1", None, None)


def test_publisher_signs_delayed_tasks_for_their_target_subject() -> None:
    from ebind.client import Publisher
    from ebind.schedule import HEADER_SCHEDULE_TARGET
    from ebind.wire import TaskEnvelope

    signer = Signer([NEW])
    pub = Publisher(_FakeNC(), None, timeout=1.0, signer=signer)
    env = TaskEnvelope(id="t2", name="billing.charge")
    subject, data, headers = pub._frame(env, "t2", 5.0, None)
    assert subject == "TASKS_SCHEDULED.t2"
    assert signer.check(headers[HEADER_SCHEDULE_TARGET], data, headers) is None


def test_keys_from_env() -> None:
    from ebind.signing import ENV_SIGNING_KEYS, keys_from_env

    assert keys_from_env({}) is None
    assert keys_from_env({ENV_SIGNING_KEYS: " , "}) is None
    got = keys_from_env({ENV_SIGNING_KEYS: f" {NEW.decode()} ,{OLD.decode()}"})
    assert got == [NEW, OLD]
    with pytest.raises(InvalidArguments, match="at least 16"):
        keys_from_env({ENV_SIGNING_KEYS: "short"})


def test_app_reads_signing_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ebind.app import App
    from ebind.signing import ENV_SIGNING_KEYS

    monkeypatch.delenv(ENV_SIGNING_KEYS, raising=False)
    assert App(nats_url="nats://127.0.0.1:1").signer is None
    monkeypatch.setenv(ENV_SIGNING_KEYS, f"{OLD.decode()},{NEW.decode()}")
    signer = App(nats_url="nats://127.0.0.1:1").signer
    assert signer is not None and signer.key_ids == (key_id(OLD), key_id(NEW))
    explicit = App(nats_url="nats://127.0.0.1:1", signing_keys=[NEW]).signer
    assert explicit is not None and explicit.key_ids == (key_id(NEW),)
