"""The one settings module. Everything that varies between machines is read from the
environment here, with embedded defaults that let `make run` work on a bare machine
(SQLite file + in-memory channel layer)."""

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from corsheaders.defaults import default_headers
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from limits import parse as parse_rate_limit

# Every value is read through these (config.env): a bad one stops the start with a line
# naming it, instead of failing the requests that read it.
from config.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_json_object,
    env_list,
    env_log_level,
    env_parsed,
    within,
)
from config.log_format import formatter_config

BASE_DIR = Path(__file__).resolve().parent.parent


DEBUG = env_bool("DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off. For local work run `make run` once (it writes .env with "
            "DEBUG=1, which manage.py and config.serve read) or prefix the command with DEBUG=1."
        )
    SECRET_KEY = "insecure-local-development-key-do-not-use-in-production"  # noqa: S105
# Rotating SECRET_KEY (docs/operations.md, "Rotate secrets"): the previous keys, comma-
# separated, still verify sessions and signed values made with them; new ones use SECRET_KEY.
SECRET_KEY_FALLBACKS = [k for k in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if k]

# --- Security -------------------------------------------------------------------------
# With DEBUG off the service expects HTTPS (directly or behind a TLS-terminating proxy):
# secure cookies, HSTS and a redirect from http. A server with DEBUG off over plain http
# (a test or staging box) turns these off one by one from the environment; browsers treat
# http://127.0.0.1 and http://localhost as secure, so Secure cookies still work there.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
# Behind a proxy that terminates TLS: trust its X-Forwarded-Proto (only set this when the
# proxy always overwrites that header).
if env_bool("SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"
# Every page loads its scripts and styles from this origin (config.csp); `{nonce}` is the
# per-request nonce of the Swagger UI page's inline start-up script and style.
CONTENT_SECURITY_POLICY = os.environ.get(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
)
# With DEBUG on the policy is only reported (browser console), so Django's debug pages,
# which use inline styles and scripts, still render.
CONTENT_SECURITY_POLICY_REPORT_ONLY = env_bool("CONTENT_SECURITY_POLICY_REPORT_ONLY", DEBUG)
# uvicorn closes a connection whose request head (request line and headers) is not
# complete this long after it started (config.serve): slow-header ("slowloris") clients.
HTTP_HEADER_TIMEOUT_SECONDS = env_float("HTTP_HEADER_TIMEOUT_SECONDS", 10.0)
# ... and one whose request body sends nothing for this long (between two reads, as the
# shipped nginx's client_body_timeout): a body that stopped arriving held it for ever.
HTTP_BODY_TIMEOUT_SECONDS = env_float("HTTP_BODY_TIMEOUT_SECONDS", 30.0)
# On SIGTERM a worker tells its streams to end (SERVER_SHUTDOWN) and lets requests in
# flight finish for this long (config.serve); streams that could not end by then are cut
# by the worker itself shortly before (events.hub.EventHub.close_all), so that they give
# their slots back. Keep it below the orchestrator's kill timeout.
SERVER_GRACEFUL_SHUTDOWN_SECONDS = env_float("SERVER_GRACEFUL_SHUTDOWN_SECONDS", 5.0)

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "tenants",
    "events",
    "ticketing",
    "sla",
    "notifications",
    "idempotency",
    "webhooks",
]

