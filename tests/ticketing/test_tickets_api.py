"""The ticket REST API: shapes, permissions, bad input, and tenant isolation."""

import re

import pytest

from events.models import Event
from tests.builders import World
from ticketing.models import Comment, Ticket, TicketMarks

pytestmark = pytest.mark.django_db
BASE = "/api/v2/ticketing/ticket"


def create(api, world: World, user: str = "alice", **fields):
    return api.post(BASE, {"subject": "VPN down", **fields}, format="json", headers=world.headers(user))


def test_create_returns_the_ticket_in_camel_case_with_a_number(api, acme: World):
    response = create(api, acme, priority="critical", team="operation", assignee="alice", category="Network")
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True and body["timestamp"]
    ticket = body["data"]
    assert re.fullmatch(r"TKT-\d{4}-\d{6}", ticket["ticketNumber"])
    assert ticket["priority"] == "urgent"  # critical is an alias on input only
    assert ticket["assignee"] == {"id": str(acme.users["alice"].id), "name": "Alice"}
    assert ticket["requester"]["id"] == str(acme.users["alice"].id)
    assert set(ticket) >= {"id", "subject", "status", "team", "createdAt", "updatedAt", "customer", "parent"}


def test_ticket_numbers_follow_each_other_per_tenant(api, acme: World, globex: World):
    first = create(api, acme).json()["data"]["ticketNumber"]
    second = create(api, acme).json()["data"]["ticketNumber"]
    other = create(api, globex).json()["data"]["ticketNumber"]
    assert int(second[-6:]) == int(first[-6:]) + 1
    assert other.endswith("000001")


def test_assignee_by_user_id_or_username(api, acme: World):
    carol = acme.users["carol"]
    by_id = create(api, acme, assignee=str(carol.id)).json()["data"]
    by_name = create(api, acme, assignee="carol").json()["data"]
    assert by_id["assignee"]["id"] == by_name["assignee"]["id"] == str(carol.id)


@pytest.mark.parametrize(
    "body",
    [
        {"subject": ""},
        {"description": "no subject"},
        {"subject": "x", "priority": "extreme"},
        {"subject": "x", "status": "done"},
        {"subject": "x", "assignee": "nobody"},
        {"subject": "x", "surprise": 1},
        {"subject": "x", "parent": "not-a-uuid"},
        ["subject"],
    ],
)
def test_bad_create_body_is_400_and_creates_nothing(api, acme: World, body):
    response = api.post(BASE, body, format="json", headers=acme.headers("alice"))
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in {"INVALID_BODY", "VALIDATION_ERROR"}
    assert Ticket.objects.count() == 0 and Event.objects.count() == 0


def test_malformed_json_is_400_in_the_envelope(api, acme: World):
    response = api.generic("POST", BASE, "{not json", content_type="application/json", headers=acme.headers("alice"))
    assert response.status_code == 400
    assert response.json()["success"] is False


def test_assignee_from_another_tenant_is_refused(api, acme: World, globex: World):
    response = create(api, acme, assignee=str(globex.users["alice"].id))
    assert response.status_code == 400
    assert Ticket.objects.count() == 0


def test_update_changes_fields_and_ignores_nothing(api, acme: World):
    ticket = create(api, acme).json()["data"]
    response = api.patch(
        f"{BASE}/{ticket['id']}",
        {"status": "in_progress", "assignee": "carol"},
        format="json",
        headers=acme.headers("alice"),
    )
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "in_progress"
    assert response.json()["data"]["assignee"]["id"] == str(acme.users["carol"].id)


def test_end_user_sees_only_own_tickets(api, acme: World):
    mine = create(api, acme, user="bob").json()["data"]
    theirs = create(api, acme, user="dave").json()["data"]
    assert api.get(f"{BASE}/{mine['id']}", headers=acme.headers("bob")).status_code == 200
    assert api.get(f"{BASE}/{theirs['id']}", headers=acme.headers("bob")).status_code == 404
    listed = api.post(f"{BASE}/list", {"top": 50}, format="json", headers=acme.headers("bob")).json()["data"]
    assert [t["id"] for t in listed["tickets"]] == [mine["id"]]


def test_end_user_cannot_assign_but_can_cancel(api, acme: World):
    ticket = create(api, acme, user="bob").json()["data"]
    url = f"{BASE}/{ticket['id']}"
    refused = api.patch(url, {"assignee": "alice"}, format="json", headers=acme.headers("bob"))
    assert refused.status_code == 403
    assert Ticket.objects.get(pk=ticket["id"]).assignee_id is None
    assert api.patch(url, {"status": "cancelled"}, format="json", headers=acme.headers("bob")).status_code == 200


