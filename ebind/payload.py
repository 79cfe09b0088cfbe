"""Payload protection at rest: a codec that encrypts task arguments and results end to end.

An App built with ``payload_codec=...`` seals the JSON argument array of every task it
enqueues into the codec's token, carried as a JSON string in the envelope's ``payload``
(the envelope stays valid JSON, and a plain argument list is always a JSON array, so the
two forms never mix up). Workers holding the same codec unseal before decoding arguments
and seal results before they leave the process: the response stream, the DLQ (which keeps
the envelope as received) and the workflow KV bucket (step arguments, results and signal
payloads, through :mod:`ebind.workflow.sealed`) hold only tokens.

The codec is anything with ``encode(bytes) -> bytes`` and ``decode(bytes) -> bytes``
whose tokens are ASCII text (base64url for instance): ``ebind.contrib.fernet.FernetCodec``
is the one ebind ships. Sealing and unsealing are pure functions; ``decode`` failures of
any kind become :class:`PayloadUnreadable` naming what could not be read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import msgspec

from ebind.errors import EbindError, InvalidArguments

__all__ = [
    "ENV_FERNET_KEYS",
    "ErrorRedactor",
    "PayloadCodec",
    "PayloadUnreadable",
    "check_codec",
    "check_redactor",
    "codec_from_env",
    "is_sealed",
    "open_args",
    "redact",
    "seal",
    "unseal",
]

ErrorRedactor = Callable[[str], str]
"""Rewrites an error text before ebind stores it (step records, dead letters, responses)."""

ENV_FERNET_KEYS = "EBIND_FERNET_KEYS"
"""Comma-separated Fernet keys: an App without ``payload_codec`` uses a FernetCodec of them."""

_str_decoder = msgspec.json.Decoder(str)


@runtime_checkable
class PayloadCodec(Protocol):
    """Turns plaintext bytes into an ASCII token and back (e.g. symmetric encryption)."""

    def encode(self, data: bytes) -> bytes:
        """Seal ``data``; the token must be ASCII text so it fits in a JSON string."""
        ...

    def decode(self, token: bytes) -> bytes:
        """Open a token made by ``encode`` (with this or an older key); raise if it cannot."""
        ...


class PayloadUnreadable(EbindError):
    """A sealed payload or result could not be opened (no codec, another key, not sealed)."""


def check_codec(codec: object) -> PayloadCodec | None:
    """``codec`` when it has ``encode``/``decode`` (or None); raises InvalidArguments otherwise."""
    if codec is None or isinstance(codec, PayloadCodec):
        return codec
    raise InvalidArguments(
        f"payload_codec must have encode(bytes) -> bytes and decode(bytes) -> bytes methods "
        f"(e.g. ebind.contrib.fernet.FernetCodec), got {type(codec).__name__}",
        parameter="payload_codec",
    )


def codec_from_env(environ: Mapping[str, str] | None = None) -> PayloadCodec | None:
    """A FernetCodec of ``$EBIND_FERNET_KEYS`` (comma-separated, first encrypts), or None."""
    raw = (os.environ if environ is None else environ).get(ENV_FERNET_KEYS, "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        return None
    from ebind.contrib.fernet import FernetCodec  # needs the optional cryptography package

    return FernetCodec(keys)


def check_redactor(fn: object) -> ErrorRedactor | None:
    """``fn`` when callable (or None); raises InvalidArguments otherwise."""
    if fn is None or callable(fn):
        return fn
    raise InvalidArguments(
        f"redact_error must be a callable taking and returning a str, got {type(fn).__name__}",
        parameter="redact_error",
    )


def is_sealed(raw: bytes) -> bool:
    """Whether ``raw`` (a JSON value) has the sealed form: a JSON string."""
    return raw[:1] == b'"'


def seal(codec: PayloadCodec, data: bytes) -> bytes:
    """The JSON string holding ``codec``'s token for ``data``."""
    token = codec.encode(bytes(data))
    try:
        text = token.decode("ascii")
    except (UnicodeDecodeError, AttributeError) as exc:
        raise InvalidArguments(
            f"payload codec {type(codec).__name__}.encode must return ASCII bytes "
            "(e.g. base64url text) so the token fits in a JSON string",
            parameter="payload_codec",
        ) from exc
    return b'"' + text.encode() + b'"' if _plain_ascii(text) else msgspec.json.encode(text)


def _plain_ascii(text: str) -> bool:
    # base64url tokens need no escaping; anything else goes through the JSON encoder.
    return '"' not in text and "\\" not in text and text.isprintable()


def unseal(codec: PayloadCodec, raw: bytes, what: str) -> bytes:
    """The plaintext inside the sealed JSON string ``raw``; raises PayloadUnreadable.

    ``what`` names the payload in the error ("arguments of task 'x'", "result of ...").
    """
    if not is_sealed(raw):
        raise PayloadUnreadable(
            f"{what} arrived in plaintext, but this App requires payloads sealed with its "
            f"payload_codec ({type(codec).__name__}); the sender must use the same "
            "payload_codec"
        )
    try:
        token = _str_decoder.decode(raw).encode("ascii")
        return bytes(codec.decode(token))
    except Exception as exc:
        raise PayloadUnreadable(
            f"{what} could not be opened with this App's payload_codec "
            f"({type(codec).__name__}): {type(exc).__name__}; the sender used another key or "
            "codec (add its key to the codec's key list to read it)"
        ) from exc


def redact(redactor: ErrorRedactor | None, text: str) -> str:
    """``redactor(text)``; a redactor that fails or returns a non-str hides the text entirely."""
    if redactor is None:
        return text
    try:
        out: object = redactor(text)
    except Exception as exc:
        return f"<error text withheld: redact_error raised {type(exc).__name__}>"
    return out if isinstance(out, str) else "<error text withheld: redact_error returned no str>"


def open_args(codec: PayloadCodec | None, raw: bytes, what: str) -> bytes:
    """The argument array of an envelope payload, opened when ``codec`` is set.

    Without a codec a sealed payload (a JSON string: argument lists are arrays) is
    refused with a message saying so, instead of an argument-type error.
    """
    if codec is not None:
        return unseal(codec, raw, what)
    if is_sealed(raw):
        raise PayloadUnreadable(
            f"{what} are sealed with a payload codec, but this App has none; configure the "
            "same payload_codec on producers and workers"
        )
    return raw