MIDDLEWARE = [
    # Outermost: the request id, the caller in every log line, the request's log line and
    # metrics, whatever answered it (core.request_context).
    "core.request_context.RequestContextMiddleware",
    # First: on /api/ and /v2/ paths every failure, wherever it is raised, is answered in
    # the error envelope (core.errors).
    "core.errors.ApiErrorMiddleware",
    # django-cors-headers, with the per-tenant origin lookup kept off the event loop.
    "tenants.cors.TenantCorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Messages are kept in the session (server side), not Django's default cookie: the admin's
# "API key created" message holds the whole key, and a signed cookie is readable by
# whoever holds it (tenants.admin.ApiKeyAdmin).
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# DATABASE_URL=postgres://user@host:5432/name selects PostgreSQL (psycopg 3); without it
# a SQLite file in the project folder (or at SQLITE_PATH).


def _count_or_off(text: str) -> int | None:
    """A whole number of at least 0, or None for empty text."""
    return within(int(text)) if text.strip() else None


DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{os.environ.get('SQLITE_PATH') or BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
if IS_POSTGRES and env_bool("DB_POOL", True):
    # Connections are reused through Django's psycopg pool (docs/architecture.md, "Database
    # connections"): opening one costs more CPU on both sides than a whole ticket change.
    # Persistent connections (CONN_MAX_AGE) are kept per thread, and a request's thread
    # is one of those kept (core.request_threads) or, when all are busy, a new one that
    # would open its own; the pool is shared by the threads of a process, and a
    # connection goes back to it when the request ends.
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them; Django must hand them back
    # No check when a connection is handed out: psycopg_pool sleeps a second after a
    # failed check. A dead pooled connection fails its first statement instead, and the
    # unit of work is retried on a new pool (core.db_retry).
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    # A pool of no connection never became ready; one whose minimum is above its maximum
    # cannot be made.
    _pool_max_size = env_int("DB_POOL_MAX_SIZE", 20, minimum=1)
    _pool_min_size = env_int("DB_POOL_MIN_SIZE", 2, maximum=_pool_max_size)
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": _pool_min_size,
        "max_size": _pool_max_size,
        # Waiting longer than this for a connection fails the request (503, not retried):
        # also how long a request waits when PostgreSQL cannot be reached at all.
        "timeout": env_float("DB_POOL_TIMEOUT_SECONDS", 3.0),
    }
if IS_POSTGRES:
    # A statement a connection has run DB_PREPARE_THRESHOLD times is prepared once
    # (psycopg's automatic prepared statements): PostgreSQL then parses it no more and may
    # keep one plan for it; about a third of its CPU per ticket change (bench/change_cost.py,
    # docs/benchmarks.md). Preparing needs parameters sent apart from the statement
    # (server-side binding; Django's default quotes them into the SQL text). Empty turns
    # both off: needed behind a pooler in transaction mode (PgBouncer's default), where
    # a prepared statement may be asked of another server connection.
    _prepare_threshold = env_parsed(
        "DB_PREPARE_THRESHOLD", 5, _count_or_off, "expected a whole number of at least 0, or empty (off)"
    )
    if _prepare_threshold is not None:
        DATABASES["default"].setdefault("OPTIONS", {}).update(
            {"server_side_binding": True, "prepare_threshold": _prepare_threshold}
        )
if IS_POSTGRES:
    # PostgreSQL lets a statement wait for a lock for ever: a transaction left open on a
    # ticket's row (a psql session, a stuck job) would hold every write of that ticket for
    # as long as it lasts, each holding a connection. Past DB_LOCK_TIMEOUT_SECONDS the
    # write is refused (503 in the envelope, nothing changed; core.db_retry). 0 leaves
    # PostgreSQL's own setting (the role's or the database's). Sent as a startup option,
    # which PgBouncer refuses: behind it set 0 and `ALTER ROLE ... SET lock_timeout`.
    _lock_timeout_ms = int(env_float("DB_LOCK_TIMEOUT_SECONDS", 15.0) * 1000)
    if _lock_timeout_ms > 0:
        _options = DATABASES["default"].setdefault("OPTIONS", {})
        _options["options"] = f"{_options.get('options', '')} -c lock_timeout={_lock_timeout_ms}".strip()
if not IS_POSTGRES:
    # Stream tests run a server in another process, so the SQLite test database must be
    # a file both processes can open, not the in-memory default.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test_db.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {})
    # Wait for the writer instead of failing at once when two requests write together.
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer --------------------------------------------------------------------


def _redis_url(text: str) -> str:
    if text and urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(text)
    return text


# A password may be in it: a refused one is not repeated.
REDIS_URL = env_parsed(
    "REDIS_URL", "", _redis_url, "expected a redis://, rediss:// or unix:// URL, or empty (off)", secret=True
)
# Prefix of every key this service keeps in Redis (channel layer, stream leases).
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "ticketing")
if REDIS_URL:
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    # After a Redis restart every pooled connection is dead: a command on one reconnects
    # and is sent again instead of failing (a 503 at a stream open, a lost announcement).
    # Used by the channel layer's pools and the stream-lease pool (events.leases).
    REDIS_RETRY_OPTIONS = {
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        # redis-py's newer defaults cut a blocking receive that waits
                        # longer than the socket timeout and raise on an exhausted pool;
                        # a fan-out hub waits idle for minutes, so be explicit.
                        "socket_timeout": env_float("REDIS_SOCKET_TIMEOUT", 60.0),
                        "socket_connect_timeout": 5,
                        "socket_keepalive": True,
                        "max_connections": env_int("REDIS_MAX_CONNECTIONS", 200, minimum=1),
                        "health_check_interval": 15,
                        **REDIS_RETRY_OPTIONS,
                    }
                ],
                "capacity": env_int("CHANNEL_CAPACITY", 5000, minimum=1),
                "expiry": 60,
                "prefix": REDIS_PREFIX,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 5000}}}

