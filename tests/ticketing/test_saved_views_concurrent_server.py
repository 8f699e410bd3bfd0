"""Saved views changed and deleted by several requests at once, through the real server
(PostgreSQL): a row lock held from the test puts them in flight together. Each change
applies to the view as it is when it runs: none undoes another, and a deleted view stays
deleted."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.builders import World
from tests.envelopes import assert_envelope
from tests.lockhold import InFlight, holding, wait_for_lock_waiters
from tests.ticketing.test_saved_views import call, create
from ticketing.models import SavedView
from ticketing.view_services import MAX_VIEWS_PER_OWNER

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(60),
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the row locks are PostgreSQL's"),
]

LOCK_VIEW = "SELECT 1 FROM ticketing_savedview WHERE id = %s FOR UPDATE"


def test_creations_at_once_keep_an_owner_to_200_views(server, acme: World):
    """Each creation counted the owner's views, then inserted: two at once at 199 both
    counted 199, and the owner had 201."""
    owner = acme.users["alice"]
    SavedView.objects.bulk_create(
        SavedView(tenant=acme.tenant, owner=owner, name=f"view {n}") for n in range(MAX_VIEWS_PER_OWNER - 1)
    )
    # Inserts wait (reads do not) until the block ends: both creations are past their count.
    with holding("LOCK TABLE ticketing_savedview IN SHARE MODE", []):
        creations = [
            InFlight(lambda n=n: call(server, acme, "alice", "POST", body={"name": f"last {n}", "filter": None}))
            for n in range(2)
        ]
        wait_for_lock_waiters(2)

    answers = sorted((c.answer() for c in creations), key=lambda r: r.status_code)
    assert answers[0].status_code == 201, answers[0].text
    assert_envelope(answers[1], 409, "TOO_MANY_VIEWS")
    assert SavedView.objects.filter(owner=owner).count() == MAX_VIEWS_PER_OWNER


def test_a_view_deleted_while_it_is_being_changed_stays_deleted(server, acme: World):
    """The changes saved the copy they had read: a view deleted meanwhile was inserted
    again (200, and the view back after the 204), and the second such save answered 500."""
    view = create(server, acme, "alice")
    with holding(LOCK_VIEW, [view["id"]]):
        delete = InFlight(lambda: call(server, acme, "alice", "DELETE", f"/{view['id']}"))
        wait_for_lock_waiters(1)
        renames = [
            InFlight(lambda n=n: call(server, acme, "alice", "PATCH", f"/{view['id']}", {"name": f"Renamed {n}"}))
            for n in range(2)
        ]
        wait_for_lock_waiters(3)

    assert delete.answer().status_code == 204, delete.answer().text
    for rename in renames:
        assert_envelope(rename.answer(), 404, "VIEW_NOT_FOUND")
    assert not SavedView.objects.filter(pk=view["id"]).exists()
    assert_envelope(call(server, acme, "alice", "GET", f"/{view['id']}"), 404, "VIEW_NOT_FOUND")


def test_two_changes_of_different_fields_at_once_both_stay(server, acme: World):
    """Each change wrote back every field of the copy it had read, so the second undid the
    first (its 200 answer showed a name the view no longer had)."""
    view = create(server, acme, "alice")
    sort_order = [{"column": "priority", "order": "DESC"}]
    with holding(LOCK_VIEW, [view["id"]]):
        rename = InFlight(lambda: call(server, acme, "alice", "PATCH", f"/{view['id']}", {"name": "Renamed"}))
        wait_for_lock_waiters(1)
        resort = InFlight(lambda: call(server, acme, "alice", "PATCH", f"/{view['id']}", {"sortOrder": sort_order}))
        wait_for_lock_waiters(2)

    assert rename.answer().status_code == 200, rename.answer().text
    assert resort.answer().status_code == 200, resort.answer().text
    shown = call(server, acme, "alice", "GET", f"/{view['id']}").json()["data"]
    assert (shown["name"], shown["sortOrder"]) == ("Renamed", sort_order)
