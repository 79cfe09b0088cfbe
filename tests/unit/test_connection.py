"""Connection settings: environment, precedence, bad combinations, files, failure reports."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from ebind.connection import (
    ENV,
    FLAGS,
    ConnectionSettings,
    check_server_url,
    explicit_settings,
    failure_kind,
    failure_message,
    merge_options,
    nats_options,
    settings_under,
    url_has_credentials,
)
from ebind.errors import InvalidArguments

SECRET = "s3cr@t:/#% ä"


def test_from_env_reads_every_variable_and_ignores_empty_ones() -> None:
    env = {var: f"v-{name}" for name, var in ENV.items()}
    got = ConnectionSettings.from_env(env)
    for name in ENV:
        assert getattr(got, name) == f"v-{name}"
    assert ConnectionSettings.from_env(dict.fromkeys(ENV.values(), "")).is_empty
    assert ConnectionSettings.from_env({}) == ConnectionSettings()


def test_every_setting_has_a_flag_and_a_variable() -> None:
    assert set(ENV) == set(FLAGS)
    assert all(var.startswith("EBIND_NATS_") for var in ENV.values())
    assert FLAGS["tls_ca"] == "--tls-ca"


def test_repr_and_describe_never_show_secrets() -> None:
    s = ConnectionSettings(user="alice", password=SECRET, tls_ca="/ca.pem")
    t = ConnectionSettings(token=SECRET)
    for text in (repr(s), s.describe(), repr(t), t.describe()):
        assert SECRET not in text
    assert "alice" in repr(s) and "/ca.pem" in s.describe()
    assert ConnectionSettings().describe() == "no credentials, no TLS"
    assert "creds /x.creds" in ConnectionSettings(creds="/x.creds").describe()
    assert "nkey seed /k" in ConnectionSettings(nkey="/k").describe()
    full = ConnectionSettings(tls_cert="/c", tls_key="/k", tls_hostname="h").describe()
    assert "client cert /c" in full and "hostname h" in full


def test_over_fills_gaps_within_one_method() -> None:
    flags = ConnectionSettings(user="alice")
    env = ConnectionSettings(password=SECRET, tls_ca="/ca")
    got = flags.over(env)
    assert (got.user, got.password, got.tls_ca) == ("alice", SECRET, "/ca")


def test_over_drops_other_methods_of_the_base() -> None:
    got = ConnectionSettings(creds="/c").over(ConnectionSettings(token="t", user="u"))
    assert got.auth_methods == ("creds",)
    got = ConnectionSettings(token="t").over(ConnectionSettings(user="u", password="p"))
    assert (got.token, got.user, got.password) == ("t", None, None)


def test_over_with_no_auth_takes_the_base_auth() -> None:
    got = ConnectionSettings(tls_ca="/mine").over(ConnectionSettings(token="t", tls_ca="/env"))
    assert (got.token, got.tls_ca) == ("t", "/mine")


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        (ConnectionSettings(token="t", user="u", password="p"), "more than one way"),
        (ConnectionSettings(nkey="/n", creds="/c"), "more than one way"),
        (ConnectionSettings(password="p"), "no user"),
        (ConnectionSettings(user="u"), "has no password"),
        (ConnectionSettings(tls_cert="/c"), "--tls-cert needs --tls-key"),
        (ConnectionSettings(tls_key="/k"), "--tls-key needs --tls-cert"),
        (ConnectionSettings(token=" t "), "whitespace"),
        (ConnectionSettings(tls_hostname="h "), "whitespace"),
    ],
)
def test_bad_combinations_are_named(settings: ConnectionSettings, fragment: str) -> None:
    problems = settings.problems()
    assert any(fragment in p for p in problems), problems
    with pytest.raises(InvalidArguments, match="bad NATS connection settings"):
        settings.check()


def test_bad_combination_messages_hold_no_secret() -> None:
    s = ConnectionSettings(token=SECRET, user="u", password=SECRET)
    assert all(SECRET not in p for p in s.problems())


@pytest.mark.parametrize(
    "settings",
    [
        ConnectionSettings(),
        ConnectionSettings(user="u", password="p"),
        ConnectionSettings(token="t"),
        ConnectionSettings(nkey="/n"),
        ConnectionSettings(creds="/c"),
        ConnectionSettings(tls_cert="/c", tls_key="/k", tls_ca="/a", tls_hostname="h"),
    ],
)
def test_good_combinations_pass(settings: ConnectionSettings) -> None:
    assert settings.problems() == []


def test_methods_and_tls_flags() -> None:
    s = ConnectionSettings(user="u", password="p", tls_hostname="h")
    assert s.auth_methods == ("user",) and s.uses_tls and not s.is_empty
    assert s.without_auth() == ConnectionSettings(tls_hostname="h")
    assert s.without_tls() == ConnectionSettings(user="u", password="p")


def test_merge_options_replaces_credentials_as_a_group() -> None:
    base = {"user": "u", "password": "p", "tls_hostname": "h", "name": "x"}
    got = merge_options(base, {"token": "t"})
    assert got == {"token": "t", "tls_hostname": "h", "name": "x"}
    ctx = ssl.create_default_context()
    got = merge_options({"tls": object(), "user": "u", "password": "p"}, {"tls": ctx})
    assert got == {"tls": ctx, "user": "u", "password": "p"}
    assert merge_options(base, {}) == base
    assert merge_options(base, {"token": None})["user"] == "u"


def test_explicit_options_and_url_credentials_silence_env_credentials() -> None:
    env = ConnectionSettings(token="t", tls_ca="/ca")
    assert settings_under({}, ["nats://h:4222"], env) == env
    assert settings_under({"user": "u"}, ["nats://h:4222"], env).token is None
    assert settings_under({}, ["nats://u:p@h:4222"], env).token is None
    assert settings_under({"tls": object()}, ["nats://h"], env).tls_ca is None


def test_explicit_settings_reflect_nats_options() -> None:
    got = explicit_settings({"user": "u", "password": "p", "user_credentials": "/c"})
    assert (got.user, got.creds) == ("u", "/c")
    assert explicit_settings({"nkeys_seed_str": "SU..."}).nkey == "(a seed string)"


@pytest.mark.parametrize(
    ("url", "has"),
    [
        ("nats://h:4222", False),
        ("nats://u:p@h:4222", True),
        ("nats://tok@h", True),
        ("h:4222", False),
        ("u:p@h:4222", True),
    ],
)
def test_url_has_credentials(url: str, has: bool) -> None:
    assert url_has_credentials(url) is has


@pytest.mark.parametrize("url", ["nats://127.0.0.1:4222", "tls://localhost", "127.0.0.1:4222"])
def test_check_server_url_accepts_valid_urls(url: str) -> None:
    check_server_url(url)


@pytest.mark.parametrize(
    "url", ["nats://alice:p@ss/w@127.0.0.1:4222", "nats://h:notaport", "nats://:4222"]
)
def test_check_server_url_refuses_without_echoing_the_password(url: str) -> None:
    with pytest.raises(InvalidArguments, match="not a valid NATS URL") as err:
        check_server_url(url)
    assert "p@ss/w" not in str(err.value)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (Exception("nats: 'Authorization Violation'"), "auth"),
        (Exception("nats: 'User Authentication Expired'"), "auth"),
        (ssl.SSLCertVerificationError("certificate verify failed"), "tls"),
        (ssl.SSLError("alert unknown ca"), "tls"),
        (Exception("nats: TLS required by server"), "tls"),
        (ConnectionRefusedError("refused"), None),
        (TimeoutError(), None),
        (Exception("nats: no servers available for connection"), None),
    ],
)
def test_failure_kind(exc: BaseException, kind: str | None) -> None:
    assert failure_kind(exc) == kind


@pytest.mark.parametrize(
    ("exc", "plain", "tls_up"),
    [
        (ConnectionResetError(104, "Connection reset by peer"), None, "tls"),
        (ConnectionResetError("Connection lost"), None, "tls"),
        (BrokenPipeError(32, "Broken pipe"), None, "tls"),
        (ConnectionRefusedError("refused"), None, None),
        (TimeoutError(), None, None),
        (Exception("nats: 'Authorization Violation'"), "auth", "auth"),
    ],
)
def test_a_reset_is_a_tls_refusal_only_after_the_handshake(
    exc: BaseException, plain: str | None, tls_up: str | None
) -> None:
    # A server refusing a client certificate after a TLS 1.3 handshake closes the socket;
    # the client may see the reset before the alert, and retrying would be refused again.
    # Before the handshake a reset is the network's (tests/security/test_tls_reset.py).
    assert failure_kind(exc) == plain
    assert failure_kind(exc, tls_up=True) == tls_up


def test_a_reset_tls_failure_says_the_certificate_was_refused() -> None:
    msg = failure_message("tls", ["nats://127.0.0.1:4222"], ConnectionResetError(104, "reset"))
    assert "refuses a client certificate" in msg and "127.0.0.1:4222" in msg
    down = failure_message("unreachable", ["nats://127.0.0.1:4222"], ConnectionResetError("x"))
    assert "certificate" not in down


def test_failure_messages_name_the_server_and_hide_secrets() -> None:
    servers = [f"nats://alice:{SECRET}@127.0.0.1:4222"]
    settings = ConnectionSettings(user="alice", password=SECRET)
    auth = failure_message("auth", servers, Exception("nats: 'Authorization Violation'"), settings)
    tls = failure_message("tls", servers, ssl.SSLError("bad"), settings)
    down = failure_message("unreachable", servers, TimeoutError(), settings)
    for msg in (auth, tls, down):
        assert "127.0.0.1:4222" in msg and SECRET not in msg and "\n" not in msg
    assert "refused the credentials (Authorization Violation)" in auth
    assert "user 'alice' with a password" in auth
    assert "--tls-ca" in tls
    assert "no answer in time" in down


# --- files (the shell) -----------------------------------------------------------------


def test_nats_options_for_user_and_token() -> None:
    assert nats_options(ConnectionSettings(user="u", password="p")) == {
        "user": "u",
        "password": "p",
    }
    assert nats_options(ConnectionSettings(token="tok")) == {"token": "tok"}
    assert nats_options(ConnectionSettings()) == {}


def test_missing_and_empty_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.creds"
    with pytest.raises(InvalidArguments, match=r"--creds / \$EBIND_NATS_CREDS.*nope.creds"):
        nats_options(ConnectionSettings(creds=str(missing)))
    empty = tmp_path / "empty.nk"
    empty.write_text("")
    with pytest.raises(InvalidArguments, match=r"empty\.nk' is empty"):
        nats_options(ConnectionSettings(nkey=str(empty)))
    with pytest.raises(InvalidArguments, match="does not exist or is not a file"):
        nats_options(ConnectionSettings(tls_ca=str(tmp_path)))


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    binary = tmp_path / "seed.nk"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InvalidArguments, match=r"cannot read .*seed\.nk.*not UTF-8"):
        nats_options(ConnectionSettings(nkey=str(binary)))


def test_wrong_kind_of_nkey_or_creds_file_is_named_not_echoed(tmp_path: Path) -> None:
    seed = tmp_path / "acct.nk"
    seed.write_text("SAWRONGACCOUNTSEEDSECRET\n")
    with pytest.raises(InvalidArguments, match="does not hold a user nkey seed") as err:
        nats_options(ConnectionSettings(nkey=str(seed)))
    assert "SAWRONG" not in str(err.value)
    creds = tmp_path / "bad.creds"
    creds.write_text("just text SECRETSTUFF")
    with pytest.raises(InvalidArguments, match="is not a NATS creds file") as err:
        nats_options(ConnectionSettings(creds=str(creds)))
    assert "SECRETSTUFF" not in str(err.value)


def test_valid_files_become_paths_not_contents(tmp_path: Path) -> None:
    seed = tmp_path / "user.nk"
    seed.write_text("SUAGOODLOOKINGSEED\n")
    creds = tmp_path / "u.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n"
        "-----BEGIN USER NKEY SEED-----\nSUx\n------END USER NKEY SEED------\n"
    )
    assert nats_options(ConnectionSettings(nkey=str(seed))) == {"nkeys_seed": str(seed)}
    assert nats_options(ConnectionSettings(creds=str(creds))) == {"user_credentials": str(creds)}


def test_bad_ca_and_mismatched_key_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    with pytest.raises(InvalidArguments, match="holds no usable CA certificate"):
        nats_options(ConnectionSettings(tls_ca=str(ca)))
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("junk\n")
    key.write_text("junk\n")
    with pytest.raises(InvalidArguments, match="do not make a client certificate"):
        nats_options(ConnectionSettings(tls_cert=str(cert), tls_key=str(key)))


def test_tls_options_build_a_context_and_keep_the_hostname() -> None:
    got = nats_options(ConnectionSettings(tls_hostname="nats.internal"))
    assert isinstance(got["tls"], ssl.SSLContext)
    assert got["tls"].verify_mode == ssl.CERT_REQUIRED
    assert got["tls_hostname"] == "nats.internal"


def test_nkey_and_creds_need_the_nkeys_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nkeys" else real(name, *a)
    )
    seed = tmp_path / "user.nk"
    seed.write_text("SUAGOODLOOKINGSEED\n")
    for settings in (ConnectionSettings(nkey=str(seed)), ConnectionSettings(creds=str(seed))):
        with pytest.raises(InvalidArguments, match=r"pip install 'ebind-nats\[nkeys\]'"):
            nats_options(settings)