# --- Auth -----------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/dashboard/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- REST framework -------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.TenantJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.IsTenantCaller"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON only, refusing what Python or PostgreSQL cannot hold (core.json_input).
    "DEFAULT_PARSER_CLASSES": ["core.json_input.JSONBodyParser"],
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "config.openapi.TicketingAutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Ticketing service API",
    "DESCRIPTION": "Multi-tenant tickets, live lists, notifications and the partner event log.",
    "VERSION": "2.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # config/openapi.py: the SSE streams (plain async views) and the long description.
    "PREPROCESSING_HOOKS": ["config.openapi.add_stream_endpoints"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "config.openapi.describe_api"],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "SortOrderEnum": ["ASC", "DESC", "asc", "desc"],
        "TicketSortColumnEnum": "config.openapi.TICKET_SORT_CHOICES",
        "NotificationSortFieldEnum": "config.openapi.NOTIFICATION_SORT_CHOICES",
        "SavedViewListTypeEnum": ["template", "agent", "user"],
    },
}

# simplejwt: realms carry their own keys, so these defaults only name the claims.
SIMPLE_JWT = {
    "USER_ID_CLAIM": "sub",
    # Seconds a token is still accepted after its `exp`.
    "LEEWAY": env_int("JWT_LEEWAY_SECONDS", 0),
}
# Seconds a token's `iat` and `nbf` may be ahead of this server's clock: an identity
# provider whose clock runs a little ahead issues tokens "from the future", which were
# refused (INVALID_TOKEN) until this server's clock caught up (tenants.callers).
JWT_CLOCK_SKEW_SECONDS = env_int("JWT_CLOCK_SKEW_SECONDS", 60)

# --- CORS: allowed origins are kept per tenant (tenants.cors) ---------------------------
# Every request header the API reads, on top of django-cors-headers' defaults: without a
# name here a browser refuses to send it (the preflight fails), so a cross-origin page
# could not make a conditional change (`If-Match`), retry safely (`Idempotency-Key`), use
# a partner key (`X-API-Key`, as `Authorization: ApiKey` can: CORS guards ambient
# credentials such as cookies, not a key the page holds itself; docs/api.md, CORS) or
# pass its own request id.
CORS_ALLOW_HEADERS = [
    *default_headers,
    "last-event-id",
    "x-tenantid",
    "realmname",
    "issupportrequest",
    "if-match",
    "idempotency-key",
    "x-api-key",
    "x-request-id",
]
# Response headers a cross-origin page may read beyond the CORS-safelisted ones
# (Content-Type and the like): without this, fetch() sees them as absent.
CORS_EXPOSE_HEADERS = [
    "ETag",  # the ticket version to send back in If-Match
    "Retry-After",  # 429, 503 and busy streams: when to try again
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Idempotent-Replayed",  # this answer is the stored first one of an Idempotency-Key
    "X-Request-ID",  # to quote in a support request; matches the server's log lines
    "WWW-Authenticate",  # why a 401 refused the token
]
CORS_URLS_REGEX = r"^/(api/|v2/).*$"
CORS_PREFLIGHT_MAX_AGE = 600
# Browsers may send credentials (EventSource `withCredentials`, fetch `credentials: "include"`)
# to an allowed origin's API calls; only origins a tenant listed are ever echoed back.
CORS_ALLOW_CREDENTIALS = True