def test_delete_needs_admin(api, acme: World):
    ticket = create(api, acme).json()["data"]
    url = f"{BASE}/{ticket['id']}"
    assert api.delete(url, headers=acme.headers("alice")).status_code == 403
    assert api.delete(url, headers=acme.headers("admin")).status_code == 204
    assert api.get(url, headers=acme.headers("admin")).status_code == 404
    assert Event.objects.filter(type="tickets.ticket.deleted", ticket_id=ticket["id"]).count() == 1


def test_deleting_a_parent_records_each_child_detached(api, acme: World):
    parent = create(api, acme).json()["data"]
    child = create(api, acme, parent=parent["id"]).json()["data"]
    assert api.delete(f"{BASE}/{parent['id']}", headers=acme.headers("admin")).status_code == 204
    detached = Event.objects.filter(ticket_id=child["id"]).order_by("-id").first()
    assert detached.changes["parent"] == {"from": parent["id"], "to": None}


def test_deleting_a_merge_target_records_the_merged_ticket_let_go_with_a_new_version(api, acme: World):
    merged = create(api, acme).json()["data"]
    target = create(api, acme).json()["data"]
    url = f"{BASE}/{merged['id']}"
    merge = api.post(f"{url}/merge", {"into": target["id"]}, format="json", headers=acme.headers("alice"))
    assert merge.status_code == 200 and merge.json()["data"]["version"] == 2
    assert api.delete(f"{BASE}/{target['id']}", headers=acme.headers("admin")).status_code == 204
    read = api.get(url, headers=acme.headers("alice"))
    assert read.json()["data"]["version"] == 3 and read.headers["ETag"] == '"3"'
    let_go = Event.objects.filter(ticket_id=merged["id"]).order_by("-id").first()
    assert let_go.type == "tickets.ticket.updated"
    assert let_go.changes["mergedInto"] == {"from": target["id"], "to": None}
    assert set(let_go.changes) == {"mergedInto", "updatedAt"}
    # Recorded before the target's deletion, in the same transaction.
    deleted = Event.objects.get(type="tickets.ticket.deleted", ticket_id=target["id"])
    assert let_go.id < deleted.id
    assert TicketMarks.objects.get(ticket_id=merged["id"]).merged_into_id is None
    # No longer merged: it can be reopened.
    assert api.post(f"{url}/reopen", headers=acme.headers("alice")).status_code == 200


def test_deleting_a_parent_that_is_also_the_merge_target_lets_the_ticket_go_in_one_change(api, acme: World):
    target = create(api, acme).json()["data"]
    child = create(api, acme, parent=target["id"]).json()["data"]
    merge = api.post(
        f"{BASE}/{child['id']}/merge", {"into": target["id"]}, format="json", headers=acme.headers("alice")
    )
    assert merge.status_code == 200
    before = Event.objects.filter(ticket_id=child["id"]).count()
    assert api.delete(f"{BASE}/{target['id']}", headers=acme.headers("admin")).status_code == 204
    assert Event.objects.filter(ticket_id=child["id"]).count() == before + 1
    let_go = Event.objects.filter(ticket_id=child["id"]).order_by("-id").first()
    assert let_go.changes["parent"] == let_go.changes["mergedInto"] == {"from": target["id"], "to": None}
    assert Ticket.objects.get(pk=child["id"]).version == merge.json()["data"]["version"] + 1


def test_comments_are_added_and_listed(api, acme: World):
    ticket = create(api, acme).json()["data"]
    url = f"{BASE}/{ticket['id']}/comments"
    assert (
        api.post(url, {"body": "Rebooted the router"}, format="json", headers=acme.headers("alice")).status_code == 201
    )
    assert api.post(url, {"body": ""}, format="json", headers=acme.headers("alice")).status_code == 400
    comments = api.get(url, headers=acme.headers("alice")).json()["data"]
    assert [c["body"] for c in comments] == ["Rebooted the router"]
    assert Event.objects.filter(type="tickets.ticket.comment_added").count() == 1


