"""Who is calling: the `Authorization` / `x-tenantid` / `realmname` / `issupportrequest`
headers turned into one `Caller` (tenant, realm, user, roles, teams, support flag).

Every view and stream goes through `resolve_caller`, so the checks and their error
codes are the same everywhere."""

from __future__ import annotations

import hmac
import logging
import math
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from jwt.exceptions import PyJWTError
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenBackendExpiredToken

from core.http import ApiError
from tenants.models import ApiKey, Realm, Tenant, TenantUser

logger = logging.getLogger(__name__)

ROLE_USER = "user"
ROLE_AGENT = "agent"
ROLE_ADMIN = "admin"
ROLE_SUPPORT = "support"
ROLE_PARTNER = "partner"
API_ROLES = frozenset({ROLE_USER, ROLE_AGENT, ROLE_ADMIN, ROLE_PARTNER})

_REALM_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_REALM_CACHE_SECONDS = 5.0
_USER_REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class Caller:
    tenant: Tenant
    realm: Realm | None
    user: TenantUser
    roles: frozenset[str]
    teams: tuple[str, ...]
    support: bool = False
    token_expires_at: datetime | None = None
    # The credential the caller was resolved from, for connections that outlive their
    # request (`check_stream_caller`): the bearer token, or the session's key. Never shown.
    token: str | None = field(default=None, repr=False, compare=False)
    session_key: str | None = field(default=None, repr=False, compare=False)

    @property
    def is_agent(self) -> bool:
        return bool(self.roles & {ROLE_AGENT, ROLE_ADMIN})

    @property
    def is_admin(self) -> bool:
        return ROLE_ADMIN in self.roles


def resolve_caller(headers: Mapping[str, str]) -> Caller:
    """Resolve request headers (case-insensitive mapping) into a Caller or raise ApiError."""
    tenant, realm, token, claims, support = _verified_token(headers)
    roles = _roles_from(claims)
    if not roles & API_ROLES:
        raise ApiError(403, "MISSING_ROLE", "The token has none of the roles this API needs.", sorted(API_ROLES))
    if support and ROLE_SUPPORT not in roles:
        raise ApiError(403, "SUPPORT_ROLE_REQUIRED", "issupportrequest: true needs the `support` role.")
    teams = _teams_from(claims, realm.teams_claim)
    user = _user_from_claims(tenant, realm, claims, roles, teams)
    return Caller(
        tenant=tenant,
        realm=realm,
        user=user,
        roles=roles,
        teams=teams,
        support=support,
        token_expires_at=datetime.fromtimestamp(claims["exp"], tz=UTC),
        token=token,
    )


def _verified_token(headers: Mapping[str, str]) -> tuple[Tenant, Realm, str, dict[str, Any], bool]:
    """The headers checked in their order (each refusal an ApiError) up to the verified
    token: its tenant, realm, the token, its claims and the support flag. Writes nothing."""
    tenant_id = _parse_tenant_id(headers.get("x-tenantid"))
    realm_name = _parse_realm_name(headers.get("realmname"))
    support = _parse_support_flag(headers.get("issupportrequest"))
    token = _parse_bearer(headers.get("authorization"))  # before any lookup (docs/api.md)
    tenant, realm = _lookup_realm(tenant_id, realm_name)
    claims, token = _verify_token(realm, token)
    return tenant, realm, token, claims, support


def resolve_request_caller(request: Any) -> Caller | PartnerKeyCaller:
    """The one resolver of a request (a Django `HttpRequest`; DRF's authentication passes
    its `_request`): a partner API key, the headers, or, when neither an API key nor an
    Authorization header is sent, the session of a Django account linked to a tenant user
    (a same-origin browser page, see `_session_applies`). Session callers of unsafe
    methods must pass Django's CSRF check (`403 CSRF_FAILED`). Which of them may call the
    route is the policy's (`tenants.policy.authorized_caller`). Blocking: call it through
    run_db."""
    key = api_key_from(request.headers)
    if key is not None:
        return resolve_api_key(key, request.headers)
    refusal = getattr(request, "_bearer_refusal", None)
    if refusal is not None:
        raise refusal  # found by bearer_token_refused; its identity provider is not asked twice
    if "authorization" not in request.headers:
        account = getattr(request, "user", None)
        signed_in = account is not None and account.is_authenticated
        tenant_user = getattr(account, "tenant_user", None) if signed_in else None
        if tenant_user is not None and _session_applies(request, tenant_user):
            if request.method not in ("GET", "HEAD", "OPTIONS", "TRACE"):
                _check_csrf(request)
            return caller_for_user(tenant_user, session_key=request.session.session_key)
    return resolve_caller(request.headers)


