"""ServerAuth: the config text an embedded server gets, and the combinations it refuses."""

from __future__ import annotations

import json

import pytest

from ebind._embed_auth import ServerAuth, generate_token
from ebind._embed_proc import render_config
from ebind.errors import InvalidArguments

SECRET = 'p@ss:w/o#rd% "q" ä'


def test_token_block_quotes_hostile_values() -> None:
    text = ServerAuth(token=SECRET).render()
    assert text.startswith("authorization {")
    assert f"token: {json.dumps(SECRET, ensure_ascii=False)}" in text


def test_users_and_nkeys_share_one_users_list() -> None:
    text = ServerAuth(users=(("alice", SECRET),), nkeys=("UABC",)).render()
    assert '{user: "alice", password: ' in text
    assert '{nkey: "UABC"}' in text
    assert text.count("authorization {") == 1


def test_tls_block_with_mutual_verification() -> None:
    text = ServerAuth(tls_cert="/s.pem", tls_key="/k.pem", tls_ca="/ca.pem", tls_verify=True)
    rendered = text.render()
    for line in ('cert_file: "/s.pem"', 'key_file: "/k.pem"', 'ca_file: "/ca.pem"', "verify: true"):
        assert line in rendered


def test_nothing_renders_nothing() -> None:
    assert ServerAuth().render() == ""


@pytest.mark.parametrize(
    ("auth", "fragment"),
    [
        (ServerAuth(token="t", users=(("a", "b"),)), "cannot be combined"),
        (ServerAuth(token=" "), "token is empty"),
        (ServerAuth(users=(("a", ""),)), "non-empty name and password"),
        (ServerAuth(nkeys=("SUSEED",)), "not a public user nkey"),
        (ServerAuth(tls_cert="/c"), "go together"),
        (ServerAuth(tls_ca="/ca"), "need tls_cert"),
        (ServerAuth(tls_cert="/c", tls_key="/k", tls_verify=True), "needs tls_ca"),
    ],
)
def test_bad_combinations(auth: ServerAuth, fragment: str) -> None:
    with pytest.raises(InvalidArguments, match=fragment):
        auth.render()


def test_repr_hides_token_and_passwords() -> None:
    text = repr(ServerAuth(token=SECRET)) + repr(ServerAuth(users=(("alice", SECRET),)))
    assert SECRET not in text and "alice:***" in text and "token='***'" in text


def test_generated_tokens_are_long_and_distinct() -> None:
    a, b = generate_token(), generate_token()
    assert a != b and len(a) >= 32 and a.isascii()


def test_every_listener_binds_loopback(tmp_path: object) -> None:
    from pathlib import Path

    from ebind._embed_proc import ClusterSpec

    text = render_config(
        port=-1,
        http_port=-1,
        store_dir=Path("/tmp/x"),
        sync_interval=None,
        server_name="n",
        cluster=ClusterSpec(name="c", port=6222, routes=()),
        extra_config=ServerAuth(token="tok-tok").render(),
    )
    assert 'listen: "127.0.0.1:-1"' in text
    assert 'http: "127.0.0.1:-1"' in text
    assert 'listen: "127.0.0.1:6222"' in text
    assert "0.0.0.0" not in text