def test_list_filters_sorts_and_pages(api, acme: World):
    for i, priority in enumerate(["low", "urgent", "high", "urgent"]):
        create(api, acme, subject=f"Ticket {i}", priority=priority)
    body = {
        "top": 1,
        "offset": 1,
        "sort": "priority",
        "searchOrder": "DESC",
        "filter": {
            "op": "OR",
            "operand": [
                {"id": "p", "op": "IN", "column": "priority", "operand": ["urgent", "high"]},
            ],
        },
    }
    page = api.post(f"{BASE}/list", body, format="json", headers=acme.headers("alice")).json()["data"]
    assert page["total"] == 3
    assert [t["priority"] for t in page["tickets"]] == ["urgent"]
    everything = api.post(
        f"{BASE}/list", {**body, "top": 10, "offset": 0}, format="json", headers=acme.headers("alice")
    ).json()["data"]
    assert [t["priority"] for t in everything["tickets"]] == ["urgent", "urgent", "high"]


def test_list_search_is_case_insensitive_over_subject_description_and_number(api, acme: World):
    vpn = create(api, acme, subject="VPN flaps").json()["data"]
    create(api, acme, subject="Printer", description="the vpn client crashes")
    create(api, acme, subject="Mouse")
    page = api.post(f"{BASE}/list", {"top": 10, "search": "vpn"}, format="json", headers=acme.headers("alice"))
    assert page.json()["data"]["total"] == 2
    by_number = api.post(
        f"{BASE}/list", {"top": 10, "search": vpn["ticketNumber"].lower()}, format="json", headers=acme.headers("alice")
    )
    assert [t["id"] for t in by_number.json()["data"]["tickets"]] == [vpn["id"]]


def test_list_bad_filter_is_422_naming_the_condition(api, acme: World):
    body = {
        "top": 10,
        "filter": {"op": "AND", "operand": [{"id": "c-7", "op": "GT", "column": "status", "operand": "open"}]},
    }
    response = api.post(f"{BASE}/list", body, format="json", headers=acme.headers("alice"))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "INVALID_FILTER"
    assert response.json()["error"]["details"]["conditionId"] == "c-7"


@pytest.mark.parametrize(
    "body",
    [
        {"top": 0},
        {"top": 10_000},
        {"top": "ten"},
        {"offset": -1},
        {"sort": "password"},
        {"searchOrder": "SIDEWAYS"},
        {"unknown": True},
    ],
)
def test_list_bad_body_is_400(api, acme: World, body):
    response = api.post(f"{BASE}/list", body, format="json", headers=acme.headers("alice"))
    assert response.status_code == 400, response.content


def test_list_query_count_does_not_grow_with_the_page(api, acme: World, django_assert_max_num_queries):
    for i in range(25):
        create(api, acme, subject=f"T{i}", assignee="alice")
    with django_assert_max_num_queries(6):
        response = api.post(f"{BASE}/list", {"top": 25}, format="json", headers=acme.headers("alice"))
    assert len(response.json()["data"]["tickets"]) == 25


class TestTenantIsolation:
    """A caller of globex reads, changes and pages nothing of acme."""

    def test_other_tenant_cannot_read_change_delete_or_comment(self, api, acme: World, globex: World):
        ticket = create(api, acme).json()["data"]
        url = f"{BASE}/{ticket['id']}"
        intruder = globex.headers("admin")
        assert api.get(url, headers=intruder).status_code == 404
        assert api.patch(url, {"subject": "pwned"}, format="json", headers=intruder).status_code == 404
        assert api.delete(url, headers=intruder).status_code == 404
        assert api.get(f"{url}/comments", headers=intruder).status_code == 404
        assert api.post(f"{url}/comments", {"body": "hi"}, format="json", headers=intruder).status_code == 404
        assert Ticket.objects.get(pk=ticket["id"]).subject == "VPN down"
        assert Comment.objects.count() == 0

    def test_other_tenant_lists_and_pages_nothing(self, api, acme: World, globex: World):
        create(api, acme)
        listed = api.post(f"{BASE}/list", {"top": 50}, format="json", headers=globex.headers("admin"))
        assert listed.json()["data"]["total"] == 0
        events = api.get("/v2/system/events", headers=globex.headers("admin")).json()
        assert events["result"] == []

    def test_token_of_one_tenant_with_the_other_tenant_header_is_refused(self, api, acme: World, globex: World):
        headers = {**acme.headers("admin"), "x-tenantid": str(globex.tenant.id), "realmname": globex.realm.name}
        assert api.get("/v2/system/events", headers=headers).status_code == 401


