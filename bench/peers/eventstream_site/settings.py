"""A minimal Django project serving django-eventstream, as its README sets one up: no
database, no storage (plain in-process pub/sub), one channel every subscriber listens to."""

SECRET_KEY = "peers-bench-only"  # noqa: S105 - a throwaway benchmark project
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["daphne", "django_eventstream"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "eventstream_site.urls"
ASGI_APPLICATION = "eventstream_site.asgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
