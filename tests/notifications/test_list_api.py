"""`POST ticket/notifications` and `GET ticket/notification/list`: filter, search, sort,
paging and summary, as list-ticket-notifications.md shows them."""

import json
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from notifications.models import Notification
from tests.builders import World
from tests.notifications.support import as_user, make_ticket
from ticketing import services

pytestmark = pytest.mark.django_db

URL = "/api/v2/ticketing/ticket/notifications"
GET_URL = "/api/v2/ticketing/ticket/notification/list"


@pytest.fixture
def alice_inbox(acme: World) -> dict:
    """alice: an assignment (high), a mention (high, read), a statusChange (medium) and a
    comment (medium) on two tickets, spaced one minute apart (oldest first)."""
    admin = as_user(acme, "admin")
    vpn = make_ticket(acme, by="bob", subject="VPN Connection Issue", category="Network")
    mail = make_ticket(acme, by="dave", subject="Email Server Down", category="Email")
    services.update_ticket(caller=admin, ticket=vpn, data={"assignee": acme.users["alice"]})
    services.add_comment(caller=admin, ticket=mail, body="@alice can you take a look at this?")
    services.update_ticket(caller=admin, ticket=vpn, data={"status": "in_progress"})
    services.add_comment(caller=admin, ticket=vpn, body="Rebooted the concentrator")
    rows = list(Notification.objects.filter(recipient=acme.users["alice"]).order_by("created_at"))
    base = timezone.now() - timedelta(hours=1)
    for i, row in enumerate(rows):
        Notification.objects.filter(pk=row.pk).update(created_at=base + timedelta(minutes=i))
    Notification.objects.filter(recipient=acme.users["alice"], type="mention").update(read=True)
    return {"vpn": vpn, "mail": mail, "base": base}


def post(api, world: World, body: dict, user: str = "alice"):
    return api.post(URL, body, format="json", headers=world.headers(user))


def types(response) -> list[str]:
    return [n["type"] for n in response.json()["data"]["notifications"]]


def test_default_list_is_newest_first_with_pagination_and_summary(api, acme: World, alice_inbox):
    response = post(
        api, acme, {"search": "", "top": 100, "offset": 0, "sort": "notified_at", "searchOrder": "DESC", "filter": []}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["message"] == "Notifications retrieved successfully"
    data = body["data"]
    assert types(response) == ["comment", "statusChange", "mention", "assignment"]
    assert data["pagination"] == {"total": 4, "top": 100, "offset": 0, "hasMore": False}
    assert data["summary"]["totalUnread"] == 3
    assert data["summary"]["byType"]["comment"] == 1 and data["summary"]["byType"]["slaBreach"] == 0
    assert data["summary"]["byPriority"] == {"urgent": 0, "high": 2, "medium": 2, "low": 0}
    first = data["notifications"][0]
    assert set(first) == {
        "id",
        "type",
        "ticketId",
        "ticketNumber",
        "title",
        "message",
        "priority",
        "category",
        "read",
        "notified_at",
        "createdAt",
        "actionUrl",
        "actor",
        "metadata",
    }
    assert first["id"].startswith("notif-") and first["notified_at"] == first["createdAt"]
    assert first["ticketId"] == str(alice_inbox["vpn"].id) and first["category"] == "Network"
    assert first["actor"] == {
        "id": str(acme.users["admin"].id),
        "name": "Admin",
        "email": "admin@acme.example",
        "avatar": None,
    }


def test_an_empty_body_uses_the_defaults(api, acme: World, alice_inbox):
    response = post(api, acme, {})
    assert types(response) == ["comment", "statusChange", "mention", "assignment"]
    assert response.json()["data"]["pagination"]["top"] == 100


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"field": "type", "op": "IN", "value": ["assignment", "mention", "slaWarning"]}, ["mention", "assignment"]),
        ({"field": "read", "op": "EQ", "value": False}, ["comment", "statusChange", "assignment"]),
        ({"field": "priority", "op": "IN", "value": ["high", "urgent"]}, ["mention", "assignment"]),
        ({"field": "priority", "op": "EQ", "value": "critical"}, []),
        ({"field": "type", "op": "NE", "value": "comment"}, ["statusChange", "mention", "assignment"]),
        ({"field": "title", "op": "LIKE", "value": "vpn"}, ["comment", "statusChange", "assignment"]),
        ({"field": "type", "op": "EQ", "value": "STATUSCHANGE"}, ["statusChange"]),
    ],
)
def test_filter_examples_of_the_spec(api, acme: World, alice_inbox, condition, expected):
    response = post(api, acme, {"top": 50, "filter": [condition]})
    assert response.status_code == 200, response.json()
    assert types(response) == expected
    assert response.json()["data"]["pagination"]["total"] == len(expected)