def bearer_token_refused(request: Any) -> bool:
    """Whether the request's bearer token will be refused (`401`, or `404` for its tenant
    or realm), found without writing anything. A write asks this before it waits for one
    of its worker's write slots (core.views, core.write_slots), so that:

    - a request that can only be refused does not take a place in that queue;
    - a token seen for the first time is verified, with the fetch of its identity
      provider's keys (JWKS, up to 30 s when the provider hangs) if need be, before the
      write holds a slot rather than while: one tenant's slow identity provider would
      otherwise hold up every tenant's writes on the worker.

    The request is then resolved in full inside its transaction (`resolve_request_caller`),
    which answers the refusal kept on the request, or finds the accepted token in the
    verified-token cache (`_verify_token`, about a microsecond). API keys and sessions are
    not looked at here: they are resolved from the database alone. Blocking (the realm's
    lookup): run it where the database may be used."""
    headers = request.headers
    if api_key_from(headers) is not None or "authorization" not in headers:
        return False
    try:
        _verified_token(headers)
    except ApiError as refusal:
        request._bearer_refusal = refusal
        return True
    return False


def _session_applies(request: Any, user: TenantUser) -> bool:
    """Whether the session cookie may stand for the caller. CORS (tenants.cors) admits a
    credentialed cross-origin request on the strength of `x-tenantid` alone, so a page on
    another tenant's allowed origin would otherwise read this user's data with the
    browser's cookie: the session is ignored (the request then needs a token, `401`) when
    the request comes from another origin (an `Origin` whose host is not this server's),
    or names another tenant in `x-tenantid` than the session user's."""
    origin = request.headers.get("origin")
    if origin is not None:
        try:
            host = request.get_host()
        except Exception:  # DisallowedHost: not our own origin, whatever it says
            return False
        if urlsplit(origin).netloc.lower() != host.lower():
            return False
    tenant_header = request.headers.get("x-tenantid")
    if tenant_header is None:
        return True
    try:  # the same tenant however its UUID is spelt, as for a token or an API key
        return _parse_tenant_id(tenant_header) == user.tenant_id
    except ApiError:
        return False


def _check_csrf(request: Any) -> None:
    from django.middleware.csrf import CsrfViewMiddleware

    refused = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
    if refused is not None:
        raise ApiError(403, "CSRF_FAILED", "A session request needs the CSRF token (X-CSRFToken header).")


def caller_for_user(user: TenantUser, *, support: bool = False, session_key: str | None = None) -> Caller:
    """A Caller for a known user without a token (browser session: its `session_key`;
    management commands). A deactivated tenant or realm refuses its session users as it
    refuses its tokens."""
    require_active(user.tenant_id, user.realm_id)
    return Caller(
        tenant=user.tenant,
        realm=None,
        user=user,
        roles=frozenset(user.roles),
        teams=tuple(user.teams),
        support=support,
        session_key=session_key,
    )


def require_active(tenant_id: uuid.UUID, realm_id: int | None) -> None:
    """Raise `404 TENANT_NOT_FOUND` / `REALM_NOT_FOUND` (the token path's answers) unless
    the tenant, and the realm when there is one, are active. Uncached: it is the check
    that ends sessions and sockets of a deactivated tenant."""
    if not Tenant.objects.filter(pk=tenant_id, active=True).exists():
        raise ApiError(404, "TENANT_NOT_FOUND", "No active tenant has this id.", {"tenantId": str(tenant_id)})
    if realm_id is not None and not Realm.objects.filter(pk=realm_id, active=True).exists():
        raise ApiError(404, "REALM_NOT_FOUND", "The tenant has no active realm of this name.")


