"""Client authentication and TLS of an embedded nats-server, as nats-server config text.

Pure: :meth:`ServerAuth.render` only builds text; ``ebind.embed`` appends it to the generated
config. Decentralised JWT auth (operator, resolver) has no settings here: pass its config
fragment as ``extra_config``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, fields

from ebind.errors import InvalidArguments

__all__ = ["ServerAuth", "generate_token"]

TOKEN_BYTES = 24


def generate_token() -> str:
    """A random URL-safe token (192 bits) for a development server."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def _quoted(value: str) -> str:
    # nats-server reads JSON-style double-quoted strings; non-ASCII stays UTF-8 text.
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ServerAuth:
    """What an embedded server demands of its clients; ``repr`` never shows a secret.

    Args:
        token: clients must present this token.
        users: ``(user, password)`` pairs allowed to connect.
        nkeys: public user nkeys (``U...``) allowed to connect.
        tls_cert: server certificate (PEM); with ``tls_key`` it turns TLS on for clients.
        tls_key: the certificate's private key (PEM).
        tls_ca: CA that client certificates must chain to (mutual TLS with ``tls_verify``).
        tls_verify: require and verify a client certificate (mutual TLS).
    """

    token: str | None = None
    users: tuple[tuple[str, str], ...] = ()
    nkeys: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_verify: bool = False

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value in (None, (), False):
                continue
            if f.name == "token":
                value = "***"
            elif f.name == "users":
                value = [f"{user}:***" for user, _ in self.users]
            shown.append(f"{f.name}={value!r}")
        return f"ServerAuth({', '.join(shown)})"

    def problems(self) -> list[str]:
        """Every bad combination, naming the setting (never a secret value)."""
        found: list[str] = []
        if self.token is not None and (self.users or self.nkeys):
            found.append("a token cannot be combined with users or nkeys on one server")
        if self.token is not None and not self.token.strip():
            found.append("the token is empty")
        for user, password in self.users:
            if not user or not password:
                found.append(f"user {user!r} needs a non-empty name and password")
        for key in self.nkeys:
            if not key.startswith("U"):
                found.append(f"nkey {key[:4]!r}... is not a public user nkey (starts with 'U')")
        if (self.tls_cert is None) != (self.tls_key is None):
            found.append("tls_cert and tls_key go together: the server presents both")
        if (self.tls_verify or self.tls_ca) and self.tls_cert is None:
            found.append("tls_ca / tls_verify need tls_cert and tls_key (TLS must be on)")
        if self.tls_verify and self.tls_ca is None:
            found.append("tls_verify needs tls_ca to verify client certificates against")
        return found

    def render(self) -> str:
        """The config fragment (``authorization`` and ``tls`` blocks).

        Raises:
            InvalidArguments: a bad combination (see :meth:`problems`).
        """
        found = self.problems()
        if found:
            raise InvalidArguments("bad embedded server auth: " + "; ".join(found))
        blocks: list[str] = []
        if self.token is not None:
            blocks.append(f"authorization {{\n  token: {_quoted(self.token)}\n}}")
        elif self.users or self.nkeys:
            entries = [
                f"    {{user: {_quoted(u)}, password: {_quoted(p)}}}" for u, p in self.users
            ] + [f"    {{nkey: {_quoted(k)}}}" for k in self.nkeys]
            blocks.append("authorization {\n  users: [\n" + "\n".join(entries) + "\n  ]\n}")
        if self.tls_cert is not None and self.tls_key is not None:
            lines = [
                f"  cert_file: {_quoted(self.tls_cert)}",
                f"  key_file: {_quoted(self.tls_key)}",
            ]
            if self.tls_ca is not None:
                lines.append(f"  ca_file: {_quoted(self.tls_ca)}")
            if self.tls_verify:
                lines.append("  verify: true")
            lines.append("  timeout: 2")
            blocks.append("tls {\n" + "\n".join(lines) + "\n}")
        return "\n".join(blocks)
