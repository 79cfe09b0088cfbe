"""An App's client id and inbox prefix: fixed ones let NATS permissions name them."""

from __future__ import annotations

import pytest

from ebind import App
from ebind.errors import InvalidArguments, InvalidName


def test_client_id_is_random_unless_given_or_set_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EBIND_CLIENT_ID", raising=False)
    a, b = App("a"), App("b")
    assert a.client_id != b.client_id and len(a.client_id) == 32
    assert App("a", client_id="orders-api").client_id == "orders-api"
    monkeypatch.setenv("EBIND_CLIENT_ID", "from-env")
    assert App("a").client_id == "from-env"
    assert App("a", client_id="explicit").client_id == "explicit"


@pytest.mark.parametrize("bad", ["", "a.b", "*", "has space", "x" * 129])
def test_a_client_id_that_cannot_be_one_subject_token_is_refused(bad: str) -> None:
    with pytest.raises(InvalidName, match="client_id"):
        App("a", client_id=bad)


def test_inbox_prefix_comes_from_the_option_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EBIND_NATS_INBOX_PREFIX", raising=False)
    assert "inbox_prefix" not in App("a")._options
    monkeypatch.setenv("EBIND_NATS_INBOX_PREFIX", "_INBOX_alice")
    assert App("a")._options["inbox_prefix"] == "_INBOX_alice"
    assert App("a", inbox_prefix="_INBOX_bob")._options["inbox_prefix"] == "_INBOX_bob"
    # nats-py's own default stays usable when named explicitly
    assert App("a", inbox_prefix="_INBOX")._options["inbox_prefix"] == "_INBOX"
    assert App("a", inbox_prefix=b"_INBOX_raw")._options["inbox_prefix"] == b"_INBOX_raw"


@pytest.mark.parametrize("bad", ["_INBOX.>", "a b", "a..b", "_INBOX_x.*"])
def test_a_malformed_inbox_prefix_is_refused_before_connecting(bad: str) -> None:
    with pytest.raises(InvalidArguments, match="invalid inbox prefix"):
        App("a", inbox_prefix=bad)
