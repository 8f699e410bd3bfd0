"""A change does a small, bounded number of queries, however many people it concerns:
the ticket lock, the change, its event's payload, the handlers' reads, one write of the
unit's notifications with one sorted lock of their counters (then an UPDATE per counter),
the log lock, the newest
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


def counter_updates(sql: list[str]) -> int:
    """The UPDATEs of notified users' badge counters: one each (the one part of a change
    that grows with the people it tells)."""
    return sum(s.startswith('UPDATE "notifications_notificationcounter"') for s in sql)


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


def test_a_status_change_telling_three_people_is_at_most_16_queries_besides_their_counters(acme: World, ticket):
    alice = caller_for_user(acme.users["alice"])
    watch(acme, ticket, "admin")
    before = Event.objects.count()
    sql = queries_of(lambda: services.update_ticket(caller=alice, ticket=ticket, data={"status": "in_progress"}))
    # The change, and one statusChange for each of requester, assignee and watcher.
    assert Event.objects.count() - before == 4
    assert counter_updates(sql) == 3
    assert len(sql) - counter_updates(sql) <= 16, "\n".join(sql)
    assert sum(s.startswith('INSERT INTO "events_event"') for s in sql) == 1
    assert sum("pg_advisory_xact_lock" in s for s in sql) <= 1


def test_more_watchers_mean_only_their_counter_updates(acme: World, ticket):
    """Notifying more people adds one UPDATE of each one's badge counter (cheaper than one
    bulk UPDATE for the few a change usually tells; notifications.services) and nothing
    else: one INSERT of the notifications, one sorted lock of the counters."""
    alice = caller_for_user(acme.users["alice"])
    few = queries_of(lambda: services.add_comment(caller=alice, ticket=ticket, body="first"))
    watch(acme, ticket, "admin", "carol")
    many = queries_of(lambda: services.add_comment(caller=alice, ticket=ticket, body="second"))

    assert len(few) <= 16, "\n".join(few)
    # admin is new; carol, the assignee, was told of the first comment already.
    assert counter_updates(many) == counter_updates(few) + 1
    assert len(many) == len(few) + 1
    assert sum(s.startswith('INSERT INTO "notifications_notification"') for s in many) == 1
    assert sum('FROM "notifications_notificationcounter"' in s and "FOR UPDATE" in s for s in many) == 1


def test_creating_and_commenting_stay_small(acme: World, ticket):
    alice = caller_for_user(acme.users["alice"])
    created = queries_of(
        lambda: services.create_ticket(caller=alice, data={"subject": "Mouse", "assignee": acme.users["carol"]})
    )
    mentioned = queries_of(lambda: services.add_comment(caller=alice, ticket=ticket, body="@admin have a look"))
    assert len(created) - counter_updates(created) <= 16, "\n".join(created)
    assert len(mentioned) - counter_updates(mentioned) <= 17, "\n".join(mentioned)