def tenant_named_by(request: Any) -> uuid.UUID | None:
    """The tenant a request's `x-tenantid` header names, before it is authenticated (for
    a write key), or None when it names none."""
    try:
        return _parse_tenant_id(request.headers.get("x-tenantid"))
    except ApiError:
        return None


def _parse_tenant_id(value: str | None) -> uuid.UUID:
    if not value:
        raise ApiError(400, "MISSING_HEADER", "The x-tenantid header is required.", {"header": "x-tenantid"})
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise ApiError(
            400, "INVALID_HEADER", "The x-tenantid header must be a UUID.", {"header": "x-tenantid"}
        ) from None


def _parse_realm_name(value: str | None) -> str:
    if not value:
        raise ApiError(400, "MISSING_HEADER", "The realmname header is required.", {"header": "realmname"})
    if not _REALM_NAME.match(value.strip()):
        raise ApiError(
            400, "INVALID_HEADER", "The realmname header is not a valid realm name.", {"header": "realmname"}
        )
    return value.strip()


def _parse_support_flag(value: str | None) -> bool:
    if value is None or value.strip() == "":
        return False
    lowered = value.strip().lower()
    if lowered not in {"true", "false"}:
        raise ApiError(
            400, "INVALID_HEADER", "The issupportrequest header must be true or false.", {"header": "issupportrequest"}
        )
    return lowered == "true"


def _parse_bearer(value: str | None) -> str:
    if not value:
        raise ApiError(401, "MISSING_TOKEN", "The Authorization header with a Bearer token is required.")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or token.count(".") != 2:
        raise ApiError(401, "INVALID_TOKEN", "The Authorization header must be `Bearer <jwt>`.")
    return token.strip()


# Realm lookups are cached per process for a few seconds: the count endpoint is polled by
# every open tab. A deactivated tenant or realm is refused at most this much later.
_realm_cache: dict[tuple[uuid.UUID, str], tuple[float, Tenant, Realm]] = {}
_backend_cache: dict[tuple[int, str], TokenBackend] = {}
_user_cache: dict[tuple[uuid.UUID, int, str], tuple[float, dict[str, Any], TenantUser]] = {}
# Tokens that passed `_verify_token`, by (the realm's verifier, its teams claim, token): until when each is
# valid (a Unix time), its claims, and the token's string as first seen. Bounded; the oldest entry makes room.
_claims_cache: dict[tuple[TokenBackend, str, str], tuple[float, dict[str, Any], str]] = {}
_CLAIMS_CACHE_SIZE = 10_000
_CACHED_TOKEN_MAX = 8192  # characters; a longer token is verified every time
_cache_lock = threading.Lock()


def _lookup_realm(tenant_id: uuid.UUID, realm_name: str) -> tuple[Tenant, Realm]:
    key = (tenant_id, realm_name)
    now = time.monotonic()
    cached = _realm_cache.get(key)
    if cached and cached[0] > now:
        return cached[1], cached[2]
    tenant = Tenant.objects.filter(id=tenant_id, active=True).first()
    if tenant is None:
        raise ApiError(404, "TENANT_NOT_FOUND", "No active tenant has this id.", {"tenantId": str(tenant_id)})
    realm = Realm.objects.filter(tenant=tenant, name=realm_name, active=True).first()
    if realm is None:
        raise ApiError(404, "REALM_NOT_FOUND", "The tenant has no active realm of this name.", {"realm": realm_name})
    with _cache_lock:
        _realm_cache[key] = (now + _REALM_CACHE_SECONDS, tenant, realm)
    return tenant, realm


def clear_realm_cache() -> None:
    with _cache_lock:
        _realm_cache.clear()
        _backend_cache.clear()
        _user_cache.clear()
        _claims_cache.clear()


