"""Both ASGI servers `config.serve` offers serve the streams: the list stream (snapshot,
a live event, a resume with Last-Event-ID) and the partner websocket, against a real
process started with `--server uvicorn` and with `--server daphne`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from tenants.services import create_api_key
from tests.builders import World
from tests.conftest import ROOT, ServerProcess, wait_until_database_is_quiet
from tests.sse_client import list_updates_url, open_stream

pytestmark = pytest.mark.timeout(90)

# Frames that say something about the connection, not about tickets.
NOT_TICKETS = ("heartbeat", "connected")


@pytest.fixture(params=["uvicorn", "daphne"])
def served_by(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[ServerProcess]:
    proc = ServerProcess("--server", request.param).start()
    yield proc
    proc.stop()
    wait_until_database_is_quiet()


def create_ticket(base: str, world: World, subject: str) -> str:
    response = httpx.post(
        f"{base}/api/v2/ticketing/ticket", json={"subject": subject}, headers=world.headers("alice"), timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def test_the_list_stream_and_the_partner_socket_work_on_either_server(served_by: ServerProcess, acme: World):
    base = served_by.url
    url = list_updates_url(base)
    with open_stream("POST", url, headers=acme.headers("alice"), json_body={}) as stream:
        assert stream.next(skip=NOT_TICKETS).event == "snapshot"
        first = create_ticket(base, acme, "live on this server")
        frame = stream.next(skip=NOT_TICKETS)
        assert (frame.event, frame.data["id"]) == ("created", first)
        resume_from = frame.id
    missed = create_ticket(base, acme, "while away")
    with open_stream("POST", url, headers={**acme.headers("alice"), "Last-Event-ID": resume_from}, json_body={}) as s:
        frame = s.next(skip=NOT_TICKETS)
        assert (frame.event, frame.data["id"]) == ("created", missed)

    _, api_key = create_api_key(tenant=acme.tenant, name="server smoke")
    ws_url = base.replace("http://", "ws://") + "/v2/system/events/ws"
    with connect(ws_url, additional_headers={"X-API-Key": api_key}, open_timeout=10) as ws:
        ws.send(json.dumps({"action": "subscribe", "after_id": resume_from}))
        live = None
        seen = []
        while True:
            message = json.loads(ws.recv(timeout=10))
            if "action" in message:
                assert message["action"] != "error", message
                continue
            seen.append(message["payload"]["ticket"]["id"])
            if seen == [missed]:
                live = create_ticket(base, acme, "while subscribed")
            if live and seen[-1] == live:
                break
        assert seen == [missed, live]


def test_daphne_refuses_several_workers_with_a_reason():
    result = subprocess.run(
        [sys.executable, "-m", "config.serve", "--server", "daphne", "--workers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "daphne serves one process" in result.stderr