class TestProducts:
    def test_products_are_added_counted_and_removed_with_their_events(self, api, acme: World):
        ticket = create(api, acme).json()["data"]
        url = f"{BASE}/{ticket['id']}/products"
        headers = acme.headers("alice")
        added = api.post(url, {"sku": "LAPTOP-14", "name": "Laptop 14", "quantity": 2}, format="json", headers=headers)
        assert added.status_code == 201
        assert added.json()["data"]["products"] == [{"sku": "LAPTOP-14", "name": "Laptop 14", "quantity": 2}]
        more = api.post(url, {"sku": "LAPTOP-14", "name": "Laptop 14", "quantity": 1}, format="json", headers=headers)
        assert more.json()["data"]["products"][0]["quantity"] == 3
        assert api.delete(f"{url}/LAPTOP-14", headers=headers).status_code == 204
        assert api.get(f"{BASE}/{ticket['id']}", headers=headers).json()["data"]["products"] == []
        events = list(Event.objects.filter(ticket_id=ticket["id"]).order_by("id"))
        assert [e.type for e in events] == [
            "tickets.ticket.created",
            "tickets.ticket.product_added",
            "tickets.ticket.product_added",
            "tickets.ticket.product_removed",
        ]
        assert events[2].payload["product"] == {"sku": "LAPTOP-14", "name": "Laptop 14", "quantity": 1}
        assert events[2].changes["products"]["from"][0]["quantity"] == 2
        assert events[2].changes["products"]["to"][0]["quantity"] == 3
        assert set(events[3].payload) >= {"ticket", "parent_ticket", "customer", "product"}

    @pytest.mark.parametrize(
        "body",
        [
            {"sku": ""},
            {"sku": "A B"},
            {"sku": "X", "quantity": 0},
            {"sku": "X", "quantity": "two"},
            {"sku": "X", "color": "red"},
        ],
    )
    def test_bad_product_body_is_400_and_changes_nothing(self, api, acme: World, body):
        ticket = create(api, acme).json()["data"]
        response = api.post(f"{BASE}/{ticket['id']}/products", body, format="json", headers=acme.headers("alice"))
        assert response.status_code == 400
        assert Event.objects.filter(type="tickets.ticket.product_added").count() == 0

    def test_removing_an_unknown_product_is_404(self, api, acme: World):
        ticket = create(api, acme).json()["data"]
        response = api.delete(f"{BASE}/{ticket['id']}/products/NOPE", headers=acme.headers("alice"))
        assert response.status_code == 404 and response.json()["error"]["code"] == "PRODUCT_NOT_FOUND"

    def test_end_users_and_other_tenants_cannot_change_products(self, api, acme: World, globex: World):
        ticket = create(api, acme, user="bob").json()["data"]
        url = f"{BASE}/{ticket['id']}/products"
        assert api.post(url, {"sku": "X"}, format="json", headers=acme.headers("bob")).status_code == 403
        assert api.post(url, {"sku": "X"}, format="json", headers=globex.headers("admin")).status_code == 404
        assert Event.objects.filter(type="tickets.ticket.product_added").count() == 0


def test_totals_are_exact_up_to_the_count_limit_then_marked_inexact(api, acme: World, settings):
    settings.TICKET_LIST_COUNT_LIMIT = 3
    for i in range(2):
        create(api, acme, subject=f"T{i}")
    exact = api.post(f"{BASE}/list", {"top": 10}, format="json", headers=acme.headers("alice")).json()["data"]
    assert (exact["total"], exact["totalExact"]) == (2, True)
    for i in range(3):
        create(api, acme, subject=f"U{i}")
    capped = api.post(f"{BASE}/list", {"top": 10}, format="json", headers=acme.headers("alice")).json()["data"]
    assert (capped["total"], capped["totalExact"]) == (3, False)
    assert len(capped["tickets"]) == 5  # the page itself is never cut by the count limit


def test_deleting_a_tenant_takes_its_tickets_and_events_along(api, acme: World, globex: World):
    create(api, acme)
    create(api, globex)
    acme_id = acme.tenant.pk
    acme.tenant.delete()
    assert Ticket.objects.count() == 1 and Event.objects.filter(tenant=globex.tenant).exists()
    assert not Event.objects.filter(tenant_id=acme_id).exists()


def test_merging_a_ticket_into_itself_is_400_naming_into(api, acme: World):
    """It was 400 INVALID_BODY with `details: null`; every other body error names its field."""
    ticket = create(api, acme).json()["data"]
    refused = api.post(
        f"{BASE}/{ticket['id']}/merge", {"into": ticket["id"]}, format="json", headers=acme.headers("alice")
    )
    assert refused.status_code == 400, refused.content
    error = refused.json()["error"]
    assert error["code"] == "INVALID_BODY" and list(error["details"]) == ["into"]
    assert isinstance(error["details"]["into"], list) and error["details"]["into"]
    assert Ticket.objects.get(pk=ticket["id"]).status == "open"
