"""The live ticket list, against a real server process with a real SSE client."""

import httpx
import pytest

from tests.builders import World
from tests.sse_client import list_updates_url, open_stream

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"top": 10, "offset": 0, "sort": "updatedAt", "searchOrder": "DESC"}


def create(server, world: World, user: str = "alice", **fields) -> dict:
    response = httpx.post(f"{server.url}/api/v2/ticketing/ticket", headers=world.headers(user),
                          json={"subject": "Printer on fire", **fields}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def patch(server, world: World, ticket_id: str, user: str = "alice", **fields) -> dict:
    response = httpx.patch(f"{server.url}/api/v2/ticketing/ticket/{ticket_id}", headers=world.headers(user),
                           json=fields, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_stream_sends_connected_snapshot_then_created_and_updated(server, acme: World):
    existing = create(server, acme, subject="Old ticket")
    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body=BODY) as stream:
        connected = stream.next()
        assert connected.event == "connected" and connected.data["connectionId"]
        snapshot = stream.next()
        assert snapshot.event == "snapshot"
        assert [t["id"] for t in snapshot.data["tickets"]] == [existing["id"]]
        assert snapshot.data["total"] == 1

        new = create(server, acme, subject="New laptop request")
        created = stream.next()
        assert created.event == "created" and created.data["id"] == new["id"] and created.id
        assert "reason" not in created.data

        patch(server, acme, new["id"], status="in_progress")
        updated = stream.next()
        assert updated.event == "updated"
        assert updated.data["changes"]["status"] == {"from": "open", "to": "in_progress"}
        assert updated.id > created.id
