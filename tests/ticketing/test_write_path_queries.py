"""A change does a small, bounded number of queries, however many people it concerns:
the ticket lock, the change, its event's payload, the handlers' reads, one write of the
unit's notifications with one sorted lock of their counters, the log lock, the newest
id, one INSERT of the unit's events. Counted around the service call as a request makes
it (the request's own unit of work is open, as in core.views.RetryingAPIView)."""

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from events.models import Event
from events.recording import unit_of_work
from tenants.callers import caller_for_user
from tests.builders import World
from ticketing import services
from ticketing.models import Ticket

pytestmark = pytest.mark.django_db


def queries_of(fn: Callable[[], Any]) -> list[str]:
    with CaptureQueriesContext(connection) as captured, unit_of_work():
        fn()
    # The test's own transaction makes the unit a savepoint; a request's unit is the
    # transaction itself (BEGIN and COMMIT are not counted either).
    return [q["sql"] for q in captured.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]


@pytest.fixture
def ticket(acme: World) -> Ticket:
    admin = caller_for_user(acme.users["admin"])
    return services.create_ticket(
        caller=admin, data={"subject": "Printer", "assignee": acme.users["carol"], "requester": acme.users["bob"]}
    )


def watch(acme: World, ticket: Ticket, *names: str) -> None:
    admin = caller_for_user(acme.users["admin"])
    for name in names:
        services.add_watcher(caller=admin, ticket=ticket, user=acme.users[name])


def test_a_status_change_telling_three_people_is_at_most_16_queries_and_one_event_insert(acme: World, ticket):
    alice = caller_for_user(acme.users["alice"])
    watch(acme, ticket, "admin")
    before = Event.objects.count()
    sql = queries_of(lambda: services.update_ticket(caller=alice, ticket=ticket, data={"status": "in_progress"}))
    # The change, and one statusChange for each of requester, assignee and watcher.
    assert Event.objects.count() - before == 4
    assert len(sql) <= 16, "\n".join(sql)
    assert sum(s.startswith('INSERT INTO "events_event"') for s in sql) == 1
    assert sum("pg_advisory_xact_lock" in s for s in sql) <= 1


def test_more_watchers_do_not_mean_more_queries(acme: World, ticket):
    """Their notifications are one INSERT, their counters one sorted lock and one UPDATE."""
    alice = caller_for_user(acme.users["alice"])
    few = len(queries_of(lambda: services.add_comment(caller=alice, ticket=ticket, body="first")))
    watch(acme, ticket, "admin", "carol")
    many = len(queries_of(lambda: services.add_comment(caller=alice, ticket=ticket, body="second")))
    assert many == few <= 16


def test_creating_and_commenting_stay_small(acme: World, ticket):
    alice = caller_for_user(acme.users["alice"])
    created = queries_of(
        lambda: services.create_ticket(caller=alice, data={"subject": "Mouse", "assignee": acme.users["carol"]})
    )
    mentioned = queries_of(lambda: services.add_comment(caller=alice, ticket=ticket, body="@admin have a look"))
    assert len(created) <= 16, "\n".join(created)
    assert len(mentioned) <= 17, "\n".join(mentioned)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
def test_a_change_runs_on_prepared_statements_once_the_connection_has_seen_it(acme: World, ticket):
    """PostgreSQL skips parsing and planning a prepared statement: about a third of its CPU
    per change (bench/change_cost.py). psycopg prepares what a connection has run five
    times; a change's lock, log-lock, newest-id and event statements repeat every time."""
    alice = caller_for_user(acme.users["alice"])
    for priority in ["high", "low"] * 4:
        queries_of(lambda p=priority: services.update_ticket(caller=alice, ticket=ticket, data={"priority": p}))
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE from_sql = false")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any("pg_advisory_xact_lock" in sql for sql in prepared), prepared
    assert any('INSERT INTO "events_event"' in sql for sql in prepared), prepared
    assert any("FOR NO KEY UPDATE" in sql for sql in prepared), prepared
