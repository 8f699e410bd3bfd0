"""Saved views: CRUD through the real server, who may share and change which view, bad
filters refused, and tenants kept apart."""

import httpx
import pytest

from tests.builders import World
from ticketing.models import SavedView

pytestmark = pytest.mark.django_db(transaction=True)

OPEN = {"op": "AND", "operand": [{"id": "st", "column": "status", "op": "EQ", "operand": "open"}]}


def call(server, world: World, user: str, method: str, path: str = "", body: dict | None = None) -> httpx.Response:
    return httpx.request(
        method, f"{server.url}/api/v2/ticketing/views{path}", headers=world.headers(user), json=body, timeout=10
    )


def create(server, world: World, user: str, **fields) -> dict:
    response = call(server, world, user, "POST", body={"name": "Open tickets", "filter": OPEN, **fields})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def names(server, world: World, user: str) -> set[str]:
    response = call(server, world, user, "GET")
    assert response.status_code == 200, response.text
    return {v["name"] for v in response.json()["data"]}


def test_a_private_view_is_created_read_changed_and_deleted_by_its_owner(server, acme: World):
    view = create(
        server, acme, "alice", name="Mine, open", sortOrder=[{"column": "priority", "order": "desc"}], type="agent"
    )
    assert view["visibility"] == "private" and view["team"] is None and view["editable"] is True
    assert view["filter"] == OPEN and view["sortOrder"] == [{"column": "priority", "order": "DESC"}]
    assert view["type"] == "agent" and view["owner"]["id"] == str(acme.users["alice"].id)

    read = call(server, acme, "alice", "GET", f"/{view['id']}")
    assert read.status_code == 200 and read.json()["data"]["name"] == "Mine, open"
    body = {"name": "Renamed", "sortOrder": [{"column": "status"}, {"column": "team", "order": "desc"}]}
    changed = call(server, acme, "alice", "PATCH", f"/{view['id']}", body)
    assert changed.status_code == 200 and changed.json()["data"]["name"] == "Renamed"
    assert changed.json()["data"]["sortOrder"] == [
        {"column": "status", "order": "ASC"},
        {"column": "team", "order": "DESC"},
    ]
    assert changed.json()["data"]["filter"] == OPEN  # untouched fields stay

    assert names(server, acme, "carol") == set()  # private: nobody else sees it
    assert call(server, acme, "carol", "GET", f"/{view['id']}").status_code == 404
    assert call(server, acme, "carol", "PATCH", f"/{view['id']}", {"name": "x"}).status_code == 404

    assert call(server, acme, "alice", "DELETE", f"/{view['id']}").status_code == 204
    assert call(server, acme, "alice", "GET", f"/{view['id']}").status_code == 404


def test_a_bad_filter_or_body_is_refused_in_the_envelope_and_saves_nothing(server, acme: World):
    bad = {"op": "AND", "operand": [{"id": "c1", "column": "nope", "op": "EQ", "operand": "x"}]}
    response = call(server, acme, "alice", "POST", body={"name": "Broken", "filter": bad})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "INVALID_FILTER" and error["details"]["conditionId"] == "c1"

    assert call(server, acme, "alice", "POST", body={"name": "x", "colour": "red"}).status_code == 400
    assert call(server, acme, "alice", "POST", body={"filter": OPEN}).status_code == 400  # no name
    assert call(server, acme, "alice", "POST", body={"name": "x", "visibility": "team"}).status_code == 400
    nul = {"op": "AND", "operand": [{"id": "a\u0000b", "column": "status", "op": "EQ", "operand": "open"}]}
    response = call(server, acme, "alice", "POST", body={"name": "Nul", "filter": nul})
    assert response.status_code == 422 and response.json()["error"]["code"] == "INVALID_FILTER"
    view = create(server, acme, "alice")
    no_column = {"sortOrder": [{"order": "ASC"}]}
    assert call(server, acme, "alice", "PATCH", f"/{view['id']}", no_column).status_code == 400
    response = call(server, acme, "alice", "PATCH", f"/{view['id']}", {"filter": bad})
    assert response.status_code == 422
    assert SavedView.objects.get(id=view["id"]).filter == OPEN
    assert SavedView.objects.count() == 1


def test_team_and_tenant_views_are_shared_by_the_rules(server, acme: World):
    team_view = create(server, acme, "alice", name="Operation queue", visibility="team", team="operation")
    assert team_view["team"] == "operation"
    # alice is not in team network; only admins share with the whole tenant.
    assert (
        call(server, acme, "alice", "POST", body={"name": "n", "visibility": "team", "team": "network"}).status_code
        == 403
    )
    assert call(server, acme, "alice", "POST", body={"name": "t", "visibility": "tenant"}).status_code == 403
    assert call(server, acme, "bob", "POST", body={"name": "t", "type": "template"}).status_code == 403
    create(server, acme, "admin", name="Everyone's open", visibility="tenant")
    create(server, acme, "bob", name="Bob's own", type="user")

    assert names(server, acme, "alice") == {"Operation queue", "Everyone's open"}
    assert names(server, acme, "carol") == {"Everyone's open"}  # not in operation
    assert names(server, acme, "admin") == {"Operation queue", "Everyone's open"}  # in both teams
    assert names(server, acme, "bob") == {"Everyone's open", "Bob's own"}


def test_shared_views_are_changed_by_their_owner_or_an_admin_only(server, acme: World):
    team_view = create(server, acme, "alice", name="Operation queue", visibility="team", team="operation")
    tenant_view = create(server, acme, "admin", name="Everyone's open", visibility="tenant")
    listed = {v["name"]: v["editable"] for v in call(server, acme, "bob", "GET").json()["data"]}
    assert listed == {"Everyone's open": False}

    assert call(server, acme, "bob", "PATCH", f"/{tenant_view['id']}", {"name": "mine"}).status_code == 403
    assert call(server, acme, "carol", "DELETE", f"/{tenant_view['id']}").status_code == 403
    assert call(server, acme, "admin", "PATCH", f"/{team_view['id']}", {"name": "Ops"}).status_code == 200
    # The owner (an agent) may not widen a view to the whole tenant.
    assert call(server, acme, "alice", "PATCH", f"/{team_view['id']}", {"visibility": "tenant"}).status_code == 403
    assert SavedView.objects.get(id=team_view["id"]).visibility == "team"
    assert call(server, acme, "admin", "DELETE", f"/{team_view['id']}").status_code == 204


def test_another_tenant_never_sees_or_touches_a_view(server, acme: World, globex: World):
    view = create(server, acme, "admin", name="Acme open", visibility="tenant")
    assert names(server, globex, "admin") == set()
    for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
        response = call(server, globex, "admin", method, f"/{view['id']}", body)
        assert response.status_code == 404 and response.json()["error"]["code"] == "VIEW_NOT_FOUND"
    assert SavedView.objects.get(id=view["id"]).name == "Acme open"
