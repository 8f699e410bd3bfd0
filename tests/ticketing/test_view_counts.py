"""Live counts of saved views, through the real server with a real SSE client: counts per
visible view at the start, ±1 within a second when a ticket enters or leaves a view,
nothing for views a change does not touch, nothing from another tenant."""

import json
import time

import httpx
import pytest

from tests.builders import World
from tests.sse_client import SseStream, open_stream

pytestmark = pytest.mark.django_db(transaction=True)

COUNTS_URL = "/api/v2/ticketing/views/counts/stream"


def where(column: str, value: str) -> dict:
    return {"op": "AND", "operand": [{"id": column, "column": column, "op": "EQ", "operand": value}]}


def open_and_closed_views(world: World) -> dict:
    """Two views shared with the tenant, by name: "Open" and "Closed" tickets."""
    from ticketing.models import SavedView

    return {
        name: SavedView.objects.create(
            tenant=world.tenant,
            owner=world.users["admin"],
            name=name,
            filter=where("status", status),
            visibility="tenant",
        )
        for name, status in (("Open", "open"), ("Closed", "closed"))
    }


def save_view(server, world: World, user: str, name: str, filter: dict, **fields) -> str:
    response = httpx.post(
        f"{server.url}/api/v2/ticketing/views",
        headers=world.headers(user),
        json={"name": name, "filter": filter, **fields},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def create(server, world: World, user: str = "alice", **fields) -> dict:
    response = httpx.post(
        f"{server.url}/api/v2/ticketing/ticket",
        headers=world.headers(user),
        json={"subject": "Printer on fire", **fields},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def patch(server, world: World, ticket_id: str, **fields) -> None:
    response = httpx.patch(
        f"{server.url}/api/v2/ticketing/ticket/{ticket_id}", headers=world.headers("admin"), json=fields, timeout=10
    )
    assert response.status_code == 200, response.text


def snapshot(stream: SseStream) -> dict[str, int]:
    assert stream.next().event == "connected"
    frame = stream.next()
    assert frame.event == "snapshot"
    return {v["name"]: v["count"] for v in frame.data["views"]}


def next_counts(stream: SseStream, ids: dict[str, str], timeout: float = 10.0) -> dict[str, int]:
    frame = stream.next(timeout=timeout)
    assert frame.event == "counts", frame
    names = {view_id: name for name, view_id in ids.items()}
    return {names[v["id"]]: v["count"] for v in frame.data["views"]}


def test_a_change_moving_a_ticket_between_views_updates_both_counts_for_every_watcher(server, acme: World):
    ids = {
        "Open": save_view(server, acme, "admin", "Open", where("status", "open"), visibility="tenant"),
        "In progress": save_view(
            server, acme, "admin", "In progress", where("status", "in_progress"), visibility="tenant"
        ),
        "Urgent": save_view(server, acme, "alice", "Urgent", where("priority", "urgent")),
    }
    ticket = create(server, acme, team="operation")
    create(server, acme, status="in_progress")
    url = f"{server.url}{COUNTS_URL}"
    with (
        open_stream("GET", url, headers=acme.headers("alice")) as alice,
        open_stream("GET", url, headers=acme.headers("admin")) as admin,
    ):
        assert snapshot(alice) == {"Open": 1, "In progress": 1, "Urgent": 0}
        assert snapshot(admin) == {"Open": 1, "In progress": 1}  # alice's private view is hers

        started = time.monotonic()
        patch(server, acme, ticket["id"], status="in_progress")
        assert next_counts(alice, ids) == {"Open": 0, "In progress": 2}
        assert next_counts(admin, ids) == {"Open": 0, "In progress": 2}
        elapsed = time.monotonic() - started
        # The issue asks for 1 s; the bound is loose because the test box is shared and loaded.
        assert elapsed < 5, elapsed

        # Only the view the ticket entered: nothing for "Open" or "In progress".
        patch(server, acme, ticket["id"], priority="urgent")
        assert next_counts(alice, ids) == {"Urgent": 1}
        # A change inside every view it was in moves no count: the next frame is the one after.
        patch(server, acme, ticket["id"], subject="Still on fire")
        create(server, acme)
        assert next_counts(alice, ids) == {"Open": 1}
        assert next_counts(admin, ids) == {"Open": 1}


def test_an_end_user_counts_only_the_tickets_they_may_see(server, acme: World):
    ids = {"Open": save_view(server, acme, "admin", "Open", where("status", "open"), visibility="tenant")}
    create(server, acme, user="dave")
    create(server, acme, user="bob")
    with open_stream("GET", f"{server.url}{COUNTS_URL}", headers=acme.headers("bob")) as bob:
        assert snapshot(bob) == {"Open": 1}
        create(server, acme, user="dave")  # not bob's: his count does not move
        create(server, acme, user="bob")
        assert next_counts(bob, ids) == {"Open": 2}


def test_another_tenants_changes_send_nothing(server, acme: World, globex: World):
    ids = {"Open": save_view(server, acme, "admin", "Open", where("status", "open"), visibility="tenant")}
    save_view(server, globex, "admin", "Globex open", where("status", "open"), visibility="tenant")
    with (
        open_stream("GET", f"{server.url}{COUNTS_URL}", headers=acme.headers("alice")) as alice,
        open_stream("GET", f"{server.url}{COUNTS_URL}", headers=globex.headers("alice")) as other,
    ):
        assert snapshot(alice) == {"Open": 0}
        assert snapshot(other) == {"Globex open": 0}
        create(server, globex)
        create(server, acme)
        assert next_counts(alice, ids) == {"Open": 1}  # the first frame is acme's own change
        frame = other.next()
        assert frame.event == "counts" and [v["count"] for v in frame.data["views"]] == [1]


def change_view(server, world: World, user: str, view_id: str, method: str = "PATCH", **fields) -> None:
    response = httpx.request(
        method,
        f"{server.url}/api/v2/ticketing/views/{view_id}",
        headers=world.headers(user),
        json=fields if method == "PATCH" else None,
        timeout=10,
    )
    assert response.status_code == (200 if method == "PATCH" else 204), response.text


def next_snapshot(stream: SseStream) -> dict[str, int]:
    frame = stream.next()
    assert frame.event == "snapshot", frame
    return {v["name"]: v["count"] for v in frame.data["views"]}


def test_a_view_someone_else_unshares_refilters_or_deletes_is_no_longer_counted_as_it_was(server, acme: World):
    """The counts stream read the views once, when it opened: a tenant view an admin made
    private kept being counted on every other user's open stream (a view they were told
    404 for), and one refiltered kept its old filter's count until the page was reloaded."""
    open_id = save_view(server, acme, "admin", "Open", where("status", "open"), visibility="tenant")
    urgent_id = save_view(server, acme, "admin", "Urgent", where("priority", "urgent"), visibility="tenant")
    bob_id = str(acme.users["bob"].id)
    create(server, acme, requester=bob_id)
    create(server, acme, requester=bob_id, priority="urgent", status="in_progress")
    url = f"{server.url}{COUNTS_URL}"
    with (
        open_stream("GET", url, headers=acme.headers("alice")) as alice,
        open_stream("GET", url, headers=acme.headers("bob")) as bob,
    ):
        assert snapshot(alice) == {"Open": 1, "Urgent": 1}
        assert snapshot(bob) == {"Open": 1, "Urgent": 1}

        change_view(server, acme, "admin", open_id, visibility="private")
        assert next_snapshot(alice) == {"Urgent": 1}
        assert next_snapshot(bob) == {"Urgent": 1}
        # Its count is not sent to them any more; the admin's own stream would have it.
        create(server, acme, requester=bob_id, priority="urgent")
        assert next_counts(alice, {"Urgent": urgent_id}) == {"Urgent": 2}
        assert next_counts(bob, {"Urgent": urgent_id}) == {"Urgent": 2}

        change_view(server, acme, "admin", urgent_id, filter=where("status", "in_progress"))
        assert next_snapshot(alice) == {"Urgent": 1}
        assert next_snapshot(bob) == {"Urgent": 1}

        change_view(server, acme, "admin", urgent_id, method="DELETE")
        assert next_snapshot(alice) == {}
        assert next_snapshot(bob) == {}

        # A view shared with them afterwards is counted without reopening.
        save_view(server, acme, "admin", "Closed", where("status", "closed"), visibility="tenant")
        assert next_snapshot(alice) == {"Closed": 0}
        assert next_snapshot(bob) == {"Closed": 0}


def test_a_user_without_views_gets_an_empty_snapshot_and_the_stream_needs_credentials(server, acme: World):
    with open_stream("GET", f"{server.url}{COUNTS_URL}", headers=acme.headers("carol")) as carol:
        assert snapshot(carol) == {}
    headers = {k: v for k, v in acme.headers("carol").items() if k != "Authorization"}
    response = httpx.get(f"{server.url}{COUNTS_URL}", headers=headers, timeout=10)
    assert response.status_code == 401 and response.json()["error"]["code"] == "MISSING_TOKEN"


def test_counts_are_matched_once_per_distinct_query_and_fanned_out_to_its_watchers(acme: World):
    """The board's arithmetic, without a server: a thousand watchers of the same two views
    cost two matches per change, and only the watchers of a moved count are told."""
    import uuid

    from events.hub import LogEvent, Subscriber
    from tenants.callers import caller_for_user
    from ticketing.events import TicketEvent
    from ticketing.view_counts import COUNTS_CHANGED, CountBoard, CountEntry, CountWatcher
    from ticketing.view_selectors import saved_view_query

    admin = caller_for_user(acme.users["admin"])
    views = open_and_closed_views(acme)
    queries = {str(v.id): saved_view_query(admin, v) for v in views.values()}
    board = CountBoard(hub=None, tenant_id=acme.tenant.id)  # type: ignore[arg-type]
    for query in queries.values():
        entry = board.entries[query.match_key] = CountEntry(query)
        entry.settle(uuid.UUID(int=1), 5, True)
    subscribers = [Subscriber(acme.tenant.id, max_pending=10) for _ in range(1000)]
    watchers = [CountWatcher(s, queries) for s in subscribers]
    for watcher in watchers:
        for key in watcher.by_key:
            board.entries[key].watchers.add(watcher)
    ticket = {"id": str(uuid.uuid4()), "status": "in_progress", "priority": "low", "team": "", "requester": None}
    event = LogEvent(
        id=uuid.UUID(int=2),
        ulid="x",
        tenant_id=acme.tenant.id,
        type=TicketEvent.UPDATED,
        occurred_at="",
        payload={"ticket": ticket},
        changes={"status": {"from": "open", "to": "in_progress"}},
        api={},
    )
    board.apply_all([event])
    assert len(event.memo["membership"]) == 2  # one answer per distinct query, for 1000 watchers
    open_key = queries[str(views["Open"].id)].match_key
    assert board.entries[open_key].count == 4
    assert all(s.pending == [COUNTS_CHANGED] for s in subscribers)  # one wake-up each
    items = json.loads(f"[{watchers[0].take(board)}]")
    assert items == [{"id": str(views["Open"].id), "count": 4, "exact": True}]
    older = LogEvent(**{**event.__dict__, "id": uuid.UUID(int=1), "frames": {}, "memo": {}})
    board.apply_all([older])  # at or below the position its COUNT was read at: already counted
    assert board.entries[open_key].count == 4


def test_the_periodic_recount_heals_a_count_that_drifted(acme: World):
    """A ticket written behind the services' back (no event) is not seen by the ±1 path;
    the recount every VIEW_COUNT_RESYNC_SECONDS brings the count back to the truth."""
    from tests.conftest import ServerProcess, wait_until_database_is_quiet
    from ticketing.models import Ticket

    server = ServerProcess(VIEW_COUNT_RESYNC_SECONDS="1").start()
    try:
        ids = {"Open": save_view(server, acme, "admin", "Open", where("status", "open"), visibility="tenant")}
        with open_stream("GET", f"{server.url}{COUNTS_URL}", headers=acme.headers("alice")) as alice:
            assert snapshot(alice) == {"Open": 0}
            Ticket.objects.create(tenant=acme.tenant, number="TKT-2026-999999", subject="Imported", status="open")
            assert next_counts(alice, ids) == {"Open": 1}
    finally:
        server.stop()
        wait_until_database_is_quiet()


def test_watchers_out_of_step_each_get_their_own_changes_in_the_counts_frame_format(acme: World, monkeypatch):
    """Watchers with the same views share the work of their frames (CountWatcher.take),
    yet each gets what changed since its own last frame, a count that changed back is not
    sent, and the frame is exactly what sse_frame makes of the changed views."""
    import uuid

    from events.hub import LogEvent, Subscriber
    from events.sse import sse_frame
    from tenants.callers import caller_for_user
    from ticketing import view_counts
    from ticketing.events import TicketEvent
    from ticketing.view_selectors import saved_view_query

    monkeypatch.setattr(view_counts, "iso_now", lambda: "2026-01-01T00:00:00Z")
    admin = caller_for_user(acme.users["admin"])
    views = open_and_closed_views(acme)
    ids = {name: str(v.id) for name, v in views.items()}
    queries = {str(v.id): saved_view_query(admin, v) for v in views.values()}
    board = view_counts.CountBoard(hub=None, tenant_id=acme.tenant.id)  # type: ignore[arg-type]
    for query in queries.values():
        entry = board.entries[query.match_key] = view_counts.CountEntry(query)
        entry.settle(uuid.UUID(int=1), 5, True)
    w1, w2, w3 = (view_counts.CountWatcher(Subscriber(acme.tenant.id, max_pending=10), queries) for _ in range(3))
    for watcher in (w1, w2, w3):
        for key in watcher.by_key:
            board.entries[key].watchers.add(watcher)
        board.enter_layout(watcher)
        watcher.sent = dict.fromkeys(watcher.by_key, (5, True))  # the snapshot
        watcher.taken_at = board.version
    assert w1.layout is w2.layout is w3.layout

    ticket_id = str(uuid.uuid4())
    ticket_ids = iter(range(2, 100))

    def move(status_from: str, status_to: str) -> None:
        ticket = {"id": ticket_id, "status": status_to, "priority": "low", "team": "", "requester": None}
        board.apply_all(
            [
                LogEvent(
                    id=uuid.UUID(int=next(ticket_ids)),
                    ulid="x",
                    tenant_id=acme.tenant.id,
                    type=TicketEvent.UPDATED,
                    occurred_at="",
                    payload={"ticket": ticket},
                    changes={"status": {"from": status_from, "to": status_to}},
                    api={},
                )
            ]
        )

    def frame(watcher: view_counts.CountWatcher) -> dict[str, int] | None:
        items = watcher.take(board)
        if items is None:
            return None
        got = view_counts.counts_frame(items)
        views = [{"id": v["id"], "count": v["count"], "exact": v["exact"]} for v in json.loads(items.join("[]"))]
        assert got == sse_frame("counts", {"views": views, "timestamp": "2026-01-01T00:00:00Z"})
        return {name: v["count"] for v in views for name in ids if ids[name] == v["id"]}

    move("open", "in_progress")  # Open 5 -> 4
    assert frame(w1) == {"Open": 4}
    assert frame(w2) == {"Open": 4}  # the same frame, worked out once
    move("in_progress", "closed")  # Closed 5 -> 6
    assert frame(w1) == {"Closed": 6}
    assert frame(w3) == {"Open": 4, "Closed": 6}  # w3 had not sent since the snapshot
    assert frame(w2) == {"Closed": 6}
    move("closed", "open")  # Closed 6 -> 5, Open 4 -> 5
    move("open", "in_progress")  # Open 5 -> 4
    assert frame(w1) == {"Closed": 5}
    move("in_progress", "open")  # Open 4 -> 5
    assert frame(w1) == {"Open": 5}
    assert frame(w2) == {"Open": 5, "Closed": 5}
    assert frame(w3) == {"Open": 5, "Closed": 5}
    move("open", "in_progress")  # Open 5 -> 4
    move("in_progress", "open")  # and back: nothing to send
    assert frame(w1) is None and frame(w2) is None and frame(w3) is None
    assert all(w.sent == w1.sent for w in (w2, w3))


def test_an_opening_reads_every_visible_view_in_one_query_and_leaves_out_one_past_lowered_limits(
    acme: World, settings, django_assert_num_queries
):
    """What a counts stream reads when it opens: the caller's views in one query, each
    with its list query; a view whose filter no longer fits the filter limits an operator
    lowered since it was saved is left out."""
    from tenants.callers import caller_for_user
    from ticketing.models import SavedView
    from ticketing.view_counts import caller_view_queries

    admin = caller_for_user(acme.users["admin"])
    views = open_and_closed_views(acme)
    two_conditions = {
        "op": "AND",
        "operand": [
            {"id": "s", "column": "status", "op": "EQ", "operand": "open"},
            {"id": "p", "column": "priority", "op": "EQ", "operand": "high"},
        ],
    }
    SavedView.objects.create(tenant=acme.tenant, owner=acme.users["admin"], name="Open and high", filter=two_conditions)
    with django_assert_num_queries(1) as captured:
        shown = caller_view_queries(admin)
    # Only what a count needs: no owner joined, no sort order or timestamps read.
    sql = captured.captured_queries[0]["sql"]
    assert "JOIN" not in sql and "sort_order" not in sql and "updated_at" not in sql, sql
    assert [name for _, name, _ in shown] == ["Closed", "Open", "Open and high"]
    ids = {name: view_id for view_id, name, _ in shown}
    assert ids["Open"] == str(views["Open"].id)
    query = {name: q for _, name, q in shown}["Open"]
    assert query.filter.matches({"status": "open"}) and not query.filter.matches({"status": "closed"})

    settings.FILTER_MAX_CONDITIONS = 1
    assert [name for _, name, _ in caller_view_queries(admin)] == ["Closed", "Open"]
