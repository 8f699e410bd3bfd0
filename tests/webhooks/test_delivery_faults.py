"""No loss under faults: a deliverer killed mid-flight, a receiver that is down, hangs or
answers 500s, and database connections killed under the deliverer. Every event arrives;
an event that arrives twice carries the same `webhook-id` and body."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from tests.builders import World
from tests.conftest import free_port
from tests.waiting import wait_for
from tests.webhooks.support import (
    DelivererProcess,
    Receiver,
    create_endpoint,
    create_ticket,
    running,
    wait_delivered,
    wait_for_attempt,
)

pytestmark = pytest.mark.faults


def created_ids(world: World) -> list[str]:
    from events.ids import event_id_to_str
    from events.models import Event

    return [
        event_id_to_str(e)
        for e in Event.objects.filter(tenant=world.tenant, audience="partner")
        .order_by("id")
        .values_list("id", flat=True)
    ]


def assert_each_once_by_id(receiver: Receiver, expected: list[str]) -> None:
    bodies: dict[str, bytes] = {}
    for request in receiver.received:
        webhook_id = request.headers["webhook-id"]
        assert bodies.setdefault(webhook_id, request.body) == request.body, "a repeat must be the same message"
    assert set(bodies) == set(expected)


def test_a_deliverer_killed_mid_flight_loses_nothing(webhook_server, http_allowed: World) -> None:
    release = threading.Event()

    def hang_until_released(request):
        release.wait(30)
        return 200, {}, b"ok"

    receiver = Receiver(answer=hang_until_released).start()
    try:
        endpoint = create_endpoint(webhook_server.url, http_allowed.headers("admin"), url=f"{receiver.url}/h")
        first = DelivererProcess(WEBHOOKS_TIMEOUT_SECONDS="30").start()
        try:
            for i in range(5):
                create_ticket(webhook_server.url, http_allowed.headers("alice"), f"before {i}")
            receiver.wait_for(lambda r: len(r) >= 5)  # all five in flight, none acknowledged
            first.kill()  # kill -9
        finally:
            first.stop()
        release.set()
        for i in range(5):
            create_ticket(webhook_server.url, http_allowed.headers("alice"), f"meanwhile {i}")
        expected = created_ids(http_allowed)
        with running(DelivererProcess()):
            # Its lease (3 s) runs out, the next worker takes the endpoint over.
            wait_delivered(endpoint["id"], len(expected))
        assert_each_once_by_id(receiver, expected)
        assert len(receiver.received) >= 15  # the five in flight were sent again
    finally:
        release.set()
        receiver.stop()


def test_a_receiver_that_is_down_hangs_or_fails_gets_everything_once_it_recovers(
    webhook_server, http_allowed: World
) -> None:
    port = free_port()
    state = {"n": 0}

    def hang_then_fail_then_ok(request):
        state["n"] += 1
        if state["n"] == 1:
            time.sleep(3)  # beyond the deliverer's 2 s timeout
        if state["n"] <= 3:
            return 500, {}, b"not yet"
        return 200, {}, b"ok"

    endpoint = create_endpoint(webhook_server.url, http_allowed.headers("admin"), url=f"http://127.0.0.1:{port}/h")
    with running(DelivererProcess(WEBHOOKS_RETRY_SCHEDULE=",".join(["0.5"] * 40))):
        for i in range(3):
            create_ticket(webhook_server.url, http_allowed.headers("alice"), f"down {i}")
        wait_for_attempt(endpoint["id"], "network_error")  # nobody listens: connection refused, retried
        receiver = Receiver(answer=hang_then_fail_then_ok).start(port=port)
        try:
            expected = created_ids(http_allowed)
            wait_delivered(endpoint["id"], len(expected))
            assert_each_once_by_id(receiver, expected)
        finally:
            receiver.stop()
    from webhooks.models import DeliveryAttempt

    outcomes = set(DeliveryAttempt.objects.filter(endpoint_id=endpoint["id"]).values_list("outcome", flat=True))
    assert {"network_error", "timeout", "http_error", "success"} <= outcomes


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="kills PostgreSQL backends")
def test_database_connections_killed_under_the_deliverer_lose_nothing(webhook_server, http_allowed, receiver) -> None:
    endpoint = create_endpoint(webhook_server.url, http_allowed.headers("admin"), url=f"{receiver.url}/h")
    stop = threading.Event()
    killed: list[int] = []

    def kill_backends() -> None:
        import psycopg

        db = connection.settings_dict
        with psycopg.connect(
            host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"] or "postgres", dbname=db["NAME"]
        ) as conn:
            conn.autocommit = True
            while not stop.is_set():
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'webhook-deliverer'"
                ).fetchall()
                killed.append(len(rows))
                time.sleep(0.7)

    # The deliverer's connections are named, so only they are killed (not the test's or the server's).
    with running(DelivererProcess(PGAPPNAME="webhook-deliverer")):
        killer = threading.Thread(target=kill_backends, daemon=True)
        made = 0
        killer.start()
        try:
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                try:
                    create_ticket(webhook_server.url, http_allowed.headers("alice"), f"db {made}")
                    made += 1
                except AssertionError:
                    pass  # a 503 of the server: its request was not applied
                time.sleep(0.1)
        finally:
            stop.set()
            killer.join(5)
        expected = created_ids(http_allowed)
        assert made >= 3 and len(expected) >= made and sum(killed) > 0
        wait_delivered(endpoint["id"], len(expected), timeout=40)
    assert_each_once_by_id(receiver, expected)


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="kills PostgreSQL backends")
def test_a_deliverer_whose_lease_ran_out_while_a_request_waited_for_a_slot_does_not_send_it(
    webhook_server, http_allowed: World
) -> None:
    """A deliverer that cannot renew its leases (its database is unreachable) stops
    starting requests once they may have run out: another worker may hold the endpoint by
    then. That holds for a request that was waiting for one of the deliverer's in-flight
    slots when the lease went stale, not only for one started afterwards."""
    from urllib.parse import urlsplit

    from tests.conftest import test_database_url
    from tests.faults.db_proxy import CuttingProxy
    from webhooks.models import Delivery

    release_first = threading.Event()

    def first_one_held(request):
        if len(receiver.received) == 1:
            release_first.wait(30)  # answered once the deliverer's leases have gone stale
        return 200, {}, b"ok"

    database = urlsplit(test_database_url())
    proxy = CuttingProxy(upstream_port=database.port or 5432)
    receiver = Receiver(answer=first_one_held).start()
    output = ""
    try:
        credentials = database.netloc.rpartition("@")[0]
        deliverer = DelivererProcess(
            DATABASE_URL=database._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}").geturl(),
            WEBHOOKS_MAX_IN_FLIGHT="1",  # the second request waits for the first's slot
            WEBHOOKS_TIMEOUT_SECONDS="30",  # the first is answered, not cut short
        )
        endpoint = create_endpoint(webhook_server.url, http_allowed.headers("admin"), url=f"{receiver.url}/h")
        with running(deliverer):
            try:
                create_ticket(webhook_server.url, http_allowed.headers("alice"), "first")
                receiver.wait_for(lambda r: len(r) == 1)
                create_ticket(webhook_server.url, http_allowed.headers("alice"), "second")
                owed = len(created_ids(http_allowed))
                wait_for(
                    lambda: Delivery.objects.filter(endpoint_id=endpoint["id"]).count() >= owed,
                    timeout=20,
                    interval=0.05,
                    message="the deliverer did not take the second event in",
                )
                time.sleep(0.5)  # handed to the endpoint's task, which waits for the slot
                proxy.go_away()  # every connection of the deliverer cut, new ones refused
                # Its leases go stale 2.4 s (0.8 of 3 s) after their last renewal: before the sleep ends.
                time.sleep(3.5)
                release_first.set()
                wait_for(
                    lambda: "event=webhook_send_skipped_stale_lease" in deliverer.output(),
                    timeout=10,
                    interval=0.05,
                    message="the waiting request was not held back",
                )
                assert len(receiver.received) == 1, "a request was started on a lease that may have run out"
                proxy.refuse = False  # back: it renews its leases and sends what is owed
                expected = created_ids(http_allowed)
                wait_delivered(endpoint["id"], len(expected), timeout=40)
            finally:
                output = deliverer.output()
        assert_each_once_by_id(receiver, expected)
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n--- deliverer's log ---\n{output}") from failure
    finally:
        release_first.set()
        receiver.stop()
        proxy.close()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a server and a deliverer share Redis")
def test_after_a_redis_restart_the_deliverer_is_announced_new_events_again(
    transactional_db: None, http_allowed: World, receiver: Receiver, private_redis
) -> None:
    """A restarted Redis has lost the deliverer's group memberships and nothing tells it:
    it must join again by itself, or it is left with its poll (here 30 s) for good."""
    from tests.conftest import ServerProcess, wait_until_database_is_quiet
    from tests.webhooks.support import WEBHOOK_ENV
    from webhooks.models import Endpoint

    shared = {"REDIS_URL": private_redis.url, "REDIS_PREFIX": f"hooks{private_redis.port}"}
    server = ServerProcess(**WEBHOOK_ENV, **shared).start()
    deliverer = DelivererProcess(WEBHOOKS_POLL_SECONDS="30", **shared)
    headers = http_allowed.headers("admin")
    try:
        endpoint = create_endpoint(server.url, headers, url=f"{receiver.url}/h", eventTypes=["tickets.ticket.created"])
        with running(deliverer):

            def delivered_within(seconds: float, subject: str) -> float:
                before = len(receiver.received)
                started = time.monotonic()
                create_ticket(server.url, headers, subject)
                receiver.wait_for(lambda got: len(got) > before, timeout=seconds)
                return time.monotonic() - started

            # The deliverer has claimed the endpoint, and joins the tenant's group in the same cycle.
            claimed = Endpoint.objects.filter(id=endpoint["id"]).exclude(claimed_by="")
            wait_for(claimed.exists, timeout=30, interval=0.1, message="the deliverer never claimed the endpoint")
            time.sleep(1)
            delivered_within(3, "announced before")
            private_redis.stop()
            private_redis.start()
            time.sleep(3)  # a couple of the deliverer's claim cycles
            for n in range(2):
                delivered_within(3, f"announced after {n}")
            assert "webhook_memberships_lost" in deliverer.output()
    finally:
        server.stop()
        wait_until_database_is_quiet()
