"""The probes (core.health) through real server processes: `/healthz` answers whatever the
dependencies do; `/readyz` is 200 only when the database, Redis (when configured) and the
migrations are, and otherwise a 503 in the envelope naming each failing part."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import httpx
import pytest
from django.conf import settings
from django.db import connection

from tests import conftest
from tests.conftest import ROOT, ServerProcess, free_port
from tests.waiting import wait_for

if TYPE_CHECKING:
    from tests.builders import World
    from tests.faults.redis_server import PrivateRedis

TIMEOUT = 10  # each probe answers within its checks' budget (2 s each); generous for a busy machine


@contextmanager
def running(**env: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(**env).start()
    try:
        yield proc
    finally:
        proc.stop()


@contextmanager
def empty_database() -> Iterator[str]:
    """The URL of a database that exists and has no tables (the test runs in autocommit:
    CREATE DATABASE cannot run in a transaction)."""
    if connection.vendor != "postgresql":
        path = ROOT / f".readyz-{uuid.uuid4().hex}.sqlite3"
        try:
            yield f"sqlite:///{path}"
        finally:
            path.unlink(missing_ok=True)
        return
    name = f"{settings.DATABASES['default']['NAME']}_readyz_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield conftest.test_database_url().rsplit("/", 1)[0] + f"/{name}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def missing_database_url() -> str:
    if connection.vendor != "postgresql":
        return f"sqlite:///{ROOT / 'no-such-dir' / 'db.sqlite3'}"
    return conftest.test_database_url().rsplit("/", 1)[0] + f"/no_such_database_{uuid.uuid4().hex[:8]}"


def assert_not_ready(response: httpx.Response, failing: list[str]) -> dict:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    details = body["error"]["details"]
    assert details["failing"] == failing, details
    for part in failing:
        assert part in body["error"]["message"]
        assert details["checks"][part].startswith("failed"), details
    return details


def test_both_probes_answer_200_on_a_ready_server(server: ServerProcess) -> None:
    # No credentials, no tenant headers: what an orchestrator sends.
    health = httpx.get(f"{server.url}/healthz", timeout=TIMEOUT)
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}

    ready = httpx.get(f"{server.url}/readyz", timeout=TIMEOUT)
    assert ready.status_code == 200, ready.text
    expected = {"database": "ok", "migrations": "ok"} | ({"redis": "ok"} if settings.REDIS_URL else {})
    assert ready.json() == {"status": "ready", "checks": expected}
    # Probed again (the migrations answer now comes from the process's memory): the same.
    assert httpx.get(f"{server.url}/readyz", timeout=TIMEOUT).json() == ready.json()
    assert httpx.head(f"{server.url}/readyz", timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_a_probe_answers_another_method_with_405(server: ServerProcess, path: str, method: str) -> None:
    # GET or HEAD only: Django's CSRF check ran before the method check and answered 403.
    response = httpx.request(method, f"{server.url}{path}", timeout=TIMEOUT)
    assert response.status_code == 405, response.text[:300]
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.django_db(transaction=True)
def test_redis_down_is_not_ready_but_alive() -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with running(REDIS_URL=closed) as proc:
        details = assert_not_ready(httpx.get(f"{proc.url}/readyz", timeout=TIMEOUT), ["redis"])
        # The database is fine and says so; the driver's error text (hosts, ports) is not shown.
        assert details["checks"]["database"] == "ok"
        assert details["checks"]["migrations"] == "ok"
        assert "127.0.0.1" not in str(details)
        health = httpx.get(f"{proc.url}/healthz", timeout=TIMEOUT)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})


@pytest.mark.django_db(transaction=True)
def test_a_database_that_does_not_exist_is_not_ready_but_alive() -> None:
    url = missing_database_url()
    # Without Redis: the database alone is named.
    with running(DATABASE_URL=url, REDIS_URL="") as proc:
        details = assert_not_ready(httpx.get(f"{proc.url}/readyz", timeout=TIMEOUT), ["database"])
        assert details["checks"]["migrations"].startswith("skipped")
        assert "redis" not in details["checks"]
        assert url.rsplit("/", 1)[1] not in str(details)
        assert httpx.get(f"{proc.url}/healthz", timeout=TIMEOUT).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_an_unmigrated_database_is_not_ready_until_migrate_has_run() -> None:
    with empty_database() as url, running(DATABASE_URL=url, REDIS_URL="") as proc:
        details = assert_not_ready(httpx.get(f"{proc.url}/readyz", timeout=TIMEOUT), ["migrations"])
        assert details["checks"]["database"] == "ok"
        assert "unapplied" in details["checks"]["migrations"]
        assert httpx.get(f"{proc.url}/healthz", timeout=TIMEOUT).status_code == 200

        # The one-shot migrate job runs: the same worker turns ready (a negative answer is
        # not remembered).
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=ROOT,
            env=proc.env,
            check=True,
            timeout=180,
            capture_output=True,
        )
        ready = httpx.get(f"{proc.url}/readyz", timeout=TIMEOUT)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "migrations": "ok"}


@pytest.mark.django_db(transaction=True)
def test_redis_going_away_turns_a_ready_worker_not_ready_until_it_is_back(private_redis: PrivateRedis) -> None:
    with running(REDIS_URL=private_redis.url) as proc:
        ready = httpx.get(f"{proc.url}/readyz", timeout=TIMEOUT)
        assert ready.status_code == 200, ready.text

        private_redis.stop()  # a crash: connections reset, nothing listens
        details = assert_not_ready(httpx.get(f"{proc.url}/readyz", timeout=TIMEOUT), ["redis"])
        assert details["checks"]["database"] == "ok"
        assert httpx.get(f"{proc.url}/healthz", timeout=TIMEOUT).status_code == 200

        private_redis.start()
        answers: list[httpx.Response] = []

        def ready_again() -> bool:
            answers.append(httpx.get(f"{proc.url}/readyz", timeout=TIMEOUT))
            return answers[-1].status_code == 200

        wait_for(
            ready_again,
            timeout=TIMEOUT,
            interval=0.2,
            message=lambda: f"not ready again after Redis came back: {answers[-1].text}",
        )
        assert answers[-1].json()["checks"]["redis"] == "ok"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the worker's connection pool is PostgreSQL's")
def test_readiness_probes_leave_the_workers_connection_pool_whole(transactional_db: None, acme: World) -> None:
    """An orchestrator probes every few seconds for the life of the worker: probing must
    not cost the requests anything. With a pool of 3 connections, twelve probes and then
    requests that need the database: each is answered at once (the probes used to take a
    pooled connection each and close it, so after three the requests waited for the pool
    until they were refused, and the probe itself turned not ready)."""
    with running(
        DB_POOL_MIN_SIZE="1", DB_POOL_MAX_SIZE="3", DB_POOL_TIMEOUT_SECONDS="1", DB_POOL_BUSY_WAIT_SECONDS="2"
    ) as proc:
        for _ in range(12):
            ready = httpx.get(f"{proc.url}/readyz", timeout=TIMEOUT)
            assert ready.status_code == 200, ready.text
        for n in range(4):
            created = httpx.post(
                f"{proc.url}/api/v2/ticketing/ticket",
                json={"subject": f"after probes {n}"},
                headers=acme.headers("alice"),
                timeout=TIMEOUT,
            )
            assert created.status_code == 201, created.text
            assert created.elapsed.total_seconds() < 1, created.elapsed
