"""Defects schemathesis found where the server disagreed with its own contract, each
checked through the real server as a client would hit it."""

from __future__ import annotations

import httpx
import pytest

from tests.builders import World
from tests.conftest import ServerProcess

API = "/api/v2/ticketing"

pytestmark = pytest.mark.contract


def _ticket(server: ServerProcess, world: World, username: str = "bob") -> str:
    response = httpx.post(
        f"{server.url}{API}/ticket", json={"subject": "Printer jammed"}, headers=world.headers(username), timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def test_removing_a_watcher_the_tenant_does_not_know_is_404_not_a_body_error(
    server: ServerProcess, acme: World
) -> None:
    ticket = _ticket(server, acme)
    response = httpx.delete(
        f"{server.url}{API}/ticket/{ticket}/watchers/nobody-of-this-name", headers=acme.headers("alice"), timeout=10
    )
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "WATCHER_NOT_FOUND"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/ticket", {"subject": 12345}, "subject"),
        ("/ticket/{ticket}/comments", {"body": 0}, "body"),
        ("/ticket/{ticket}/escalate", {"reason": "", "team": 7}, "team"),
        ("/ticket/{ticket}/products", {"sku": "SKU-1", "name": 0}, "name"),
    ],
)
def test_a_number_where_the_schema_says_string_is_refused_and_changes_nothing(
    server: ServerProcess, acme: World, path: str, body: dict, field: str
) -> None:
    ticket = _ticket(server, acme)
    alice = acme.headers("alice")
    before = httpx.get(f"{server.url}{API}/ticket/{ticket}", headers=alice, timeout=10).json()["data"]
    response = httpx.post(f"{server.url}{API}{path.format(ticket=ticket)}", json=body, headers=alice, timeout=10)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "INVALID_BODY"
    assert field in error["details"]
    after = httpx.get(f"{server.url}{API}/ticket/{ticket}", headers=alice, timeout=10).json()["data"]
    assert after == before
    comments = httpx.get(f"{server.url}{API}/ticket/{ticket}/comments", headers=alice, timeout=10).json()["data"]
    assert comments == []
    listed = httpx.post(f"{server.url}{API}/ticket/list?type=template", json={}, headers=alice, timeout=10)
    assert listed.json()["data"]["total"] == 1


def test_a_number_where_the_schema_says_boolean_is_refused(server: ServerProcess, acme: World) -> None:
    bob = acme.headers("bob")
    url = f"{server.url}{API}/user/preference"
    before = httpx.get(url, headers=bob, timeout=10).json()["data"]
    response = httpx.put(url, json={"notificationTypes": {"comment": 0}}, headers=bob, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_BODY"
    assert httpx.get(url, headers=bob, timeout=10).json()["data"] == before
    marked = httpx.put(f"{server.url}{API}/ticket/notification/read", json={"all": 1}, headers=bob, timeout=10)
    assert marked.status_code == 400, marked.text
