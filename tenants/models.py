"""Tenants, their authentication realms, allowed browser origins and the local records
of the people their tokens name."""

import uuid

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

# RFC 7518 section 3.2: an HS256 key at least as long as the hash output (256 bits). A
# shorter secret is guessed offline from any one token, and then anyone can sign tokens.
MIN_HS256_SECRET_BYTES = 32
# RFC 7518 section 3.3: RS256 keys of 2048 bits or larger.
MIN_RSA_KEY_BITS = 2048


def hs256_secret_problem(secret: str) -> str | None:
    """Why `secret` cannot be a realm's HS256 secret, or None when it can."""
    size = len(secret.encode())
    if size < MIN_HS256_SECRET_BYTES:
        return (
            f"An HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes (RFC 7518 section 3.2); this one is "
            f"{size}. A short secret can be guessed from any token, and then anyone can sign tokens."
        )
    return None


def rs256_public_key_problem(pem: str) -> str | None:
    """Why `pem` cannot be a realm's RS256 public key, or None when it can."""
    try:
        key = load_pem_public_key(pem.strip().encode())
    except (ValueError, TypeError):
        return "Not a PEM public key: paste it with its -----BEGIN PUBLIC KEY----- and -----END PUBLIC KEY----- lines."
    if not isinstance(key, rsa.RSAPublicKey):
        return "RS256 needs an RSA public key; this is another kind of key."
    if key.key_size < MIN_RSA_KEY_BITS:
        return (
            f"An RS256 key must have at least {MIN_RSA_KEY_BITS} bits (RFC 7518 section 3.3); "
            f"this one has {key.key_size}."
        )
    return None


class Tenant(models.Model):
    class Tier(models.TextChoices):
        FREE = "free", "Free"
        STANDARD = "standard", "Standard"
        ENTERPRISE = "enterprise", "Enterprise"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The tenant's plan, for operations: a bounded label of the stream metrics
    # (core.metrics) that never names a tenant. It changes no behaviour. A database default
    # too, so rows inserted without it (raw SQL, older code during a deploy) are valid.
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.STANDARD, db_default=Tier.STANDARD)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.slug


class Realm(models.Model):
    """An identity provider realm (as Keycloak publishes one) whose tokens a tenant accepts."""

    class Algorithm(models.TextChoices):
        HS256 = "HS256", "HS256 shared secret"
        RS256 = "RS256", "RS256 public key or JWKS"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="realms")
    name = models.CharField(max_length=100)
    algorithm = models.CharField(max_length=5, choices=Algorithm.choices, default=Algorithm.HS256)
    secret = models.CharField(max_length=500, blank=True, help_text="HS256 shared secret.")
    public_key = models.TextField(blank=True, help_text="RS256 public key (PEM).")
    jwks_url = models.URLField(blank=True, help_text="RS256 JWKS endpoint, used when no public key is set.")
    issuer = models.CharField(max_length=500, blank=True, help_text="Expected `iss`; empty accepts any.")
    audience = models.CharField(max_length=200, blank=True, help_text="Expected `aud`; empty skips the check.")
    teams_claim = models.CharField(max_length=100, default="teams")
    active = models.BooleanField(default=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="realm_name_unique_per_tenant")]
        ordering = ["tenant__slug", "name"]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"

    def clean(self) -> None:
        """Refuse keys that make the realm's tokens forgeable (a short HS256 secret) or
        unusable (an RS256 key that is not one, or no key at all): saved, they were
        accepted or refused token by token, never at the form. Checked by the admin's
        forms; code that creates realms calls `full_clean()`."""
        errors: dict[str, str] = {}
        if self.algorithm == self.Algorithm.HS256:
            problem = hs256_secret_problem(self.secret)
            if problem:
                errors["secret"] = problem
        elif self.public_key.strip():
            # The pasted key is used whenever it is set, a JWKS URL only without it
            # (tenants.callers.token_backend_for), so it is checked even beside a URL.
            problem = rs256_public_key_problem(self.public_key)
            if problem:
                errors["public_key"] = problem
        elif not self.jwks_url:
            errors["public_key"] = "An RS256 realm needs a public key (PEM) or a JWKS URL."
        if errors:
            raise ValidationError(errors)


class AllowedOrigin(models.Model):
    """A browser origin (scheme://host[:port]) allowed to call the API for a tenant."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="allowed_origins")
    origin = models.CharField(max_length=300)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "origin"], name="origin_unique_per_tenant")]
        indexes = [models.Index(fields=["origin"])]

    def __str__(self) -> str:
        return self.origin


class TenantUser(models.Model):
    """A person of a tenant, created or refreshed from the claims of their token.

    A person is (tenant, realm, sub): `sub` is only unique within the realm that issued
    it, so the same `sub` from another realm of the tenant is another person. A user
    without a realm is local (created by an operator or a loader, reachable only through
    a dashboard session), never by a token.

    `login` optionally links a Django account so the person can also use the browser
    dashboard with a session."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="users")
    # RESTRICT, not CASCADE: deleting a realm must not silently delete its people and
    # their tickets (deactivate the realm instead); deleting the tenant still cascades.
    realm = models.ForeignKey(
        Realm,
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="users",
        help_text="The realm whose tokens name this person; empty for a local (session-only) user.",
    )
    subject = models.CharField(max_length=255, help_text="The token's `sub`, unique within the realm.")
    username = models.CharField(max_length=150)
    name = models.CharField(max_length=255, blank=True)
    email = models.EmailField(blank=True)
    roles = models.JSONField(default=list, blank=True)
    teams = models.JSONField(default=list, blank=True)
    login = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="tenant_user"
    )
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "realm", "subject"], name="user_subject_unique_per_realm"),
            # NULL realms are distinct in a unique index: local users need their own rule.
            models.UniqueConstraint(
                fields=["tenant", "subject"],
                condition=models.Q(realm__isnull=True),
                name="local_user_subject_unique_per_tenant",
            ),
            models.UniqueConstraint(fields=["tenant", "username"], name="username_unique_per_tenant"),
        ]
        ordering = ["username"]

    def __str__(self) -> str:
        return self.username

    @property
    def display_name(self) -> str:
        return self.name or self.username

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.realm_id is not None and self.tenant_id is not None and self.realm.tenant_id != self.tenant_id:
            raise ValidationError({"realm": "The realm belongs to another tenant."})


class ApiKey(models.Model):
    """A partner's key to the event API and websocket ("ApiKey" security of the spec).

    Only a SHA-256 of the secret is stored (keys are 256-bit random, so a fast hash is
    enough); the full key is shown once, when it is created."""

    SCOPE_EVENTS_READ = "events:read"
    SCOPE_WEBHOOKS = "webhooks"
    SCOPES = [
        (SCOPE_EVENTS_READ, "Read the event log and subscribe to it"),
        (SCOPE_WEBHOOKS, "Manage the tenant's webhook endpoints and their deliveries"),
    ]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="The key is refused from this moment on; empty never expires."
    )

    class Meta:
        ordering = ["tenant__slug", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def expired(self) -> bool:
        from django.utils import timezone

        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def active(self) -> bool:
        return self.revoked_at is None and not self.expired
