"""Test credentials made in the test: a PKI (``cryptography``) and nkeys/JWTs (``nkeys``).

The PKI has a CA, a server certificate for 127.0.0.1/localhost, client certificates, and a
second unrelated CA for the refused cases. The JWT helpers build an operator, a system
account, an application account with JetStream, and a user creds file, signed the way
``nsc`` signs them, for a server with a memory resolver.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files one test uses."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    cn: str,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
    names: list[x509.GeneralName],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _pem(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(
    directory: Path, *, server_names: tuple[str, ...] = ("localhost",), with_ip: bool = True
) -> Pki:
    """Write a CA, a server certificate for ``server_names`` (and 127.0.0.1 with ``with_ip``),
    client certificates from that CA and from an unrelated one, all under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("ebind test CA")
    other, other_key = _ca("unrelated CA")
    san: list[x509.GeneralName] = (
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))] if with_ip else []
    )
    san += [x509.DNSName(n) for n in server_names]
    server, server_key = _leaf("ebind test server", ca, ca_key, server=True, names=san)
    client, client_key = _leaf("ebind test client", ca, ca_key, server=False, names=[])
    stranger, stranger_key = _leaf("stranger", other, other_key, server=False, names=[])
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        other_ca=directory / "other-ca.pem",
        other_client_cert=directory / "stranger.pem",
        other_client_key=directory / "stranger-key.pem",
    )
    _pem(ca, pki.ca)
    _pem(other, pki.other_ca)
    _pem(server, pki.server_cert)
    _write_key(server_key, pki.server_key)
    _pem(client, pki.client_cert)
    _write_key(client_key, pki.client_key)
    _pem(stranger, pki.other_client_cert)
    _write_key(stranger_key, pki.other_client_key)
    return pki


# --- nkeys and JWTs ---------------------------------------------------------------------


def new_keypair(prefix: int) -> tuple[bytes, nkeys.KeyPair]:
    """A fresh seed and its key pair (``prefix`` is an ``nkeys.PREFIX_BYTE_*``)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed, nkeys.from_seed(bytearray(seed))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def encode_jwt(claims: dict[str, object], issuer: nkeys.KeyPair) -> str:
    """A NATS JWT (``ed25519-nkey``) for ``claims``, its ``jti`` and ``iss`` filled in."""
    body = {**claims, "iat": int(time.time()), "iss": issuer.public_key.decode()}
    body["jti"] = (
        base64.b32encode(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest())
        .decode()
        .rstrip("=")
    )
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body).encode())
    signature = issuer.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


_UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
_JETSTREAM = {
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
    "max_ack_pending": -1,
    "mem_max_stream_bytes": -1,
    "disk_max_stream_bytes": -1,
    "max_bytes_required": False,
}


@dataclass(frozen=True)
class Decentralised:
    """A JWT setup: the server config fragment and a user creds file per account user."""

    server_config: str
    creds: Path
    stranger_creds: Path


def _creds_text(jwt: str, seed: bytes) -> str:
    return (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n"
    )


def make_decentralised(directory: Path) -> Decentralised:
    """Operator, system account, an app account with JetStream and one user, written as a
    creds file; ``stranger_creds`` is a user signed by an account the server never saw."""
    directory.mkdir(parents=True, exist_ok=True)
    _, operator = new_keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, system = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, account = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, rogue = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    op_jwt = encode_jwt(
        {
            "sub": operator.public_key.decode(),
            "name": "ebind-test-operator",
            "nats": {
                "system_account": system.public_key.decode(),
                "type": "operator",
                "version": 2,
            },
        },
        operator,
    )

    def account_jwt(kp: nkeys.KeyPair, name: str, jetstream: bool) -> str:
        limits = {**_UNLIMITED, **(_JETSTREAM if jetstream else {})}
        nats = {"limits": limits, "default_permissions": {"pub": {}, "sub": {}}}
        nats.update(type="account", version=2)
        return encode_jwt({"sub": kp.public_key.decode(), "name": name, "nats": nats}, operator)

    def user_creds(issuer: nkeys.KeyPair, path: Path) -> Path:
        seed, user = new_keypair(nkeys.PREFIX_BYTE_USER)
        nats = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
        nats.update(type="user", version=2)
        jwt = encode_jwt({"sub": user.public_key.decode(), "name": "u", "nats": nats}, issuer)
        path.write_text(_creds_text(jwt, seed))
        path.chmod(0o600)
        return path

    config = (
        f"operator: {json.dumps(op_jwt)}\n"
        f"system_account: {system.public_key.decode()}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f"  {system.public_key.decode()}: {json.dumps(account_jwt(system, 'SYS', False))}\n"
        f"  {account.public_key.decode()}: {json.dumps(account_jwt(account, 'APP', True))}\n"
        "}\n"
    )
    return Decentralised(
        server_config=config,
        creds=user_creds(account, directory / "user.creds"),
        stranger_creds=user_creds(rogue, directory / "stranger.creds"),
    )