def token_backend_for(realm: Realm) -> TokenBackend:
    """The realm's verifier. PyJWT has one leeway for `iat`, `nbf` and `exp`: it is the
    clock skew allowed for `iat`/`nbf` (JWT_CLOCK_SKEW_SECONDS) when that is the larger,
    and `_checked_claims` holds `exp` to JWT_LEEWAY_SECONDS itself."""
    key = _backend_key(realm)
    backend = _backend_cache.get(key)
    if backend is None:
        if realm.algorithm == Realm.Algorithm.HS256:
            backend = TokenBackend(
                "HS256",
                signing_key=realm.secret,
                issuer=realm.issuer or None,
                audience=realm.audience or None,
                leeway=_pyjwt_leeway(),
            )
        else:
            backend = TokenBackend(
                "RS256",
                verifying_key=realm.public_key or "",
                jwk_url=None if realm.public_key else (realm.jwks_url or None),
                issuer=realm.issuer or None,
                audience=realm.audience or None,
                leeway=_pyjwt_leeway(),
            )
        with _cache_lock:
            _backend_cache[key] = backend
    return backend


def _backend_key(realm: Realm) -> tuple[Any, str]:
    # Whatever changes how a token is verified makes a new verifier (and so new entries
    # in the claims cache, whose keys hold it).
    return realm.pk, "|".join(
        [realm.algorithm, realm.secret, realm.public_key, realm.jwks_url, realm.issuer, realm.audience]
    )


def _expiry_leeway() -> float:
    return float(settings.SIMPLE_JWT["LEEWAY"])


def _pyjwt_leeway() -> float:
    return max(_expiry_leeway(), float(settings.JWT_CLOCK_SKEW_SECONDS))


def _verify_token(realm: Realm, token: str) -> tuple[dict[str, Any], str]:
    """The token's claims, signature and every claim we store checked: nothing is
    written for a token that fails here (each failure is 401); and the token's string as
    remembered, which every caller of the same token then holds (an open stream keeps its
    token for its credential checks: a user's eight streams keep one copy, not eight).

    A token that passed is remembered until it expires: a client sends the same token
    with every request, and checking it again (the signature, and PyJWT's and our
    character checks over every byte) costs about 0.12 ms, a tenth of a count poll
    (docs/api.md). The entry is keyed by the realm's verifier and teams claim as well as the
    token, so a realm whose key, issuer or teams claim changes checks its tokens afresh;
    the returned claims are shared, read them only."""
    backend = token_backend_for(realm)
    # The claim the teams are read from is checked with the token, so it keys it too.
    key = (backend, realm.teams_claim, token)
    cached = _claims_cache.get(key)
    if cached is not None:
        valid_until, claims, remembered = cached
        if time.time() < valid_until:
            return claims, remembered
        raise ApiError(401, "TOKEN_EXPIRED", "The token has expired.")
    claims = _checked_claims(realm, backend, token)
    if len(token) > _CACHED_TOKEN_MAX:
        return claims, token  # a realm with its own identity provider could fill the cache with huge tokens
    with _cache_lock:
        if len(_claims_cache) >= _CLAIMS_CACHE_SIZE:
            # The oldest entry goes (dicts keep insertion order).
            _claims_cache.pop(next(iter(_claims_cache)), None)
        # PyJWT's own rule: expired once `exp` is more than the leeway past.
        _claims_cache[key] = (claims["exp"] + _expiry_leeway(), claims, token)
    return claims, token


