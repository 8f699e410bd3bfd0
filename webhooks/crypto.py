"""Endpoint signing secrets: made, encrypted at rest, and used to sign.

Secrets are `whsec_` + base64 of 24 random bytes (the Standard Webhooks format). At rest
they are Fernet tokens under `WEBHOOKS_SECRET_KEYS` (a MultiFernet: the first key
encrypts, every key decrypts, so a key is rotated by putting a new one first and running
`manage.py rotate_webhook_keys`). Signing on the delivery path is plain `hmac` rather than
the `standardwebhooks` package: the package decodes the secret and formats the timestamp
on every call, and the signature is one line; the tests and the example receiver verify
with the package, which holds the two together."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
from functools import lru_cache
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.utils import timezone

if TYPE_CHECKING:
    from webhooks.models import Endpoint

SECRET_PREFIX = "whsec_"  # noqa: S105  (the format's prefix, not a secret)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def fernet() -> MultiFernet:
    keys = tuple(settings.WEBHOOKS_SECRET_KEYS)
    if not keys:
        # Development default: a key derived from SECRET_KEY (changing it loses the secrets).
        digest = hashlib.sha256(f"webhooks:{settings.SECRET_KEY}".encode()).digest()
        keys = (base64.urlsafe_b64encode(digest).decode(),)
    return _fernet(keys)


def encrypt_secret(secret: str) -> str:
    return fernet().encrypt(secret.encode()).decode()


class SecretUnreadable(Exception):
    """A stored secret that none of WEBHOOKS_SECRET_KEYS decrypts (a key was dropped before
    `rotate_webhook_keys` re-encrypted under the new one). Rotating the endpoint's secret
    gives it a readable one."""


def decrypt_secret(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("no configured key decrypts the endpoint's secret") from None


def signing_keys(endpoint: Endpoint) -> list[bytes]:
    """The endpoint's current secret, and the previous one during a rotation's overlap
    (left out if it is unreadable: the current one still signs). `SecretUnreadable` when
    the current one cannot be decrypted."""
    keys = [secret_bytes(decrypt_secret(endpoint.secret_encrypted))]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and expires > timezone.now():
        with contextlib.suppress(SecretUnreadable):
            keys.append(secret_bytes(decrypt_secret(endpoint.previous_secret_encrypted)))
    return keys


class AnswerSealer:
    """Keeps a stored API answer that shows a secret (an endpoint's creation or rotation,
    replayed for an `Idempotency-Key`) encrypted under the same keys as the secret itself
    (idempotency.services.Sealer)."""

    def seal(self, text: str) -> str:
        return encrypt_secret(text)

    def unseal(self, text: str) -> str:
        try:
            return decrypt_secret(text)
        except SecretUnreadable as error:
            raise ValueError(str(error)) from None


def reencrypt(token: str) -> str:
    """The same secret under the first (newest) key."""
    return fernet().rotate(token.encode()).decode()


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(keys: list[bytes], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of id.timestamp.body>` per
    key, space-separated (two during a rotation's overlap)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys)
