"""Fixtures of the fault suite: a Redis of the test's own (to stop and restart) and two
worker processes sharing PostgreSQL and that Redis, each of which a test may kill."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.faults.redis_server import PrivateRedis

# Announced events arrive in well under a second; events found only by the hubs' poll take
# up to this long, so a test can tell the two apart.
FAULT_POLL_SECONDS = 3


@pytest.fixture
def two_workers(transactional_db: None, private_redis: PrivateRedis) -> Iterator[list[ServerProcess]]:
    """Two server processes on PostgreSQL (the test database) and `private_redis`."""
    env = {
        "REDIS_URL": private_redis.url,
        "REDIS_PREFIX": f"faults{private_redis.port}",
        "EVENT_HUB_POLL_SECONDS": str(FAULT_POLL_SECONDS),
        "SSE_LEASE_SECONDS": "6",
    }
    workers: list[ServerProcess] = []
    try:
        for _ in range(2):
            workers.append(ServerProcess(**env).start())
        yield workers
    finally:
        for worker in workers:
            worker.stop()
        wait_until_database_is_quiet()