def _checked_claims(realm: Realm, backend: TokenBackend, token: str) -> dict[str, Any]:
    if realm.algorithm == Realm.Algorithm.HS256 and not realm.secret:
        raise ApiError(401, "INVALID_TOKEN", "The realm has no key to verify tokens with.")
    try:
        claims = backend.decode(token)
    except TokenBackendExpiredToken:
        raise ApiError(401, "TOKEN_EXPIRED", "The token has expired.") from None
    except TokenBackendError:
        raise ApiError(401, "INVALID_TOKEN", "The token is not valid for this realm.") from None
    except PyJWTError:
        # What simplejwt leaves untranslated: the realm's key material cannot verify
        # anything (a public key entered empty or not as a PEM; a JWKS with no key of a
        # usable type). The operator's to fix, said in the log; the caller's token is
        # refused as one the realm cannot verify, as for an HS256 realm without a secret.
        logger.warning("event=realm_key_unusable tenant=%s realm=%s", realm.tenant_id, realm.name)
        raise ApiError(401, "INVALID_TOKEN", "The realm has no usable key to verify tokens with.") from None
    except (ValueError, TypeError, OverflowError, RecursionError):
        # Odd JSON the JWT library does not anticipate (a header nested thousands deep,
        # numbers it cannot convert): the token is unusable, not a server fault.
        raise ApiError(401, "INVALID_TOKEN", "The token is not valid for this realm.") from None
    if not isinstance(claims, dict):
        raise ApiError(401, "INVALID_TOKEN", "The token's payload is not a JSON object.")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise ApiError(401, "INVALID_TOKEN", "The token has no expiry (`exp`).")
    if not math.isfinite(exp) or exp > _MAX_TIMESTAMP:
        raise ApiError(401, "INVALID_TOKEN", "The token's expiry (`exp`) is not a usable time.", {"claim": "exp"})
    if exp + _expiry_leeway() <= time.time():
        # PyJWT allowed it the clock skew meant for `iat`/`nbf` (token_backend_for).
        raise ApiError(401, "TOKEN_EXPIRED", "The token has expired.")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise ApiError(401, "INVALID_TOKEN", "The token has no subject (`sub`).")
    _check_claim_text("sub", sub, _SUBJECT_MAX, strict=True)
    for claim, limit in _PROFILE_CLAIMS.items():
        value = claims.get(claim)
        if value is not None:
            if not isinstance(value, str):
                raise ApiError(401, "INVALID_TOKEN", f"The token's `{claim}` must be a string.", {"claim": claim})
            _check_claim_text(claim, value, limit)
    for claim in ("realm_access", realm.teams_claim):
        entries = claims.get(claim)
        if claim == "realm_access":
            entries = entries.get("roles") if isinstance(entries, dict) else None
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, str):
                _check_claim_text(claim, entry, _GROUP_MAX)
    return claims


# Longest values a token may carry for what we store: the column sizes (a longer `sub`
# cannot be stored whole, and a cut one could name someone else).
_SUBJECT_MAX = 255
_PROFILE_CLAIMS = {"preferred_username": 255, "name": 255, "email": 254}
_GROUP_MAX = 255
_MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z, the last second datetime can hold


def _check_claim_text(claim: str, value: str, limit: int, *, strict: bool = False) -> None:
    """Refuse text no column can store (NUL and lone surrogates break PostgreSQL) and, for
    an identifier (`strict`), any invisible or control character that makes two ids look
    alike."""
    bad = _ID_FORBIDDEN if strict else _TEXT_FORBIDDEN
    if len(value) > limit or any(unicodedata.category(ch) in bad for ch in value):
        raise ApiError(
            401,
            "INVALID_TOKEN",
            f"The token's `{claim}` is too long or contains control characters.",
            {"claim": claim, "maxLength": limit},
        )


_TEXT_FORBIDDEN = frozenset({"Cc", "Cs"})
_ID_FORBIDDEN = frozenset({"Cc", "Cs", "Cf", "Co", "Cn", "Zl", "Zp"})


def _profile_from(claims: Mapping[str, Any], subject: str) -> dict[str, Any]:
    """The profile fields a token sets (already checked by _verify_token)."""
    return {
        "username": (claims.get("preferred_username") or subject)[:150],
        "name": (claims.get("name") or "")[:255],
        "email": (claims.get("email") or "")[:254],
    }


def _roles_from(claims: Mapping[str, Any]) -> frozenset[str]:
    realm_access = claims.get("realm_access")
    roles = realm_access.get("roles") if isinstance(realm_access, dict) else None
    if not isinstance(roles, list):
        return frozenset()
    return frozenset(r for r in roles if isinstance(r, str))


def _teams_from(claims: Mapping[str, Any], claim_name: str) -> tuple[str, ...]:
    teams = claims.get(claim_name)
    if not isinstance(teams, list):
        return ()
    # Keycloak group paths look like "/operation"; the team is the last segment.
    return tuple(sorted({t.rstrip("/").rsplit("/", 1)[-1] for t in teams if isinstance(t, str) and t.strip("/")}))


