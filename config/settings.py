"""The one settings module. Everything that varies between machines is read from the
environment here, with embedded defaults that let `make run` work on a bare machine
(SQLite file + in-memory channel layer)."""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


DEBUG = env_bool("DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (set DEBUG=1 for local work).")
    SECRET_KEY = "insecure-local-development-key-do-not-use-in-production"  # noqa: S105

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
    "notifications",
]

MIDDLEWARE = [
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{os.environ.get('SQLITE_PATH') or BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
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
REDIS_URL = os.environ.get("REDIS_URL", "")
# Prefix of every key this service keeps in Redis (channel layer, stream leases).
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "ticketing")
if REDIS_URL:
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
                        "max_connections": env_int("REDIS_MAX_CONNECTIONS", 200),
                        "health_check_interval": 15,
                    }
                ],
                "capacity": env_int("CHANNEL_CAPACITY", 5000),
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
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "tenants.envelope.envelope_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
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
}

# simplejwt: realms carry their own keys, so these defaults only name the claims.
SIMPLE_JWT = {
    "USER_ID_CLAIM": "sub",
    "LEEWAY": env_int("JWT_LEEWAY_SECONDS", 0),
}

# --- CORS: allowed origins are kept per tenant (tenants.cors) ---------------------------
CORS_ALLOW_HEADERS = [
    "accept",
    "authorization",
    "content-type",
    "last-event-id",
    "x-tenantid",
    "realmname",
    "issupportrequest",
]
CORS_URLS_REGEX = r"^/(api/|v2/).*$"
CORS_PREFLIGHT_MAX_AGE = 600

# --- Product settings -----------------------------------------------------------------
# The embedded HS256 realm that `load_demo` creates and `issue_token` signs for.
DEMO_REALM_SECRET = os.environ.get("DEMO_REALM_SECRET", "demo-realm-secret-change-me-in-production-0123456789")

TICKET_LIST_MAX_TOP = env_int("TICKET_LIST_MAX_TOP", 200)
# Totals are exact up to this many tickets, then reported as this number with totalExact: false.
TICKET_LIST_COUNT_LIMIT = env_int("TICKET_LIST_COUNT_LIMIT", 10_000)
NOTIFICATION_LIST_MAX_TOP = env_int("NOTIFICATION_LIST_MAX_TOP", 100)
# How often `manage.py sla_monitor` looks for due SLA warnings and breaches.
SLA_MONITOR_INTERVAL_SECONDS = env_float("SLA_MONITOR_INTERVAL_SECONDS", 30.0)
FILTER_MAX_DEPTH = env_int("FILTER_MAX_DEPTH", 5)
FILTER_MAX_CONDITIONS = env_int("FILTER_MAX_CONDITIONS", 50)
FILTER_MAX_IN_VALUES = env_int("FILTER_MAX_IN_VALUES", 500)

EVENTS_PAGE_MAX = 1000
EVENTS_RETENTION_DAYS = env_int("EVENTS_RETENTION_DAYS", 30)

SSE_HEARTBEAT_SECONDS = env_float("SSE_HEARTBEAT_SECONDS", 30.0)
SSE_IDLE_TIMEOUT_SECONDS = env_float("SSE_IDLE_TIMEOUT_SECONDS", 3600.0)
SSE_MAX_LIST_STREAMS_PER_USER = env_int("SSE_MAX_LIST_STREAMS_PER_USER", 8)
SSE_MAX_NOTIFICATION_STREAMS_PER_USER = env_int("SSE_MAX_NOTIFICATION_STREAMS_PER_USER", 5)
SSE_LEASE_SECONDS = env_float("SSE_LEASE_SECONDS", 45.0)
SSE_RETRY_AFTER_SECONDS = env_int("SSE_RETRY_AFTER_SECONDS", 5)
SSE_QUEUE_MAX = env_int("SSE_QUEUE_MAX", 1000)
SSE_RESUME_MAX_EVENTS = env_int("SSE_RESUME_MAX_EVENTS", 5000)
# The per-process hub re-reads the log this often even without a broadcast, so a lost
# broadcast (Redis restart, worker killed between commit and publish) only delays events.
EVENT_HUB_POLL_SECONDS = env_float("EVENT_HUB_POLL_SECONDS", 2.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"kv": {"format": "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "kv"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
