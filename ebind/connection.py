"""Connection settings for secured clusters: credentials and TLS from arguments or ``EBIND_NATS_*``.

The pure core turns explicit values and the environment into one :class:`ConnectionSettings`,
checks the combination, and decides how a failed connect should be reported. The shell reads
the files it names (nkey seed, creds, CA, certificate, key), builds the ``ssl.SSLContext`` and
opens the nats-py connection, aborting at the first refusal of the credentials or of TLS
instead of letting nats-py retry the same doomed handshake for minutes.

Error messages name the setting and the file, never a secret; every password and token this
module sees is registered with :func:`ebind.logging.register_secret` so logs mask it too.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from ebind.errors import AuthenticationFailed, ConnectionFailed, InvalidArguments
from ebind.logging import get_logger, redact, register_secret

__all__ = [
    "AUTH_OPTIONS",
    "ENV",
    "FLAGS",
    "TLS_OPTIONS",
    "ConnectionSettings",
    "check_server_url",
    "connect_options",
    "explicit_settings",
    "failure_kind",
    "failure_message",
    "merge_options",
    "nats_options",
    "open_connection",
    "redact_servers",
    "register_url_secrets",
    "settings_under",
    "ssl_context",
    "url_has_credentials",
    "url_secret",
]

log = get_logger("ebind.connection")

ENV: Mapping[str, str] = {
    "user": "EBIND_NATS_USER",
    "password": "EBIND_NATS_PASSWORD",
    "token": "EBIND_NATS_TOKEN",
    "nkey": "EBIND_NATS_NKEY",
    "creds": "EBIND_NATS_CREDS",
    "tls_ca": "EBIND_NATS_TLS_CA",
    "tls_cert": "EBIND_NATS_TLS_CERT",
    "tls_key": "EBIND_NATS_TLS_KEY",
    "tls_hostname": "EBIND_NATS_TLS_HOSTNAME",
}
"""Setting name → environment variable that supplies it."""

FLAGS: Mapping[str, str] = {name: "--" + name.replace("_", "-") for name in ENV}
"""Setting name → CLI flag that supplies it."""

_AUTH_FIELDS = ("user", "password", "token", "nkey", "creds")
_TLS_FIELDS = ("tls_ca", "tls_cert", "tls_key", "tls_hostname")
_SECRET_FIELDS = frozenset({"password", "token"})
_METHOD_OF = {
    "user": "user",
    "password": "user",
    "token": "token",
    "nkey": "nkey",
    "creds": "creds",
}
# nats-py connect options that authenticate; one source supplies all of them or none.
AUTH_OPTIONS = frozenset(
    {
        "user",
        "password",
        "token",
        "nkeys_seed",
        "nkeys_seed_str",
        "user_credentials",
        "signature_cb",
        "user_jwt_cb",
    }
)
TLS_OPTIONS = frozenset({"tls"})

FailureKind = Literal["auth", "tls"]


def _both(name: str) -> str:
    return f"{FLAGS[name]} / ${ENV[name]}"


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Credentials and TLS files for one NATS connection; ``repr`` never shows a secret.

    File settings (``nkey``, ``creds``, ``tls_*``) are paths, so the secrets they hold stay
    out of argv, the environment and this object.
    """

    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_hostname: str | None = None

    def __repr__(self) -> str:
        shown = [
            f"{f.name}={'***' if f.name in _SECRET_FIELDS else repr(getattr(self, f.name))}"
            for f in fields(self)
            if getattr(self, f.name) is not None
        ]
        return f"ConnectionSettings({', '.join(shown)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConnectionSettings:
        """The settings in ``EBIND_NATS_*`` (empty variables count as unset)."""
        env = os.environ if environ is None else environ
        return cls(**{name: env.get(var) or None for name, var in ENV.items()})

    @property
    def auth_methods(self) -> tuple[str, ...]:
        """The authentication methods these settings name, in a stable order."""
        found = {_METHOD_OF[n] for n in _AUTH_FIELDS if getattr(self, n) is not None}
        return tuple(m for m in ("user", "token", "nkey", "creds") if m in found)

    @property
    def uses_tls(self) -> bool:
        """Whether any TLS setting is given (TLS is then required)."""
        return any(getattr(self, n) is not None for n in _TLS_FIELDS)

    @property
    def is_empty(self) -> bool:
        """True when nothing is set."""
        return not self.auth_methods and not self.uses_tls

    def over(self, base: ConnectionSettings) -> ConnectionSettings:
        """These settings, with gaps filled from ``base`` (flags over the environment).

        A method named here replaces every other method of ``base``, so ``--creds`` beats
        ``$EBIND_NATS_TOKEN``; within one method gaps are filled, so ``--user alice`` takes
        its password from ``$EBIND_NATS_PASSWORD``.
        """
        mine = set(self.auth_methods)
        taken: dict[str, str | None] = {}
        for name in (*_AUTH_FIELDS, *_TLS_FIELDS):
            value = getattr(self, name)
            if value is None and (name in _TLS_FIELDS or not mine or _METHOD_OF[name] in mine):
                value = getattr(base, name)
            taken[name] = value
        return replace(self, **taken)

    def without_auth(self) -> ConnectionSettings:
        """A copy with every credential removed (TLS kept)."""
        return replace(self, **dict.fromkeys(_AUTH_FIELDS))

    def without_tls(self) -> ConnectionSettings:
        """A copy with every TLS setting removed (credentials kept)."""
        return replace(self, **dict.fromkeys(_TLS_FIELDS))

    def problems(self) -> list[str]:
        """Every bad combination, as messages naming flags and variables (no secret values)."""
        found: list[str] = []
        methods = self.auth_methods
        if len(methods) > 1:
            named = ", ".join(_method_label(m) for m in methods)
            found.append(
                f"more than one way to authenticate is set ({named}); a NATS user has one, "
                "so keep only the one the server expects"
            )
        if self.password is not None and self.user is None:
            found.append(f"a password is set but no user; set {_both('user')}")
        if self.user is not None and self.password is None:
            found.append(
                f"user {self.user!r} has no password; set ${ENV['password']} "
                f"(or {FLAGS['password']}, which lands in shell history)"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            have, need = (
                ("tls_cert", "tls_key") if self.tls_key is None else ("tls_key", "tls_cert")
            )
            found.append(
                f"{FLAGS[have]} needs {FLAGS[need]} too: a client certificate is presented "
                f"with its private key (set {_both(need)})"
            )
        for name in ("user", "token", "tls_hostname"):
            value = getattr(self, name)
            if value is not None and value != value.strip():
                found.append(f"{FLAGS[name]} has leading or trailing whitespace")
        for name in ("creds", "nkey", "tls_ca", "tls_cert", "tls_key"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                # Say `--tls-ca "$CA"` with CA unset: an empty path must not quietly mean
                # "no file" (for the CA, the system's roots instead of the pinned one).
                found.append(f"{FLAGS[name]} is empty; give a file path or leave it out")
        return found

    def check(self) -> None:
        """Raise InvalidArguments listing every problem of :meth:`problems`."""
        found = self.problems()
        if found:
            raise InvalidArguments("bad NATS connection settings: " + "; ".join(found))

    def describe(self) -> str:
        """A one-line summary for people and logs (names and paths, never secrets)."""
        parts: list[str] = []
        if self.user is not None:
            parts.append(f"user {self.user!r} with a password")
        if self.token is not None:
            parts.append("a token")
        if self.nkey is not None:
            parts.append(f"nkey seed {self.nkey}")
        if self.creds is not None:
            parts.append(f"creds {self.creds}")
        if self.uses_tls:
            tls = [f"CA {self.tls_ca}"] if self.tls_ca else []
            if self.tls_cert:
                tls.append(f"client cert {self.tls_cert}")
            if self.tls_hostname:
                tls.append(f"hostname {self.tls_hostname}")
            parts.append("TLS" + (f" ({', '.join(tls)})" if tls else ""))
        return ", ".join(parts) or "no credentials, no TLS"


def _method_label(method: str) -> str:
    if method == "user":
        return f"{FLAGS['user']}/{FLAGS['password']}"
    return _both(method)


def url_has_credentials(url: str) -> bool:
    """Whether a server URL carries a user, password or token before its host."""
    try:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
    except ValueError:
        return "@" in url
    return bool(parts.username or parts.password)


def check_server_url(url: str) -> None:
    """Raise InvalidArguments when nats-py could not parse ``url`` (the message is redacted).

    A password typed into a URL unencoded (holding ``@``, ``/``, ``#``, ``?``, ``:``...) is
    the usual cause, so the message points to the credential flags instead.
    """
    normalized = url if "://" in url else f"nats://{url}"
    try:
        parts = urlsplit(normalized)
        parts.port  # noqa: B018 - parsing the port is the check
        ok = bool(parts.hostname) and parts.hostname != "none"
        # A NATS URL has no path, query or fragment; one means a "/", "?" or "#" of an
        # unencoded password cut the URL short and the host read is not the real one.
        if parts.scheme not in ("ws", "wss") and (
            parts.path not in ("", "/") or parts.query or parts.fragment
        ):
            ok = False
    except ValueError:
        ok = False
    if not ok:
        raise InvalidArguments(
            f"server URL {redact(url)!r} is not a valid NATS URL (scheme://host:port); "
            f"pass credentials with {_method_label('user')} or {_both('token')} (their "
            "variables keep them out of shell history) rather than inside the URL",
            parameter="nats_url",
        )


def redact_servers(servers: Sequence[str]) -> str:
    """Server URLs joined by commas with any credentials masked."""
    return redact(",".join(servers))


def url_secret(url: str) -> str | None:
    """The password (or token) of a server URL, read the way a person typed it.

    The userinfo runs to the last ``@``, so an unencoded password holding ``@``, ``/``,
    ``#``, ``:`` or spaces is found whole, where ``urllib`` would cut it short.
    """
    rest = url.partition("://")[2] if "://" in url else url
    userinfo, at, _ = rest.rpartition("@")
    if not at or not userinfo:
        return None
    user, colon, password = userinfo.partition(":")
    return password if colon else user


def register_url_secrets(servers: Sequence[str]) -> None:
    """Register the password or token of each URL so logs and errors mask it.

    Call it with the URL list as given, before it is split at commas: a password holding a
    comma is then known whole, and so are the pieces a split would scatter.
    """
    for url in servers:
        secret = url_secret(url)
        if secret:
            for piece in {secret, unquote(secret), *secret.split(",")}:
                register_secret(piece)


def merge_options(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """nats-py options of ``base`` overridden by ``override``.

    Credentials go as a group: when ``override`` authenticates at all, none of ``base``'s
    credentials are kept (a token beside a user and password would be refused). The same
    holds for the ``tls`` context; every other option is overridden key by key.
    """
    drop: set[str] = set()
    if any(override.get(k) is not None for k in AUTH_OPTIONS):
        drop |= AUTH_OPTIONS
    if override.get("tls") is not None:
        drop |= TLS_OPTIONS
    merged = {k: v for k, v in base.items() if k not in drop}
    merged.update(override)
    return merged


def settings_under(
    explicit: Mapping[str, Any], servers: Sequence[str], env: ConnectionSettings
) -> ConnectionSettings:
    """The part of ``env`` that explicit options leave in force (explicit always wins)."""
    if any(explicit.get(k) is not None for k in AUTH_OPTIONS) or any(
        url_has_credentials(s) for s in servers
    ):
        env = env.without_auth()
    if explicit.get("tls") is not None:
        env = env.without_tls()
    return env


# --- failures (pure) --------------------------------------------------------------------

_AUTH_MARKERS = (
    "authorization violation",
    "authentication expired",
    "authentication timeout",
    "authentication revoked",
    "user authentication",
    "account authentication",
)


def failure_kind(exc: BaseException, *, tls_up: bool = False) -> FailureKind | None:
    """``"auth"`` for refused credentials, ``"tls"`` for a TLS failure, None otherwise.

    Only these two end a first connect at once: a retry would present the same credentials
    and certificates and be refused again. With ``tls_up`` (the connection that failed had
    finished its TLS handshake) a reset connection counts as a TLS refusal too: a server
    that rejects the client certificate after a TLS 1.3 handshake closes the socket, and the
    client often sees the reset before the alert that names the reason. A reset before the
    handshake (a server restarting, a proxy with no backend yet) is a network failure.
    """
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if tls_up and _is_reset(exc):
        return "tls"
    text = str(exc).lower()
    if any(marker in text for marker in _AUTH_MARKERS):
        return "auth"
    if "tls" in text and ("required" in text or "handshake" in text):
        return "tls"
    return None


def _is_reset(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionResetError | BrokenPipeError)


def _tls_established(nc: Any) -> bool:
    """Whether ``nc``'s latest connection attempt finished a TLS handshake (False if unknown)."""
    from ebind.direct import tls_up

    return tls_up(nc)


class _Attempt:
    """The client of the connect attempt under way, to classify the errors it reports."""

    def __init__(self) -> None:
        self.client: Any = None

    def kind(self, exc: BaseException) -> FailureKind | None:
        return failure_kind(exc, tls_up=_tls_established(self.client))


def _reason(exc: BaseException) -> str:
    if type(exc).__name__ == "NoServersError":
        return "connection refused: nothing is listening there"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip() or type(exc).__name__
    return text.removeprefix("nats: ").strip("'")


def failure_message(
    kind: FailureKind | Literal["unreachable"],
    servers: Sequence[str],
    exc: BaseException,
    settings: ConnectionSettings | None = None,
) -> str:
    """One line naming the server(s) and the cause; URLs and secrets are redacted."""
    where = redact_servers(servers)
    reason = redact(_reason(exc))
    if kind == "auth":
        used = settings.describe() if settings is not None else "the configured credentials"
        return (
            f"NATS at {where} refused the credentials ({reason}); this client used {used}. "
            "Check the user, password, token, nkey or creds file the server expects"
        )
    if kind == "tls":
        if _is_reset(exc):
            reason = (
                "the server closed the connection after the handshake, which is how it "
                "refuses a client certificate it does not trust, or a missing one"
            )
        return (
            f"TLS with NATS at {where} failed ({reason}); check the CA "
            f"({_both('tls_ca')}), the client certificate and key, and the server name "
            f"({_both('tls_hostname')})"
        )
    return f"cannot reach NATS at {where} ({reason})"


# --- the shell: files, SSL, the connect itself -------------------------------------------


def _readable(name: str, path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidArguments(
            f"{FLAGS[name]} / ${ENV[name]}: file {str(p)!r} does not exist or is not a file"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidArguments(
            f"{FLAGS[name]} / ${ENV[name]}: cannot read {str(p)!r}: {reason}"
        ) from None
    if not text.strip():
        raise InvalidArguments(f"{FLAGS[name]} / ${ENV[name]}: file {str(p)!r} is empty")
    return str(p)


def _check_nkey(path: str) -> str:
    path = _readable("nkey", path)
    seed = Path(path).read_text(encoding="utf-8").strip()
    if not seed.startswith("SU"):
        # Naming the file only: even a wrong seed is a secret.
        raise InvalidArguments(
            f"{_both('nkey')}: {path!r} does not hold a user nkey seed (a line starting "
            "with 'SU', as written by `nsc` or `nk -gen user`)"
        )
    return path


def _check_creds(path: str) -> str:
    path = _readable("creds", path)
    text = Path(path).read_text(encoding="utf-8")
    if "BEGIN NATS USER JWT" not in text or "NKEY SEED" not in text:
        raise InvalidArguments(
            f"{_both('creds')}: {path!r} is not a NATS creds file (it needs a "
            "'BEGIN NATS USER JWT' block and a 'USER NKEY SEED' block, as written by `nsc`)"
        )
    return path


def _need_nkeys(name: str) -> None:
    if importlib.util.find_spec("nkeys") is None:
        raise InvalidArguments(
            f"{_both(name)} signs with nkeys, and the nkeys package is not installed; "
            "install it with `pip install 'ebind-nats[nkeys]'`"
        )


def ssl_context(settings: ConnectionSettings) -> ssl.SSLContext:
    """A client TLS context verifying the server with ``tls_ca`` (system roots without)."""
    ca = _readable("tls_ca", settings.tls_ca) if settings.tls_ca else None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except ssl.SSLError as exc:
        raise InvalidArguments(
            f"{_both('tls_ca')}: {ca!r} holds no usable CA certificate ({exc.reason or exc})"
        ) from None
    if settings.tls_cert and settings.tls_key:
        cert = _readable("tls_cert", settings.tls_cert)
        key = _readable("tls_key", settings.tls_key)
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise InvalidArguments(
                f"{FLAGS['tls_cert']} {cert!r} and {FLAGS['tls_key']} {key!r} do not make a "
                f"client certificate ({exc.reason or exc}); the key must be the certificate's, "
                "in PEM and not encrypted"
            ) from None
    return ctx


def nats_options(settings: ConnectionSettings) -> dict[str, Any]:
    """nats-py connect options for ``settings``, checking every file they name.

    Raises:
        InvalidArguments: a bad combination, or a file that is missing, unreadable or of
            the wrong kind (the message names the file, never its content).
    """
    settings.check()
    options: dict[str, Any] = {}
    if settings.user is not None:
        register_secret(settings.password)
        options.update(user=settings.user, password=settings.password)
    if settings.token is not None:
        register_secret(settings.token)
        options["token"] = settings.token
    if settings.nkey is not None:
        _need_nkeys("nkey")
        options["nkeys_seed"] = _check_nkey(settings.nkey)
    if settings.creds is not None:
        _need_nkeys("creds")
        options["user_credentials"] = _check_creds(settings.creds)
    if settings.uses_tls:
        options["tls"] = ssl_context(settings)
        if settings.tls_hostname:
            options["tls_hostname"] = settings.tls_hostname
    return options


def explicit_settings(options: Mapping[str, Any]) -> ConnectionSettings:
    """What explicit nats-py options say, for error messages (paths kept, secrets flagged)."""
    creds = options.get("user_credentials")
    return ConnectionSettings(
        user=options.get("user"),
        password=options.get("password"),
        token=options.get("token"),
        nkey=options.get("nkeys_seed")
        or ("(a seed string)" if options.get("nkeys_seed_str") else None),
        creds=creds if isinstance(creds, str) else None,
        tls_hostname=options.get("tls_hostname"),
    )


def _failed(
    kind: FailureKind | Literal["unreachable"],
    servers: Sequence[str],
    exc: BaseException,
    settings: ConnectionSettings,
) -> ConnectionFailed:
    where = redact_servers(servers)
    message = failure_message(kind, servers, exc, settings)
    if kind == "auth":
        log.warning("nats.credentials_refused", servers=where)
        return AuthenticationFailed(message, server=where)
    if kind == "tls":
        log.warning("nats.tls_failed", servers=where)
    return ConnectionFailed(message, server=where, kind=kind)


class _Refused(Exception):
    """Raised from the error callback to end nats-py's connect loop at the first refusal."""

    def __init__(self, kind: FailureKind, cause: BaseException) -> None:
        super().__init__(kind)
        self.kind = kind
        self.cause = cause


async def open_connection(
    servers: Sequence[str],
    options: Mapping[str, Any],
    *,
    settings: ConnectionSettings | None = None,
    wait: float | None = None,
) -> Any:
    """Connect a nats-py client; refused credentials or TLS end the attempt at once.

    With ``wait`` (seconds) an unreachable server is tried again until that much time has
    passed, then reported in one error naming the (redacted) URL; the failed attempts in
    between are logged at debug level only. Without it nats-py's own attempts decide.

    Raises:
        AuthenticationFailed: the server refused the credentials.
        ConnectionFailed: TLS failed, or no server could be reached.
    """
    from nats.errors import NoServersError

    from ebind.direct import DirectClient

    register_url_secrets(servers)
    for url in servers:
        check_server_url(url)
    for key in ("password", "token", "nkeys_seed_str"):
        value = options.get(key)
        register_secret(value.strip() if isinstance(value, str) else None)
    user_error_cb: Callable[[Exception], Awaitable[None]] | None = options.get("error_cb")
    connected = aborted = False
    described = settings if settings is not None else explicit_settings(options)
    attempt = _Attempt()

    async def error_cb(exc: Exception) -> None:
        nonlocal aborted
        if aborted:
            return  # the attempt is over; closing the half-open client reports again
        kind = None if connected else attempt.kind(exc)
        if kind is not None:
            aborted = True
            raise _Refused(kind, exc)
        if user_error_cb is not None:
            await user_error_cb(exc)

    if wait is not None:
        nc = await _connect_within(
            servers, {**options, "error_cb": error_cb}, wait, described, attempt
        )
        connected = True
        return nc
    nc = attempt.client = DirectClient()
    try:
        await nc.connect(servers=list(servers), **{**options, "error_cb": error_cb})
    except _Refused as refused:
        await _discard(nc)
        raise _failed(refused.kind, servers, refused.cause, described) from None
    except (NoServersError, OSError, TimeoutError) as exc:
        reached = attempt.kind(exc) or "unreachable"
        await _discard(nc)
        raise _failed(reached, servers, exc, described) from None
    except Exception as exc:
        kind = attempt.kind(exc)
        if kind is None:
            raise
        await _discard(nc)
        raise _failed(kind, servers, exc, described) from None
    connected = True
    return nc


_RETRY_PAUSE = 0.5  # seconds between connect rounds while waiting for a server


async def _connect_within(
    servers: Sequence[str],
    options: Mapping[str, Any],
    wait: float,
    described: ConnectionSettings,
    attempt: _Attempt,
) -> Any:
    """Connect, trying an unreachable server again until ``wait`` seconds have passed."""
    from nats.errors import NoServersError

    from ebind.direct import DirectClient

    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    user_cb = options["error_cb"]
    attempts = 0
    last: BaseException | None = None
    established = False  # once connected, every error goes to the caller's callback

    async def quiet_error_cb(exc: Exception) -> None:
        # Until connected, an unreachable server is reported once, at the end; refusals
        # (credentials, TLS) still end the attempt at once through the wrapped callback.
        nonlocal last
        if established or attempt.kind(exc) is not None:
            await user_cb(exc)
        else:
            last = exc  # the reason the final error gives
            log.debug("nats.connect_attempt_failed", error=redact(repr(exc)))

    while True:
        attempts += 1
        nc = attempt.client = DirectClient()
        # A round gets at least one full connect timeout, so wait=0 means "one try".
        remaining = max(deadline - loop.time(), float(options.get("connect_timeout", 2)) + 0.5)
        try:
            async with asyncio.timeout(remaining):
                await nc.connect(servers=list(servers), **{**options, "error_cb": quiet_error_cb})
            established = True
            return nc
        except _Refused as refused:
            await _discard(nc)
            raise _failed(refused.kind, servers, refused.cause, described) from None
        except (NoServersError, OSError, TimeoutError) as exc:
            kind = attempt.kind(exc)
            await _discard(nc)
            if kind is not None:
                raise _failed(kind, servers, exc, described) from None
            last = exc if not isinstance(exc, TimeoutError) or last is None else last
            if loop.time() + _RETRY_PAUSE >= deadline:
                err = _failed("unreachable", servers, last, described)
                raise ConnectionFailed(
                    f"{err}; gave up after {wait:g}s (connect_wait / --wait)",
                    server=err.server,
                ) from None
            log.debug("nats.waiting_for_server", attempt=attempts, servers=redact_servers(servers))
            await asyncio.sleep(_RETRY_PAUSE)


async def _discard(nc: Any) -> None:
    # The refusal came before nats-py started its read, ping and flush tasks, so the socket
    # is all there is to release; Client.close() would wait forever on a transport whose TLS
    # handshake failed.
    transport = getattr(nc, "_transport", None)
    if transport is None:
        return
    try:
        transport.close()
    except Exception as exc:  # the connection never completed; nothing to keep
        log.debug("nats.discard_failed", error=redact(repr(exc)))
    await asyncio.sleep(0)


def connect_options(
    servers: Sequence[str],
    explicit: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], ConnectionSettings]:
    """nats-py options from the environment under explicit ones, and what to report on failure."""
    env = settings_under(explicit, servers, ConnectionSettings.from_env(environ))
    merged = merge_options(nats_options(env), explicit)
    return merged, explicit_settings(explicit).over(env)