# --- Product settings -----------------------------------------------------------------
# The embedded HS256 realm that `load_demo` creates and `issue_token` signs for. The
# default is public (it is in this file), so `load_demo` refuses it when DEBUG is off.
DEMO_REALM_SECRET_DEFAULT = "demo-realm-secret-change-me-in-production-0123456789"  # noqa: S105
DEMO_REALM_SECRET = os.environ.get("DEMO_REALM_SECRET", DEMO_REALM_SECRET_DEFAULT)

TICKET_LIST_MAX_TOP = env_int("TICKET_LIST_MAX_TOP", 200, minimum=1)
# Totals are exact up to this many tickets, then reported as this number with totalExact: false.
TICKET_LIST_COUNT_LIMIT = env_int("TICKET_LIST_COUNT_LIMIT", 10_000)
NOTIFICATION_LIST_MAX_TOP = env_int("NOTIFICATION_LIST_MAX_TOP", 100, minimum=1)
# How often `manage.py sla_monitor` looks for due SLA warnings and breaches.
SLA_MONITOR_INTERVAL_SECONDS = env_float("SLA_MONITOR_INTERVAL_SECONDS", 30.0, above=0)
FILTER_MAX_DEPTH = env_int("FILTER_MAX_DEPTH", 5)
FILTER_MAX_CONDITIONS = env_int("FILTER_MAX_CONDITIONS", 50)
FILTER_MAX_IN_VALUES = env_int("FILTER_MAX_IN_VALUES", 500)

EVENTS_PAGE_MAX = 1000
EVENTS_RETENTION_DAYS = env_int("EVENTS_RETENTION_DAYS", 30)

SSE_HEARTBEAT_SECONDS = env_float("SSE_HEARTBEAT_SECONDS", 30.0, above=0)
SSE_IDLE_TIMEOUT_SECONDS = env_float("SSE_IDLE_TIMEOUT_SECONDS", 3600.0, above=0)
# How often an open stream checks that its credential still holds (events.sse).
SSE_CREDENTIAL_CHECK_SECONDS = env_float("SSE_CREDENTIAL_CHECK_SECONDS", 15.0, above=0)
SSE_MAX_LIST_STREAMS_PER_USER = env_int("SSE_MAX_LIST_STREAMS_PER_USER", 8)
SSE_MAX_NOTIFICATION_STREAMS_PER_USER = env_int("SSE_MAX_NOTIFICATION_STREAMS_PER_USER", 5)
# Ticket pages open at once per user (one per browser tab on a ticket).
SSE_MAX_TICKET_STREAMS_PER_USER = env_int("SSE_MAX_TICKET_STREAMS_PER_USER", 10)
# Who is on a ticket (ticketing/presence.py): an entry lapses PRESENCE_TTL_SECONDS after
# its stream last renewed it (every PRESENCE_RENEW_SECONDS), so a viewer whose worker died
# is gone for everyone within TTL + renew interval; a typing mark shows this long.
PRESENCE_TTL_SECONDS = env_float("PRESENCE_TTL_SECONDS", 20.0, above=0)
PRESENCE_RENEW_SECONDS = env_float("PRESENCE_RENEW_SECONDS", 8.0, above=0)
PRESENCE_TYPING_SECONDS = env_float("PRESENCE_TYPING_SECONDS", 6.0)
SSE_LEASE_SECONDS = env_float("SSE_LEASE_SECONDS", 45.0, above=0)
SSE_RETRY_AFTER_SECONDS = env_int("SSE_RETRY_AFTER_SECONDS", 5)
SSE_QUEUE_MAX = env_int("SSE_QUEUE_MAX", 1000, minimum=1)
# A stream whose client reads nothing for this long while a frame waits is cut
# (SLOW_CONSUMER if that can still be written, else the connection is dropped).
SSE_SEND_TIMEOUT = env_float("SSE_SEND_TIMEOUT", 30.0, above=0)
SSE_RESUME_MAX_EVENTS = env_int("SSE_RESUME_MAX_EVENTS", 5000)
# The stream edge (events/edge): with SSE_EDGE=pushpin, list streams that arrive through
# Pushpin (a GRIP proxy in front of the workers) are handed to it after their opening
# frames; Pushpin holds the connections and the edge publisher (`manage.py
# publish_to_edge`) sends each change once per channel. Off (empty) by default; it needs
# Redis (the channel registry is shared by the workers and the publisher).
SSE_EDGE = env_choice("SSE_EDGE", "", ("", "pushpin"))
if SSE_EDGE and not REDIS_URL:
    raise ImproperlyConfigured("SSE_EDGE=pushpin needs REDIS_URL (the workers and the publisher share a registry).")
