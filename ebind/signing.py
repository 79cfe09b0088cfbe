"""HMAC-SHA256 signatures on task messages, for producers less trusted than workers.

An App built with ``signing_keys=[new, old, ...]`` signs every task message it publishes
with the first key and, when it runs workers, accepts a message only if its signature
matches one of the keys. The signature travels in the ``Ebind-Signature`` header as
``<key id>:<base64url MAC>``; the key id is a short digest of the key, so a verifier picks
the key at once instead of trying each one. The MAC covers the subject the task is
delivered on and the exact body bytes published, so a signed body replayed on another
task subject does not verify. The server keeps custom headers on the copies it fires for
countdown/eta tasks and periodic schedules (checked against nats-server 2.15.1), and those
copies are delivered on the very subject the producer signed (the schedule's target).

A signing App also keys the ``Nats-Msg-Id`` it publishes with (:meth:`Signer.dedupe_id`):
the stream drops a publish whose id it saw in the last minutes, before any worker checks a
signature, so with plain ids a producer without the key could publish a junk message under
a task id it expects (an invoice number) and have the genuine task dropped as its
duplicate. A keyed id is the same for every holder of the signing key, so a resend still
deduplicates, and nobody without the key can compute it.

Signing and checking are pure: :meth:`Signer.sign` builds the header value, :meth:`Signer.check`
returns None for a valid message or the :class:`~ebind.wire.TaskError` to dead-letter it
with (kind ``unsigned`` or ``bad_signature``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping

from ebind.errors import InvalidArguments
from ebind.wire import ErrorKind, TaskError

__all__ = [
    "ENV_SIGNING_KEYS",
    "HEADER_SIGNATURE",
    "MIN_KEY_BYTES",
    "Signer",
    "key_id",
    "keys_from_env",
    "normalize_keys",
]

HEADER_SIGNATURE = "Ebind-Signature"
ENV_SIGNING_KEYS = "EBIND_SIGNING_KEYS"
"""Comma-separated signing keys an App uses when none are passed (the CLI relies on it)."""
MIN_KEY_BYTES = 16
"""Shortest key accepted: a shorter secret can be guessed from one signed message offline."""

_SEP = b"\n"
_KEY_ID_LEN = 8
# A MAC is 32 bytes: 43 base64url characters without padding.
_MAC_CHARS = 43


def key_id(key: bytes) -> str:
    """A short, stable, non-secret name for ``key`` (8 base64url characters).

    Domain-separated from the MAC so the id reveals nothing usable about signatures.
    """
    digest = hashlib.sha256(b"ebind-signing-key-id\x00" + key).digest()
    return base64.urlsafe_b64encode(digest).decode()[:_KEY_ID_LEN]


def normalize_keys(keys: Iterable[bytes | str] | bytes | str) -> list[bytes]:
    """Keys as bytes (str is UTF-8 encoded), order kept; raises InvalidArguments when unusable."""
    if isinstance(keys, bytes | str):
        raise InvalidArguments(
            "signing_keys must be a list of keys (first signs, all verify), got a single "
            f"{type(keys).__name__}; wrap it: signing_keys=[key]",
            parameter="signing_keys",
        )
    out: list[bytes] = []
    for i, key in enumerate(keys):
        if isinstance(key, str):
            key = key.encode()
        if not isinstance(key, bytes):
            raise InvalidArguments(
                f"signing_keys[{i}] must be bytes or str, got {type(key).__name__}",
                parameter="signing_keys",
            )
        if len(key) < MIN_KEY_BYTES:
            raise InvalidArguments(
                f"signing_keys[{i}] is {len(key)} bytes; use at least {MIN_KEY_BYTES} random "
                "bytes (e.g. secrets.token_bytes(32))",
                parameter="signing_keys",
            )
        out.append(key)
    if not out:
        raise InvalidArguments(
            "signing_keys is empty; pass at least one key, or None to turn signing off",
            parameter="signing_keys",
        )
    ids = [key_id(k) for k in out]
    if len(set(ids)) != len(ids):
        raise InvalidArguments("signing_keys holds the same key twice", parameter="signing_keys")
    return out


def keys_from_env(environ: Mapping[str, str] | None = None) -> list[bytes] | None:
    """Keys from ``$EBIND_SIGNING_KEYS`` (comma-separated, first signs), or None when unset."""
    raw = (os.environ if environ is None else environ).get(ENV_SIGNING_KEYS, "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    return normalize_keys(keys) if keys else None


_DEDUPE_DOMAIN = b"ebind-msg-id\x00"
_DEDUPE_BYTES = 16  # 128 bits: 22 base64url characters


def _mac(key: bytes, subject: str, data: bytes) -> bytes:
    return hmac.digest(key, subject.encode() + _SEP + data, "sha256")


class Signer:
    """Signs with the first key and verifies with any of them (rotation by the list)."""

    __slots__ = ("_by_id", "_sign_id", "_sign_key", "key_ids")

    def __init__(self, keys: Iterable[bytes | str]) -> None:
        normalized = normalize_keys(keys)
        self._by_id = {key_id(k): k for k in normalized}
        self._sign_key = normalized[0]
        self._sign_id = key_id(self._sign_key)
        self.key_ids: tuple[str, ...] = tuple(self._by_id)
        """Ids of the keys, signing key first (safe to log)."""

    def __repr__(self) -> str:
        return f"<ebind.Signer keys={list(self.key_ids)}>"

    def sign(self, subject: str, data: bytes) -> str:
        """The ``Ebind-Signature`` header value for ``data`` delivered on ``subject``."""
        mac = base64.urlsafe_b64encode(_mac(self._sign_key, subject, data)).rstrip(b"=")
        return f"{self._sign_id}:{mac.decode()}"

    def dedupe_id(self, msg_id: str) -> str:
        """The ``Nats-Msg-Id`` to publish ``msg_id`` under: keyed, so it cannot be guessed."""
        mac = hmac.digest(self._sign_key, _DEDUPE_DOMAIN + msg_id.encode(), "sha256")
        return "s-" + base64.urlsafe_b64encode(mac[:_DEDUPE_BYTES]).rstrip(b"=").decode()

    def check(
        self, subject: str, data: bytes, headers: Mapping[str, str] | None
    ) -> TaskError | None:
        """None when ``data`` on ``subject`` carries a valid signature, else the error to use."""
        value = headers.get(HEADER_SIGNATURE) if headers else None
        if not value:
            return TaskError(
                kind=ErrorKind.UNSIGNED.value,
                message=(
                    f"message on {subject!r} carries no {HEADER_SIGNATURE} header; this worker "
                    "accepts only messages signed with its signing_keys"
                ),
            )
        kid, _, mac_text = value.partition(":")
        key = self._by_id.get(kid)
        if key is None:
            return _bad(subject, f"key id {kid[:16]!r} names none of this worker's keys")
        if len(mac_text) != _MAC_CHARS:
            return _bad(subject, "the MAC is malformed")
        try:
            mac = base64.urlsafe_b64decode(mac_text + "=")
        except ValueError:
            return _bad(subject, "the MAC is not base64url")
        if not hmac.compare_digest(mac, _mac(key, subject, data)):
            return _bad(subject, f"the MAC does not match key {kid}")
        return None


def _bad(subject: str, why: str) -> TaskError:
    return TaskError(
        kind=ErrorKind.BAD_SIGNATURE.value,
        message=f"message on {subject!r} has an invalid {HEADER_SIGNATURE}: {why}",
    )
