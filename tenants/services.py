"""Write operations on tenants: signing tokens for the embedded HS256 realm, partner API keys."""

import hashlib
import secrets
import time
import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.backends import TokenBackend

from tenants.models import ApiKey, Realm, Tenant, TenantUser


def subject_for(tenant: Tenant, username: str) -> str:
    """The stable `sub` the embedded realm gives a username."""
    return str(uuid.uuid5(tenant.id, username))


def issue_token(
    *,
    realm: Realm,
    username: str,
    roles: list[str],
    teams: list[str],
    ttl_seconds: int = 3600,
    name: str = "",
    email: str = "",
    subject: str | None = None,
) -> str:
    """Sign a Keycloak-shaped token with an HS256 realm's secret."""
    if realm.algorithm != Realm.Algorithm.HS256 or not realm.secret:
        raise ValueError(f"realm {realm} has no HS256 secret to sign with")
    # The person is (tenant, realm, sub): a user of the same name in another realm is
    # someone else, whose `sub` this token must not carry.
    existing = TenantUser.objects.filter(tenant=realm.tenant, realm=realm, username=username).first()
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject or (existing.subject if existing else subject_for(realm.tenant, username)),
        "preferred_username": username,
        "name": name or (existing.name if existing else username.title()),
        "email": email or (existing.email if existing else f"{username}@{realm.tenant.slug}.example"),
        "realm_access": {"roles": roles},
        realm.teams_claim: teams,
        "iat": now,
        "exp": now + ttl_seconds,
        "typ": "Bearer",
    }
    if realm.issuer:
        claims["iss"] = realm.issuer
    if realm.audience:
        claims["aud"] = realm.audience
    return TokenBackend("HS256", signing_key=realm.secret).encode(claims)


API_KEY_PREFIX = "tk"


def hash_api_key_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def create_api_key(
    *, tenant: Tenant, name: str, scopes: list[str] | None = None, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key and return it with its full text, which is never stored or shown again.
    From `expires_at` on (when given) the key is refused as `API_KEY_EXPIRED`."""
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=prefix,
        secret_hash=hash_api_key_secret(secret),
        scopes=scopes if scopes is not None else [ApiKey.SCOPE_EVENTS_READ],
        expires_at=expires_at,
    )
    return key, f"{API_KEY_PREFIX}_{prefix}_{secret}"


def revoke_api_key(*, key: ApiKey) -> None:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
