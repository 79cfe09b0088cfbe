"""redact() and the secret registry: no password or token survives, whatever it holds."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import pytest

from ebind.connection import register_url_secrets, url_secret
from ebind.logging import MASK, redact, redact_secrets, register_secret

HOSTILE = [
    "p@ss",
    "a:b:c",
    "sl/ash/es",
    "per%cent%41",
    "hash#tag",
    "with spaces in it",
    "ünïcödé-€-密码",
    "q?uery&x=1",
    "@:/%# mixed ä",
    "trailing@",
    "@leading",
    "quote'and\"dq",
    "back\\slash",
    "comma,nats://x",
]


# Without registration a URL pattern can only end a password at whitespace, a quote or the
# next URL of a list; the connection code registers every secret it uses for the rest.
URL_SAFE = [s for s in HOSTILE if not any(c in s for c in " '\"") and "://" not in s]


def _fresh(secret: str) -> str:
    # The registry is process-wide; a unique suffix keeps the cases independent.
    return f"{secret}-{uuid.uuid4().hex[:6]}"


@pytest.mark.parametrize(
    "text",
    [
        "nats://alice:{s}@127.0.0.1:4222",
        "tls://alice:{s}@host",
        "connect nats://alice:{s}@h1:4222,nats://bob:{s}@h2:4222 failed",
        "url='nats://alice:{s}@host:4222'",
        "nats://{s}@host:4222",
    ],
)
@pytest.mark.parametrize("secret", URL_SAFE)
def test_url_credentials_are_masked_without_registration(text: str, secret: str) -> None:
    out = redact(text.format(s=secret))
    assert secret not in out
    assert MASK in out


@pytest.mark.parametrize("secret", HOSTILE)
def test_registered_secret_is_masked_in_every_form(secret: str) -> None:
    value = _fresh(secret)
    register_secret(value)
    forms = [
        f"nats://alice:{value}@127.0.0.1:4222",
        f"password is {value}!",
        repr(value),
        json.dumps(value),
        json.dumps({"k": value}, ensure_ascii=False),
        quote(value, safe=""),
        repr(Exception(f"boom {value}")),
    ]
    for form in forms:
        out = redact(form)
        assert value not in out, form
        assert repr(value)[1:-1] not in out, form
        assert MASK in out


@pytest.mark.parametrize("secret", [s for s in HOSTILE if "://" not in s])
def test_url_secret_reads_the_whole_password(secret: str) -> None:
    assert url_secret(f"nats://alice:{secret}@127.0.0.1:4222") == secret
    assert url_secret(f"alice:{secret}@127.0.0.1:4222") == secret


def test_url_secret_of_token_and_of_plain_url() -> None:
    assert url_secret("nats://s3cr3t-token@host:4222") == "s3cr3t-token"
    assert url_secret("nats://127.0.0.1:4222") is None
    assert url_secret("nats://@host") is None


@pytest.mark.parametrize("secret", HOSTILE)
def test_registered_url_secret_is_masked_even_with_spaces(secret: str) -> None:
    value = _fresh(secret)
    url = f"nats://alice:{value}@127.0.0.1:4222"
    register_url_secrets([url])
    out = redact(f"cannot reach NATS at {url} (refused)")
    assert value not in out
    assert "127.0.0.1:4222" in out


def test_short_secrets_are_not_registered() -> None:
    register_secret("abc")
    assert redact("abc abc") == "abc abc"
    register_secret(None)
    register_secret("")


def test_longest_secret_wins() -> None:
    short, long = _fresh("overlap"), ""
    long = short + "-and-more"
    register_secret(short)
    register_secret(long)
    assert redact(f"x {long} y") == f"x {MASK} y"


def test_plain_text_is_untouched() -> None:
    for text in [
        "nats://127.0.0.1:4222",
        "mail bob@example.com about nats://h:4222",
        "no urls here",
        "",
    ]:
        assert redact(text) == text


def test_processor_masks_registered_secret_under_any_key() -> None:
    value = _fresh("p@ss w0rd")
    register_secret(value)
    event = {"event": "x", "detail": f"got {value}", "items": [value], "password": "whatever"}
    out = redact_secrets(None, "info", dict(event))
    assert value not in json.dumps(out, ensure_ascii=False)
    assert out["password"] == MASK