# Pushpin's HTTP publish endpoint and the key it signs forwarded requests with (its
# `sig_key`): a stream is handed off only when its request carries a valid Grip-Sig.
# Several edge nodes: their endpoints separated by commas; each gets every publish.
PUSHPIN_PUBLISH_URLS = tuple(
    url.strip() for url in os.environ.get("PUSHPIN_PUBLISH_URL", "http://127.0.0.1:5561/publish/").split(",")
)


def _is_publish_url(text: str) -> bool:
    url = urlsplit(text)
    return url.scheme in ("http", "https") and bool(url.hostname) and url.path.rstrip("/").endswith("/publish")


if SSE_EDGE and (
    len(set(PUSHPIN_PUBLISH_URLS)) < len(PUSHPIN_PUBLISH_URLS)
    or not all(_is_publish_url(url) for url in PUSHPIN_PUBLISH_URLS)
):
    raise ImproperlyConfigured(
        "PUSHPIN_PUBLISH_URL must be Pushpin's publish URL (http://host:5561/publish/), or several different "
        "ones separated by commas."
    )
PUSHPIN_SIG_KEY = os.environ.get("PUSHPIN_SIG_KEY", "")
if SSE_EDGE and not PUSHPIN_SIG_KEY:
    raise ImproperlyConfigured("SSE_EDGE=pushpin needs PUSHPIN_SIG_KEY (Pushpin's sig_key).")
# How often Pushpin calls back for a held stream (renewing its slot and channel; token
# expiry and idle timeout get a call-back at their own second): each call is a request to
# the workers (20,000 streams every 600 s are 33 a second), so this is long. A vanished
# client's slot is given back when its lease lapses, within twice this.
SSE_EDGE_LINK_SECONDS = env_int("SSE_EDGE_LINK_SECONDS", 600, minimum=1)
# The per-process hub re-reads the log this often even without a broadcast, so a lost
# broadcast (Redis restart, worker killed between commit and publish) only delays events.
EVENT_HUB_POLL_SECONDS = env_float("EVENT_HUB_POLL_SECONDS", 2.0, above=0)
# Threads kept for ordinary requests' sync work (core.request_threads); when all are busy a
# request gets a thread of its own for its duration, as under Django's own handler.
REQUEST_THREADS = env_int("REQUEST_THREADS", 32, minimum=1)
# Python's cycle collector in a served worker (config.heap): it runs its youngest
# generation after this many more container objects (Python's default: 700). 0 keeps
# Python's default, and leaves the start-up heap unfrozen.
GC_GEN0_THRESHOLD = env_int("GC_GEN0_THRESHOLD", 2_000)
# Write requests (their transactions) a process runs at once; the others queue for a slot
# (core.write_slots), up to WRITE_SLOT_WAIT_SECONDS, then 503. 0: no limit.
WRITE_CONCURRENCY = env_int("WRITE_CONCURRENCY", 3)
WRITE_SLOT_WAIT_SECONDS = env_float("WRITE_SLOT_WAIT_SECONDS", 30.0)
# `Retry-After` of the 503 a request gets when the database failed it (core.db_retry).
DATABASE_RETRY_AFTER_SECONDS = env_int("DATABASE_RETRY_AFTER_SECONDS", 2)
# How long a request may wait in all for a connection of a pool that is merely busy (every
# connection in use), beyond which it is answered 503 (core.db_retry).
DATABASE_POOL_BUSY_WAIT_SECONDS = env_float("DB_POOL_BUSY_WAIT_SECONDS", 30.0)

