"""The probes for orchestrators and load balancers: `/healthz` and `/readyz`.

- `/healthz`: the process is alive and its event loop answers. Touches nothing else, so a
  database or Redis outage never gets a healthy worker restarted.
- `/readyz`: this worker can serve traffic: the database answers a trivial query, Redis
  (when `REDIS_URL` is set) answers a PING, and no migration is unapplied. `200` with each
  check's result, or `503 SERVICE_UNAVAILABLE` in the error envelope, `Retry-After`, and
  `details.failing` naming each failing part (`database`, `redis`, `migrations`).

Both are plain async views, outside DRF: no credentials, no tenant headers, not in the
OpenAPI schema (the tenant API's contract). Every blocking call runs off the event loop
and every check is bounded by a short timeout, so a probe never hangs a worker, and any
failure of a check is that check's failure (logged), never a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from core.http import ApiError, error_response

logger = logging.getLogger(__name__)

# Each check's budget. Probes run every few seconds; a dependency slower than this is
# as good as down for serving requests.
CHECK_TIMEOUT_SECONDS = 2.0
# How soon an orchestrator (or a person) should ask again after a 503.
RETRY_AFTER_SECONDS = 5

# A positive migration answer holds for the life of the process: the migrations on disk
# cannot change under a running worker, and re-reading the graph on every probe is costly.
# A negative one is recomputed, so a worker turns ready once `migrate` has run.
_migrations_applied = False


@csrf_exempt  # read-only: another method is require_safe's 405, not Django's CSRF 403
@require_safe
async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    """A fresh connection (with a connect timeout: libpq's default waits for ever) and
    `SELECT 1`; separate from the request's connection, so a probe never leaves one open.

    On PostgreSQL it is made with the driver itself: the backend's `get_new_connection`
    takes one from the worker's pool when pooling is on, and a pooled connection closed
    here instead of handed back stays counted as in use, so every probe would have cost
    the pool a connection for good (the requests of a worker probed twenty times waited
    for one in vain). A new connection also proves the database accepts connections."""
    wrapper = connections[DEFAULT_DB_ALIAS]
    params = wrapper.get_connection_params()
    if wrapper.vendor == "postgresql":
        params["connect_timeout"] = max(1, int(CHECK_TIMEOUT_SECONDS))
        raw = wrapper.Database.connect(**params)
    else:
        raw = wrapper.get_new_connection(params)
    try:
        cursor = raw.cursor()
        if wrapper.vendor == "postgresql":
            cursor.execute(f"SET statement_timeout = {int(CHECK_TIMEOUT_SECONDS * 1000)}")
        cursor.execute("SELECT 1")
        cursor.fetchone()
        cursor.close()
    finally:
        raw.close()
    return "ok"


def _check_migrations() -> str:
    global _migrations_applied
    if _migrations_applied:
        return "ok"
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[DEFAULT_DB_ALIAS]
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    finally:
        # This thread is not a request's: nothing else would close its connection.
        connection.close()
    if plan:
        raise NotReady(f"{len(plan)} unapplied (first: {plan[0][0].app_label}.{plan[0][0].name})")
    _migrations_applied = True
    return "ok"


async def _check_redis() -> str:
    """PING over the URL the service uses (channel layer, stream leases), on a connection
    of its own with short timeouts: the service's pools retry and wait up to seconds."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=CHECK_TIMEOUT_SECONDS,
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        retry_on_timeout=False,
    )
    try:
        await client.ping()
    finally:
        await client.aclose()
    return "ok"


class NotReady(Exception):
    """A check's own verdict (as opposed to an error reaching its dependency)."""


async def _run(name: str, check: Callable[[], Awaitable[str]]) -> str | None:
    """`ok`, or `failed: <why>` (the error logged); never longer than the check's budget."""
    try:
        return await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_SECONDS + 1)
    except NotReady as reason:
        return f"failed: {reason}"
    except TimeoutError:
        return f"failed: no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as error:  # any failure of a dependency means not ready
        logger.warning("event=readiness_check_failed check=%s error=%s", name, error)
        # The exception's class, not its text: a driver's message can carry the host, user
        # or database name, and this endpoint is public.
        return f"failed: {type(error).__name__}"


@csrf_exempt  # read-only: another method is require_safe's 405, not Django's CSRF 403
@require_safe
async def readyz(request: HttpRequest) -> JsonResponse:
    # Threads not bound to the request (thread_sensitive=False): a hung connect must not
    # hold the thread every sync part of this request would queue behind.
    checks: dict[str, Callable[[], Awaitable[str]]] = {
        "database": sync_to_async(_check_database, thread_sensitive=False),
    }
    if settings.REDIS_URL:
        checks["redis"] = _check_redis
    results: dict[str, str] = dict(
        zip(checks, await asyncio.gather(*(_run(name, check) for name, check in checks.items())), strict=True)
    )
    # Migrations are read from the database: only worth asking when it answers.
    if results["database"] == "ok":
        results["migrations"] = await _run("migrations", sync_to_async(_check_migrations, thread_sensitive=False))
    else:
        results["migrations"] = "skipped: the database is not reachable"
    failing = [name for name, result in results.items() if result.startswith("failed")]
    if not failing:
        return JsonResponse({"status": "ready", "checks": results})
    return error_response(
        ApiError(
            503,
            "SERVICE_UNAVAILABLE",
            f"Not ready: {', '.join(failing)}.",
            {"failing": failing, "checks": results},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    )
