"""Saved views when Redis stops answering, through a real server on a Redis of the test's
own: the note that tells the counts streams a view changed is sent after the answer,
never in the request's way (a lost note is healed by the streams' periodic re-read)."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from tests.builders import World
from tests.conftest import ServerProcess
from tests.faults.redis_server import PrivateRedis

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]


def test_saving_a_view_while_redis_is_paused_answers_at_once(
    transactional_db: None, private_redis: PrivateRedis, acme: World
):
    # The note waited for Redis in the request's thread, for up to 2 s a save or delete.
    server = ServerProcess(REDIS_URL=private_redis.url, REDIS_PREFIX=f"views{private_redis.port}").start()
    assert private_redis.proc is not None
    url = f"{server.url}/api/v2/ticketing/views"
    try:
        warm = httpx.post(url, json={"name": "Warm", "filter": {}}, headers=acme.headers("alice"), timeout=10)
        assert warm.status_code == 201, warm.text
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        try:
            saved = httpx.post(url, json={"name": "Mine", "filter": {}}, headers=acme.headers("alice"), timeout=10)
            assert saved.status_code == 201, saved.text
            deleted = httpx.delete(f"{url}/{saved.json()['data']['id']}", headers=acme.headers("alice"), timeout=10)
            assert deleted.status_code in (200, 204), deleted.text
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)
        for answer in (saved, deleted):
            assert answer.elapsed.total_seconds() < 1.5, f"{answer.request.method} took {answer.elapsed}"
        names = [view["name"] for view in httpx.get(url, headers=acme.headers("alice"), timeout=10).json()["data"]]
        assert names == ["Warm"]
    finally:
        server.stop()