def test_date_range_filter_and_summary_cover_only_the_filtered_set(api, acme: World, alice_inbox):
    base = alice_inbox["base"]
    start = (base + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    end = (base + timedelta(minutes=2, seconds=30)).isoformat().replace("+00:00", "Z")
    response = post(
        api,
        acme,
        {
            "filter": [
                {"field": "notified_at", "op": "GE", "value": start},
                {"field": "notified_at", "op": "LE", "value": end},
            ]
        },
    )
    assert types(response) == ["statusChange", "mention"]
    summary = response.json()["data"]["summary"]
    assert summary["totalUnread"] == 1 and summary["byType"]["statusChange"] == 1 and summary["byType"]["mention"] == 1
    assert summary["byType"]["assignment"] == 0


def test_a_date_alone_is_accepted_as_its_midnight(api, acme: World, alice_inbox):
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    assert types(post(api, acme, {"filter": [{"field": "notified_at", "op": "LT", "value": tomorrow}]})) == [
        "comment",
        "statusChange",
        "mention",
        "assignment",
    ]
    assert types(post(api, acme, {"filter": [{"field": "notified_at", "op": "GT", "value": tomorrow}]})) == []


def test_nested_or_group(api, acme: World, alice_inbox):
    body = {
        "filter": [
            {
                "op": "OR",
                "operand": [
                    {"field": "type", "op": "EQ", "value": "mention"},
                    {"field": "read", "op": "EQ", "value": False},
                ],
            },
            {"field": "priority", "op": "EQ", "value": "high"},
        ]
    }
    assert types(post(api, acme, body)) == ["mention", "assignment"]


def test_search_by_ticket_number_title_and_message(api, acme: World, alice_inbox):
    mail = alice_inbox["mail"]
    assert types(post(api, acme, {"search": mail.number})) == ["mention"]
    assert types(post(api, acme, {"search": "email server"})) == ["mention"]
    assert types(post(api, acme, {"search": "ASSIGNED TICKET"})) == ["assignment"]


@pytest.mark.parametrize(
    ("sort", "order", "expected"),
    [
        ("notified_at", "ASC", ["assignment", "mention", "statusChange", "comment"]),
        ("type", "ASC", ["assignment", "comment", "mention", "statusChange"]),
        ("priority", "DESC", ["mention", "assignment", "comment", "statusChange"]),
        ("read", "DESC", ["mention", "comment", "statusChange", "assignment"]),
    ],
)
def test_sorting(api, acme: World, alice_inbox, sort, order, expected):
    assert types(post(api, acme, {"sort": sort, "searchOrder": order})) == expected


def test_sort_by_ticket_number_groups_each_ticket_newest_first(api, acme: World, alice_inbox):
    response = post(api, acme, {"sort": "ticketNumber", "searchOrder": "ASC"})
    numbers = [n["ticketNumber"] for n in response.json()["data"]["notifications"]]
    assert numbers == sorted(numbers)
    assert types(response) == ["comment", "statusChange", "assignment", "mention"]


def test_paging_with_top_and_offset(api, acme: World, alice_inbox):
    first = post(api, acme, {"top": 3, "offset": 0}).json()["data"]
    second = post(api, acme, {"top": 3, "offset": 3}).json()["data"]
    assert first["pagination"] == {"total": 4, "top": 3, "offset": 0, "hasMore": True}
    assert second["pagination"] == {"total": 4, "top": 3, "offset": 3, "hasMore": False}
    ids = [n["id"] for n in first["notifications"] + second["notifications"]]
    assert len(set(ids)) == 4


def test_get_form_takes_the_same_fields_as_query_parameters(api, acme: World, alice_inbox):
    query = {
        "top": "2",
        "sort": "type",
        "searchOrder": "ASC",
        "filter": json.dumps([{"field": "read", "op": "EQ", "value": False}]),
    }
    response = api.get(GET_URL, query, headers=acme.headers("alice"))
    assert response.status_code == 200, response.json()
    assert types(response) == ["assignment", "comment"]
    assert response.json()["data"]["pagination"] == {"total": 3, "top": 2, "offset": 0, "hasMore": True}


@pytest.mark.parametrize(
    ("condition", "message", "details"),
    [
        (
            {"field": "type", "op": "CONTAINS", "value": "x"},
            "Invalid filter operator 'CONTAINS' for field 'type'",
            "Supported operators: EQ, NE, GT, GE, LT, LE, IN, LIKE",
        ),
        (
            {"field": "read", "op": "LIKE", "value": "x"},
            "Invalid filter operator 'LIKE' for field 'read'",
            "Supported operators for read: EQ, NE",
        ),
        ({"field": "colour", "op": "EQ", "value": "red"}, "Invalid filter field 'colour'", None),
        ({"field": "type", "op": "EQ", "value": "party"}, "Invalid value 'party' for field 'type'", None),
        (
            {"field": "read", "op": "EQ", "value": "yes"},
            "Invalid value 'yes' for field 'read'",
            "read takes true or false.",
        ),
        (
            {"field": "notified_at", "op": "GT", "value": "last tuesday"},
            "Invalid value 'last tuesday' for field 'notified_at'",
            "notified_at takes an ISO 8601 date or date-time.",
        ),
    ],
)
def test_invalid_filters_are_422_invalid_filter_with_details(
    api, acme: World, alice_inbox, condition, message, details
):
    response = post(api, acme, {"filter": [condition]})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "INVALID_FILTER" and error["message"] == message
    assert isinstance(error["details"], str)
    if details is not None:
        assert error["details"] == details


@pytest.mark.parametrize(
    "body",
    [
        {"top": 101},
        {"top": 0},
        {"offset": -1},
        {"sort": "colour"},
        {"searchOrder": "UP"},
        {"unknown": 1},
        {"search": "x" * 201},
    ],
)
def test_bad_bodies_are_400(api, acme: World, alice_inbox, body):
    response = post(api, acme, body)
    assert response.status_code == 400
    assert response.json()["success"] is False


def test_get_form_with_a_filter_that_is_not_json_is_400(api, acme: World):
    response = api.get(GET_URL, {"filter": "[{"}, headers=acme.headers("alice"))
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_QUERY"


def test_each_user_lists_only_their_own_notifications_in_their_tenant(api, acme: World, globex: World, alice_inbox):
    assert types(post(api, acme, {}, user="carol")) == []
    alice_ids = {n["id"] for n in post(api, acme, {}).json()["data"]["notifications"]}
    bob = post(api, acme, {}, user="bob").json()["data"]
    assert [n["type"] for n in bob["notifications"]] == ["comment", "statusChange"]  # as the requester of vpn
    assert not alice_ids & {n["id"] for n in bob["notifications"]}
    globex_alice = post(api, globex, {})
    assert globex_alice.status_code == 200 and types(globex_alice) == []


def test_list_needs_authentication(api, acme: World):
    assert api.post(URL, {}, format="json").status_code in (400, 401)
    headers = acme.headers("alice")
    headers["Authorization"] = "Bearer not.a.token"
    assert api.post(URL, {}, format="json", headers=headers).status_code == 401


@pytest.mark.parametrize(
    "filter",
    [
        "read",
        [["type", "EQ", "comment"]],
        [{"op": "XOR", "operand": []}],
        [{"field": "read", "op": "EQ", "value": False, "extra": 1}],
    ],
)
def test_a_filter_of_the_wrong_shape_is_400_invalid_filter(api, acme: World, filter):
    response = post(api, acme, {"filter": filter})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_FILTER"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("name", "value"), [("top", "1_0"), ("top", "٣"), ("offset", "1_0"), ("offset", "0x10")])
def test_get_form_takes_integers_only_as_their_digits(server, acme: World, name, value):
    """`1_0` and `٣` are what Python's int() reads, not digits a client means: 400, as in the
    docs ("query strings carry integers as their digits")."""
    response = httpx.get(f"{server.url}{GET_URL}", params={name: value}, headers=acme.headers("alice"), timeout=10)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "INVALID_QUERY" and list(error["details"]) == [name]
    fine = httpx.get(f"{server.url}{GET_URL}", params={name: "10"}, headers=acme.headers("alice"), timeout=10)
    assert fine.status_code == 200, fine.text
