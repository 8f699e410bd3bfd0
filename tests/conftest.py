"""Shared fixtures: the two-tenant world, API clients, and real server processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.test import TransactionTestCase
from rest_framework.test import APIClient

from tenants.callers import clear_realm_cache
from tests.builders import World, make_world

# One free-port helper for the suite, in the module the benchmarks import without Django.
from tests.pushpin import free_port
from tests.waiting import holds_within

if TYPE_CHECKING:
    from tests.edge_proxy import EdgeServer
    from tests.faults.redis_server import PrivateRedis

ROOT = Path(__file__).resolve().parent.parent

# The checkout's .env (DEBUG=1, written by `make run`; config/local_env.py) is for the
# developer's commands; the suite and the commands it runs in subprocesses never read it.
os.environ["ENV_FILE"] = os.devnull

# The suite runs with DEBUG off (production settings) but speaks plain http, through the
# test client and to its server processes (ServerProcess sets the same through the
# environment): no redirect to https. Cookies stay Secure, as in production.
settings.SECURE_SSL_REDIRECT = False

# Rate limits far above what any test sends, in process and in the server processes (the
# fuzzers send hundreds of requests a minute as one user); tests/core/test_rate_limits_server.py
# starts servers with limits of its own.
SUITE_RATE_LIMITS = {
    "RATE_LIMIT_PER_USER": "100000/minute",
    "RATE_LIMIT_PER_API_KEY": "100000/minute",
    "RATE_LIMIT_PER_TENANT": "1000000/minute",
}
for _name, _value in SUITE_RATE_LIMITS.items():
    setattr(settings, _name, os.environ.get(_name, _value))


def _flush_retrying_deadlocks(original):
    """Teardown of transactional tests truncates every table. A server process polling the
    log at that instant can deadlock with the TRUNCATE; PostgreSQL then cancels one side,
    and the right answer is to truncate again."""

    def teardown(self):
        for attempt in range(5):
            try:
                return original(self)
            except Exception as exc:
                if (
                    "deadlock" not in str(exc).lower() and "deadlock" not in str(exc.__cause__).lower()
                ) or attempt == 4:
                    raise
                time.sleep(0.2)
        return None

    return teardown


TransactionTestCase._fixture_teardown = _flush_retrying_deadlocks(TransactionTestCase._fixture_teardown)


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    clear_realm_cache()
    yield
    clear_realm_cache()


@pytest.fixture
def acme(db: None) -> World:
    return make_world("acme", origins=("https://app.acme.example",))


@pytest.fixture
def globex(db: None) -> World:
    return make_world("globex", origins=("https://desk.globex.example",))


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def test_database_url() -> str:
    db = settings.DATABASES["default"]
    if connection.vendor == "postgresql":
        user = db.get("USER") or "postgres"
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


class ServerProcess:
    """A real server process (config.serve: uvicorn) on a free port, against the test database."""

    def __init__(self, *args: str, **env: str) -> None:
        # `args`: more options of config.serve (`--server daphne`, `--workers 2`, ...).
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "SECRET_KEY": "test-only-secret-key",
            "DEBUG": "0",
            # Production settings over plain http://127.0.0.1: no redirect to https (cookies
            # stay Secure, which browsers accept from 127.0.0.1; HSTS is only sent over https).
            "SECURE_SSL_REDIRECT": "0",
            "SSE_HEARTBEAT_SECONDS": "1",
            "SSE_CREDENTIAL_CHECK_SECONDS": "1",
            "EVENT_HUB_POLL_SECONDS": "0.5",
            "SSE_LEASE_SECONDS": "6",
            "LOG_LEVEL": "WARNING",
            **{name: os.environ.get(name, value) for name, value in SUITE_RATE_LIMITS.items()},
            **env,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        """Where the server's output goes (deleted by `stop`)."""
        return ROOT / f".server-{self.port}.log"

    def start(self) -> ServerProcess:
        log = open(self.log_path, "wb")  # noqa: SIM115  (kept open while it runs)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "config.serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
                *self.args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/api/schema/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start in 30 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log_path.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wait_until_database_is_quiet(timeout: float = 10.0) -> None:
    """Wait until no other session is mid-query or mid-transaction on the test database.

    The test's teardown truncates every table; a server process still finishing a
    snapshot for a stream the test just closed would deadlock with it."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:

        def quiet() -> bool:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state NOT IN ('idle')"
            )
            return cursor.fetchone()[0] == 0

        # Best effort: a teardown that still meets a deadlock truncates again.
        holds_within(quiet, timeout=timeout, interval=0.05)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's test database, and at the end of the session, before it is dropped,
    any session still connected to it ended and named in a warning. PostgreSQL refuses to
    drop a database with sessions on it, which left the test database behind with only a
    bare "1 other session" warning; the servers' fixtures have stopped by then (they
    depend on this one), so whatever is left is a leak that this warning names."""
    yield
    if connection.vendor != "postgresql":
        return
    import psycopg

    # This process's own pool first, as Django's teardown would; then look from outside.
    connection.close()
    connection.close_pool()
    params = connection.settings_dict
    with psycopg.connect(
        dbname="postgres",
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        user=params["USER"] or None,
        password=params["PASSWORD"] or None,
        autocommit=True,
    ) as outside:
        others = outside.execute(
            "SELECT pid, application_name, state, now() - backend_start, left(query, 160), "
            "pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            [params["NAME"]],
        ).fetchall()
    if others:
        described = "; ".join(
            f"pid {pid} {app or '(no application name)'} {state} for {age}, last query {query!r}"
            for pid, app, state, age, query, _ in others
        )
        warnings.warn(f"ended {len(others)} session(s) left on the test database: {described}", stacklevel=1)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis of the test's own on a free port, which the test may stop and restart."""
    from tests.faults.redis_server import PrivateRedis  # it imports this module

    redis_server = PrivateRedis().start()
    yield redis_server
    redis_server.close()