def _may_refresh_last_seen(user: TenantUser) -> bool:
    """Whether to write the user's last-seen time now. Inside a write's transaction the
    update keeps the user's row locked until COMMIT: another write of the same user that
    also found the time stale (several at once, the first ones after a minute) would wait
    for it, holding its write slot (core.write_slots), and a client sending many writes at
    once would take them in turn. One that finds the row being refreshed skips it
    instead: the time is a minute's precision anyway."""
    features = connection.features
    if not (
        connection.in_atomic_block
        and features.has_select_for_update_skip_locked
        and features.has_select_for_no_key_update
    ):
        return True  # autocommit (a read): the update is over at once
    locked = TenantUser.objects.select_for_update(skip_locked=True, no_key=True).filter(pk=user.pk)
    return bool(list(locked.values_list("pk", flat=True)))


def _user_from_claims(
    tenant: Tenant, realm: Realm, claims: Mapping[str, Any], roles: frozenset[str], teams: tuple[str, ...]
) -> TenantUser:
    """The person the token names: (tenant, realm, sub), created or refreshed. The same
    `sub` from another realm of the tenant is another person."""
    subject = claims["sub"]
    fields = _profile_from(claims, subject)
    fields["roles"] = sorted(roles)
    fields["teams"] = list(teams)
    cache_key = (tenant.id, realm.pk, subject)
    cached = _user_cache.get(cache_key)
    if cached is not None and cached[0] > time.monotonic() and cached[1] == fields:
        # Same claims seen a moment ago: the record is current (the count endpoint is
        # polled by every open tab, so this saves a query on most requests).
        return cached[2]
    identity = {"tenant": tenant, "realm": realm, "subject": subject}
    user = TenantUser.objects.filter(**identity).first()
    now = timezone.now()
    if user is None:
        try:
            with transaction.atomic():
                return TenantUser.objects.create(**identity, last_seen_at=now, **fields)
        except IntegrityError:
            # Same person created by a concurrent request, or the username is taken by
            # another person: take the existing row, or keep the username unique.
            user = TenantUser.objects.filter(**identity).first()
            if user is None:
                fields["username"] = f"{fields['username'][:140]}-{uuid.uuid4().hex[:8]}"
                return TenantUser.objects.create(**identity, last_seen_at=now, **fields)
    changed = {k: v for k, v in fields.items() if k != "username" and getattr(user, k) != v}
    stale = user.last_seen_at is None or now - user.last_seen_at > timedelta(seconds=_USER_REFRESH_SECONDS)
    if changed or (stale and _may_refresh_last_seen(user)):
        for name, value in changed.items():
            setattr(user, name, value)
        user.last_seen_at = now
        TenantUser.objects.filter(pk=user.pk).update(last_seen_at=now, **changed)
    with _cache_lock:
        if len(_user_cache) > 10_000:
            _user_cache.clear()
        _user_cache[cache_key] = (time.monotonic() + _REALM_CACHE_SECONDS, fields, user)
    return user


# --- partner API keys -----------------------------------------------------------------


@dataclass(frozen=True)
class PartnerKeyCaller:
    """A partner system calling with a tenant-scoped API key (event API and websocket)."""

    tenant: Tenant
    api_key: ApiKey


EventReader = Caller | PartnerKeyCaller
_KEY_TOUCH_SECONDS = 60.0


def api_key_from(headers: Mapping[str, str]) -> str | None:
    """The partner API key a request carries (`X-API-Key: <key>` or
    `Authorization: ApiKey <key>`), or None. Both headers at once are refused (`401
    AMBIGUOUS_CREDENTIALS`): `X-API-Key` won silently, so a request naming two credentials
    (of two tenants, or a key and a user's token) ran as whichever a proxy did not check."""
    key = headers.get("x-api-key")
    if key is not None and "authorization" in headers:
        raise ApiError(
            401,
            "AMBIGUOUS_CREDENTIALS",
            "Send one credential: X-API-Key or Authorization, not both.",
            {"headers": ["x-api-key", "authorization"]},
        )
    if key is None:
        scheme, _, value = (headers.get("authorization") or "").strip().partition(" ")
        if scheme.lower() == "apikey":
            key = value
    return key