# --- Idempotency keys and rate limits (docs/api.md) ------------------------------------------
# How long the first answer to a write sent with an Idempotency-Key is kept and replayed.
IDEMPOTENCY_KEY_TTL_SECONDS = env_int("IDEMPOTENCY_KEY_TTL_SECONDS", 24 * 3600)
# Requests per window on the REST endpoints (not the streams, which have their own limits),
# as `limits` strings ("600/minute", "10/second"), counted in Redis across worker processes
# (in process memory without REDIS_URL). Every bucket that applies must have room.
RATE_LIMITS_ENABLED = env_bool("RATE_LIMITS_ENABLED", True)
_RATE_LIMIT_ALLOWED = "expected a rate such as 600/minute or 10/second, its count above 0"


def _rate_limit(text: str) -> str:
    """A `limits` rate string that allows at least one request (`0/minute` refused everyone)."""
    if parse_rate_limit(text).amount < 1:
        raise ValueError(text)
    return text


RATE_LIMIT_PER_USER = env_parsed("RATE_LIMIT_PER_USER", "600/minute", _rate_limit, _RATE_LIMIT_ALLOWED)
RATE_LIMIT_PER_API_KEY = env_parsed("RATE_LIMIT_PER_API_KEY", "1200/minute", _rate_limit, _RATE_LIMIT_ALLOWED)
RATE_LIMIT_PER_TENANT = env_parsed("RATE_LIMIT_PER_TENANT", "6000/minute", _rate_limit, _RATE_LIMIT_ALLOWED)


def _check_rate_limit_overrides(overrides: dict[str, object]) -> None:
    for limits in overrides.values():
        if not isinstance(limits, dict) or not set(limits) <= {"user", "apiKey", "tenant"}:
            raise ValueError(limits)
        for rate in limits.values():
            _rate_limit(rate)


# Per-tenant overrides, JSON by tenant slug or id:
# {"acme": {"user": "1200/minute", "apiKey": "5000/minute", "tenant": "20000/minute"}}
RATE_LIMIT_TENANT_OVERRIDES = env_json_object(
    "RATE_LIMIT_TENANT_OVERRIDES",
    {},
    _check_rate_limit_overrides,
    'expected a JSON object by tenant slug or id, each {"user", "apiKey", "tenant"} (any of them) a rate '
    "such as 600/minute, its count above 0",
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # JSON lines in production, text with DEBUG on; LOG_FORMAT=json|text decides (config.log_format).
    "formatters": {"main": formatter_config()},
    # Credentials never reach a log line, whoever logs them (config.log_redaction); every
    # line of a request carries its id, tenant and caller (core.request_context).
    "filters": {
        "redact_credentials": {"()": "config.log_redaction.RedactCredentials"},
        "request_context": {"()": "config.log_format.RequestContextFilter"},
        "uncaught_exceptions_only": {"()": "config.log_format.UncaughtExceptionsOnly"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "main",
            "filters": ["redact_credentials", "request_context"],
        }
    },
    "root": {"handlers": ["console"], "level": env_log_level()},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # One line per request: ours (core.request_context), not Django's for each 4xx/5xx.
        "django.request": {"filters": ["uncaught_exceptions_only"]},
    },
}

# --- Observability (docs/operations.md) -------------------------------------------------
# `/metrics` (core.metrics) answers loopback callers, and others that send
# `Authorization: Bearer $METRICS_TOKEN`; without a token only loopback. Turn
# METRICS_LOOPBACK_OPEN off when a proxy on the same host forwards outside traffic to it.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_LOOPBACK_OPEN = env_bool("METRICS_LOOPBACK_OPEN", True)
# Saved views' live counts (ticketing.view_counts): streams per user, and how often each
# distinct count is read again with a COUNT to heal drift (docs/api.md, saved views).
SSE_MAX_VIEW_COUNT_STREAMS_PER_USER = env_int("SSE_MAX_VIEW_COUNT_STREAMS_PER_USER", 5)
VIEW_COUNT_RESYNC_SECONDS = env_float("VIEW_COUNT_RESYNC_SECONDS", 300.0, above=0)
# Least time between two `counts` frames of one stream (a burst of changes becomes one frame).
VIEW_COUNT_FRAME_INTERVAL_SECONDS = env_float("VIEW_COUNT_FRAME_INTERVAL_SECONDS", 0.5)