@pytest.fixture(scope="session")
def _server_process(django_db_setup: None, django_db_blocker: object) -> Iterator[ServerProcess]:
    proc = ServerProcess().start()
    yield proc
    proc.stop()


@pytest.fixture
def server(transactional_db: None, _server_process: ServerProcess) -> Iterator[ServerProcess]:
    """The session's server process, for a test whose data it must see (committed)."""
    yield _server_process
    wait_until_database_is_quiet()


@pytest.fixture(scope="session")
def _server_without_write_slots(django_db_setup: None, django_db_blocker: object) -> Iterator[ServerProcess]:
    proc = ServerProcess(WRITE_CONCURRENCY="0").start()
    yield proc
    proc.stop()


@pytest.fixture
def server_without_write_slots(
    transactional_db: None, _server_without_write_slots: ServerProcess
) -> Iterator[ServerProcess]:
    """A server whose writes do not queue for write slots (core.write_slots): concurrent
    writes of one ticket meet at PostgreSQL's locks, as writes from several worker
    processes do. For the tests of the database's lock order."""
    yield _server_without_write_slots
    wait_until_database_is_quiet()


@pytest.fixture(scope="session")
def _edge_process(django_db_setup: None, django_db_blocker: object) -> Iterator[EdgeServer]:
    from tests.edge_proxy import EdgeServer, pushpin_installed
    from tests.faults.redis_server import PrivateRedis

    if not pushpin_installed():
        raise RuntimeError("pushpin is not installed (Debian: apt-get install pushpin); `make test` installs it")
    # The edge needs Redis (its channel registry); a private one when the suite runs without.
    private = None if os.environ.get("REDIS_URL") else PrivateRedis().start()
    edge = EdgeServer(os.environ.get("REDIS_URL") or private.url).start()  # type: ignore[union-attr]
    yield edge
    edge.stop()
    if private is not None:
        private.close()


@pytest.fixture
def edge_server(transactional_db: None, _edge_process: EdgeServer) -> Iterator[EdgeServer]:
    """The session's edge deployment: Pushpin in front of a worker with SSE_EDGE=pushpin,
    and the edge publisher (tests.edge_proxy)."""
    yield _edge_process
    wait_until_database_is_quiet()


@pytest.fixture(params=["worker", pytest.param("edge", marks=pytest.mark.edge)])
def worker_or_edge(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[ServerProcess | EdgeServer]:
    """For the suites of the streams the edge can hold: each test runs against a worker
    serving the stream itself and against the edge deployment (Pushpin holding it), unless
    it names one with WORKER_ONLY. A module uses it as its `server`."""
    yield request.getfixturevalue("edge_server" if request.param == "edge" else "_server_process")
    wait_until_database_is_quiet()


# A test of behaviour only a worker serving the stream has (its threads, its shutdown).
WORKER_ONLY = pytest.mark.parametrize("worker_or_edge", ["worker"], indirect=True)


@pytest.fixture
def second_server(transactional_db: None) -> Iterator[ServerProcess]:
    """A second worker process sharing the database and the channel layer."""
    proc = ServerProcess().start()
    yield proc
    proc.stop()
    wait_until_database_is_quiet()