def resolve_event_reader(headers: Mapping[str, str]) -> EventReader:
    """Who is calling the event API or websocket: a partner API key, or a JWT caller.
    Whether this caller may read the log is the policy's (tenants.policy)."""
    key = api_key_from(headers)
    if key is not None:
        return resolve_api_key(key, headers)
    return resolve_caller(headers)


def resolve_api_key(value: str, headers: Mapping[str, str]) -> PartnerKeyCaller:
    """The partner a key names, checked against the request's other headers (`headers`, a
    case-insensitive mapping or one with lower-case names)."""
    from tenants.services import API_KEY_PREFIX, hash_api_key_secret

    # Header syntax before any lookup, as for a token ("Who is calling"); and the same
    # UUID however it is written, as for a token.
    tenant_header = headers.get("x-tenantid")
    tenant_id = _parse_tenant_id(tenant_header) if tenant_header and tenant_header.strip() else None
    support = _parse_support_flag(headers.get("issupportrequest"))
    parts = value.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
        raise ApiError(401, "INVALID_API_KEY", "The API key is not valid.")
    _, prefix, secret = parts
    key = ApiKey.objects.select_related("tenant").filter(prefix=prefix).first()
    if key is None or not hmac.compare_digest(key.secret_hash, hash_api_key_secret(secret)):
        raise ApiError(401, "INVALID_API_KEY", "The API key is not valid.")
    _check_api_key_holds(key)
    if tenant_id is not None and tenant_id != key.tenant_id:
        raise ApiError(401, "INVALID_API_KEY", "The API key belongs to another tenant.")
    if support:
        # A key has no roles, so never `support`; the flag would be recorded on what it does.
        raise ApiError(403, "SUPPORT_ROLE_REQUIRED", "issupportrequest: true needs the `support` role; a key has none.")
    # Which scope a route needs is the policy's (`Rule.api_key_scope`, tenants.policy).
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > _KEY_TOUCH_SECONDS:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return PartnerKeyCaller(tenant=key.tenant, api_key=key)


def _check_api_key_holds(key: ApiKey) -> None:
    if key.revoked_at is not None:
        raise ApiError(401, "REVOKED_API_KEY", "The API key has been revoked.")
    if key.expired:
        raise ApiError(401, "API_KEY_EXPIRED", "The API key has expired.", {"expiredAt": key.expires_at.isoformat()})
    if not key.tenant.active:
        raise ApiError(401, "INVALID_API_KEY", "The API key's tenant is not active.")


def stream_caller_check_is_cached(caller: Caller) -> bool:
    """Whether `check_stream_caller` would decide for this caller from the process's caches
    alone (a token whose realm and claims are remembered): it then reads nothing and
    verifies nothing, and an open stream may ask it on the event loop rather than through
    a database thread (a hop per stream per period, thousands of streams)."""
    if caller.token is None or caller.realm is None:
        return False
    cached = _realm_cache.get((caller.tenant.pk, caller.realm.name))
    if not cached or cached[0] <= time.monotonic():
        return False
    realm = cached[2]
    backend = _backend_cache.get(_backend_key(realm))
    return backend is not None and (backend, realm.teams_claim, caller.token) in _claims_cache