# --- Notification email (notifications.emails; the `send_notification_emails` worker) ---
# Django's email backend; by default SMTP on EMAIL_HOST:EMAIL_PORT (localhost:25).
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65_535)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)  # a hanging SMTP server delays only the worker
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Help desk <helpdesk@localhost>")
# Where the links in emails point (the dashboard's ticket page is appended).
NOTIFICATION_EMAIL_BASE_URL = os.environ.get("NOTIFICATION_EMAIL_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
NOTIFICATION_EMAIL_INTERVAL_SECONDS = env_float("NOTIFICATION_EMAIL_INTERVAL_SECONDS", 10.0, above=0)
# After a failed delivery: wait this long, doubled per attempt (at most an hour), give up after MAX_ATTEMPTS.
NOTIFICATION_EMAIL_RETRY_SECONDS = env_float("NOTIFICATION_EMAIL_RETRY_SECONDS", 60.0)
NOTIFICATION_EMAIL_MAX_ATTEMPTS = env_int("NOTIFICATION_EMAIL_MAX_ATTEMPTS", 10, minimum=1)
# --- webhooks (webhooks app, docs/webhooks.md) ---
# Fernet keys encrypting endpoint secrets at rest: the first encrypts, all decrypt (rotate
# by prepending a key, then `manage.py rotate_webhook_keys`). Empty: derived from SECRET_KEY.


def _fernet_key(text: str) -> str:
    Fernet(text)  # raises ValueError for anything but 32 bytes in urlsafe base64
    return text


# Keys are not repeated in the message.
WEBHOOKS_SECRET_KEYS = env_parsed(
    "WEBHOOKS_SECRET_KEYS",
    [],
    lambda text: [_fernet_key(key.strip()) for key in text.split(",") if key.strip()],
    "expected Fernet keys (32 bytes in urlsafe base64: `Fernet.generate_key()`), separated by commas",
    secret=True,
)
# Deliver to loopback, link-local and private addresses (development and tests only).
WEBHOOKS_ALLOW_PRIVATE_NETWORKS = env_bool("WEBHOOKS_ALLOW_PRIVATE_NETWORKS", DEBUG)
# Seconds to wait after each failed attempt (jittered ±10%); after the last one the event is
# given up (failed, recoverable). Default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, 1 d, 1 d.
WEBHOOKS_RETRY_SCHEDULE = env_list(
    "WEBHOOKS_RETRY_SCHEDULE",
    "5,300,1800,7200,18000,36000,36000,86400,86400",
    lambda text: within(float(text)),
    "expected seconds (numbers of at least 0) separated by commas",
)
WEBHOOKS_DISABLE_AFTER_SECONDS = env_float("WEBHOOKS_DISABLE_AFTER_SECONDS", 5 * 86400.0)
WEBHOOKS_SECRET_OVERLAP_SECONDS = env_float("WEBHOOKS_SECRET_OVERLAP_SECONDS", 86400.0)
WEBHOOKS_CONNECT_TIMEOUT_SECONDS = env_float("WEBHOOKS_CONNECT_TIMEOUT_SECONDS", 5.0)
WEBHOOKS_TIMEOUT_SECONDS = env_float("WEBHOOKS_TIMEOUT_SECONDS", 15.0)
WEBHOOKS_POLL_SECONDS = env_float("WEBHOOKS_POLL_SECONDS", 1.0, above=0)
WEBHOOKS_LEASE_SECONDS = env_float("WEBHOOKS_LEASE_SECONDS", 30.0, above=0)
WEBHOOKS_MAX_IN_FLIGHT = env_int("WEBHOOKS_MAX_IN_FLIGHT", 256, minimum=1)
WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT = env_int("WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT", 64, minimum=1)
WEBHOOKS_MAX_PENDING = env_int("WEBHOOKS_MAX_PENDING", 1000)
WEBHOOKS_MAX_ENDPOINTS_PER_WORKER = env_int("WEBHOOKS_MAX_ENDPOINTS_PER_WORKER", 1000, minimum=1)
