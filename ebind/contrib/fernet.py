"""Fernet payload encryption (extra: ``pip install 'ebind-nats[crypto]'``).

.. code-block:: python

    from ebind.contrib.fernet import FernetCodec

    codec = FernetCodec([os.environ["EBIND_FERNET_KEY"]])   # newest key first
    app = App("billing", payload_codec=codec)

Fernet is AES-128-CBC with HMAC-SHA256 (authenticated, so a token altered at rest fails
to open). Rotation works like ``signing_keys``: the first key encrypts, every key
decrypts; put the new key first on every worker and producer, wait until tokens made with
the old key are gone (results, DLQ entries, DAG history past their retention), then drop
it. Make a key with :func:`generate_key`.
"""

from __future__ import annotations

from collections.abc import Iterable

from ebind.errors import InvalidArguments

__all__ = ["FernetCodec", "generate_key"]


def generate_key() -> str:
    """A new random Fernet key (url-safe base64 text; keep it secret)."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


class FernetCodec:
    """A payload codec on ``cryptography``'s MultiFernet (first key encrypts, all decrypt)."""

    def __init__(self, keys: Iterable[bytes | str]) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError as exc:  # pragma: no cover - the dev extra installs it
            raise ImportError(
                "FernetCodec needs the cryptography package: pip install 'ebind-nats[crypto]'"
            ) from exc
        if isinstance(keys, bytes | str):
            raise InvalidArguments(
                "FernetCodec takes a list of keys (first encrypts, all decrypt); wrap the "
                "key: FernetCodec([key])",
                parameter="keys",
            )
        fernets = []
        for i, key in enumerate(keys):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError) as exc:
                raise InvalidArguments(
                    f"FernetCodec keys[{i}] is not a Fernet key (32 url-safe base64-encoded "
                    "bytes); make one with ebind.contrib.fernet.generate_key()",
                    parameter="keys",
                ) from exc
        if not fernets:
            raise InvalidArguments("FernetCodec needs at least one key", parameter="keys")
        self._multi = MultiFernet(fernets)
        self.key_count = len(fernets)
        """How many keys decrypt (the first one also encrypts)."""

    def __repr__(self) -> str:
        return f"<ebind.FernetCodec keys={self.key_count}>"

    def encode(self, data: bytes) -> bytes:
        """Encrypt ``data`` with the first key; the token is url-safe base64 text."""
        return self._multi.encrypt(data)

    def decode(self, token: bytes) -> bytes:
        """Decrypt a token made with any of the keys (raises cryptography's InvalidToken)."""
        return self._multi.decrypt(token)