def check_stream_caller(caller: Caller, *, fresh: bool = False) -> None:
    """Raise the ApiError that ends an open stream (events.sse) whose caller may no longer
    have it. Streams outlive the request that opened them by up to an hour, so what a new
    request would refuse must end them too:

    - a token: its tenant and realm still active and the token still valid for the realm's
      current key, issuer and audience (`TENANT_NOT_FOUND`, `REALM_NOT_FOUND`,
      `INVALID_TOKEN`, `TOKEN_EXPIRED`, as a request is answered). Asked of the process's
      realm and token caches a request uses, so streams add no query per stream: one per
      realm every 5 s, and a token is verified again only when its realm changed.
    - a dashboard session: still signed in to the account linked to the stream's user
      (signed out in another tab, expired, the account deactivated or its password
      changed: `SESSION_ENDED`), the tenant and realm active, and the user's roles and
      teams those the stream opened with (`ACCESS_CHANGED`: reopened, the stream serves
      what the user may see now). Three indexed reads.

    A caller without either (management commands) has nothing to check. `fresh` reads
    the tenant and realm again instead of asking the cache (a few connections that must
    see a change at their next check: the partner websocket). Blocking: call it through
    run_db."""
    if caller.token is not None and caller.realm is not None:
        if fresh:
            require_active(caller.tenant.pk, caller.realm.pk)
            # The realm as it is now: a rotated secret or a replaced public key refuses the
            # tokens signed with the old one (the verified-token cache is keyed by the key).
            realm = Realm.objects.filter(pk=caller.realm.pk).first()
            if realm is None:
                raise ApiError(404, "REALM_NOT_FOUND", "The tenant has no active realm of this name.")
        else:
            _, realm = _lookup_realm(caller.tenant.pk, caller.realm.name)
        _verify_token(realm, caller.token)
    elif caller.session_key is not None:
        _check_session_holds(caller)


def _check_session_holds(caller: Caller) -> None:
    # Django's own reading of a request's session (expiry, the account active, the
    # password unchanged), as the next request of that browser would get it.
    store = import_module(settings.SESSION_ENGINE).SessionStore(caller.session_key)
    account = get_user(_SessionOnly(store))
    user = None
    if account.is_authenticated:
        user = TenantUser.objects.select_related("tenant", "realm").filter(pk=caller.user.pk, login=account).first()
    if user is None:
        raise ApiError(401, "SESSION_ENDED", "The session has ended; sign in again.")
    if not user.tenant.active:
        raise ApiError(404, "TENANT_NOT_FOUND", "No active tenant has this id.", {"tenantId": str(user.tenant_id)})
    if user.realm is not None and not user.realm.active:
        raise ApiError(404, "REALM_NOT_FOUND", "The tenant has no active realm of this name.")
    if frozenset(user.roles) != caller.roles or tuple(user.teams) != caller.teams:
        raise ApiError(
            403, "ACCESS_CHANGED", "The user's roles or teams have changed; reconnect to see what they may see now."
        )


@dataclass
class _SessionOnly:
    """What `django.contrib.auth.get_user` reads of a request: its session."""

    session: Any


def check_still_valid(reader: EventReader) -> EventReader:
    """Raise the ApiError a new request with `reader`'s credential would get now, if the
    credential stopped holding: a revoked, deleted or expired key or its tenant
    deactivated (the codes of `resolve_api_key`: a deleted key is `INVALID_API_KEY`, as
    an unknown one), an expired token (`TOKEN_EXPIRED`), the token's tenant or realm
    deactivated (`TENANT_NOT_FOUND` / `REALM_NOT_FOUND`, as `resolve_caller` answers), or
    its realm's key, issuer or audience changed so that it no longer verifies
    (`INVALID_TOKEN`). Else the reader as it stands now (a key with its current scopes,
    which the caller asks the policy about again). For connections that outlive their
    handshake (the partner websocket); uncached, so a change is seen at the next check.
    Blocking: call it through run_db."""
    if isinstance(reader, PartnerKeyCaller):
        key = ApiKey.objects.select_related("tenant").filter(pk=reader.api_key.pk).first()
        if key is None:
            raise ApiError(401, "INVALID_API_KEY", "The API key is not valid.")
        _check_api_key_holds(key)
        return PartnerKeyCaller(tenant=key.tenant, api_key=key)
    if reader.token_expires_at is not None and reader.token_expires_at <= timezone.now():
        raise ApiError(401, "TOKEN_EXPIRED", "The token has expired.")
    if reader.token is None:
        require_active(reader.tenant.pk, reader.realm.pk if reader.realm is not None else None)
    check_stream_caller(reader, fresh=True)
    return reader
