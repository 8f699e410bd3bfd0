"""The partner side of the event log: API keys, the websocket feed, replay, export, prune."""

import json
import threading
import time
import tracemalloc
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from events.ids import first_event_id_at, new_event_id
from events.models import Event
from tenants.models import ApiKey
from tenants.services import create_api_key, revoke_api_key
from tests.builders import World
from tests.sse_client import list_updates_url, open_stream

EVENTS = "/v2/system/events"


def make_ticket_events(api, world: World, count: int) -> list[str]:
    ids = []
    for i in range(count):
        response = api.post(
            "/api/v2/ticketing/ticket", {"subject": f"t{i}"}, format="json", headers=world.headers("alice")
        )
        ids.append(response.json()["data"]["id"])
    return ids


@pytest.mark.django_db
class TestApiKeys:
    def test_key_reads_its_tenants_events_and_is_stored_hashed(self, api, acme: World, globex: World):
        make_ticket_events(api, acme, 2)
        make_ticket_events(api, globex, 1)
        key, full = create_api_key(tenant=acme.tenant, name="crm sync")
        secret = full.split("_", 2)[2]  # as the server reads it: the secret may hold "_" too
        assert secret not in key.secret_hash and len(key.secret_hash) == 64
        result = api.get(EVENTS, headers={"X-API-Key": full}).json()["result"]
        assert len(result) == 2 and {e["payload"]["ticket"]["subject"] for e in result} == {"t0", "t1"}
        assert api.get(EVENTS, headers={"Authorization": f"ApiKey {full}"}).status_code == 200

    @pytest.mark.parametrize("value", ["tk_nope_nope", "garbage", "tk_", ""])
    def test_wrong_key_is_401(self, api, acme: World, value: str):
        create_api_key(tenant=acme.tenant, name="crm")
        response = api.get(EVENTS, headers={"Authorization": f"ApiKey {value}"})
        assert response.status_code == 401

    def test_right_prefix_wrong_secret_is_401(self, api, acme: World):
        _, full = create_api_key(tenant=acme.tenant, name="crm")
        response = api.get(EVENTS, headers={"X-API-Key": full[:-3] + "xyz"})
        assert response.status_code == 401 and response.json()["error"]["code"] == "INVALID_API_KEY"

    def test_revoked_key_is_401(self, api, acme: World):
        key, full = create_api_key(tenant=acme.tenant, name="crm")
        revoke_api_key(key=key)
        response = api.get(EVENTS, headers={"X-API-Key": full})
        assert response.status_code == 401 and response.json()["error"]["code"] == "REVOKED_API_KEY"

    def test_key_of_one_tenant_cannot_name_another(self, api, acme: World, globex: World):
        _, full = create_api_key(tenant=acme.tenant, name="crm")
        response = api.get(EVENTS, headers={"X-API-Key": full, "x-tenantid": str(globex.tenant.id)})
        assert response.status_code == 401

    def test_key_without_the_scope_is_403(self, api, acme: World):
        _, full = create_api_key(tenant=acme.tenant, name="crm", scopes=[])
        assert api.get(EVENTS, headers={"X-API-Key": full}).status_code == 403

    def test_end_user_token_cannot_read_the_log_but_partner_role_can(self, api, acme: World):
        assert api.get(EVENTS, headers=acme.headers("bob")).status_code == 403
        assert api.get(EVENTS, headers=acme.headers("crm", roles=["partner"])).status_code == 200

    def test_create_api_key_command_prints_the_key_once(self, api, acme: World):
        out = StringIO()
        call_command("create_api_key", tenant="acme", name="crm sync", stdout=out, stderr=StringIO())
        full = out.getvalue().strip()
        assert api.get(EVENTS, headers={"X-API-Key": full}).status_code == 200
        assert ApiKey.objects.get().name == "crm sync"


@pytest.mark.django_db
def test_cursor_older_than_retention_is_410(api, acme: World, settings):
    settings.EVENTS_RETENTION_DAYS = 30
    old = first_event_id_at(timezone.now() - timedelta(days=31))
    response = api.get(EVENTS, {"after_id": str(old)}, headers=acme.headers("alice"))
    assert response.status_code == 410 and response.json()["error"]["code"] == "CURSOR_EXPIRED"


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/v2/system/events/ws"


def receive_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


@pytest.mark.django_db(transaction=True)
class TestWebsocket:
    def test_auth_failures_close_with_distinct_codes(self, server, acme: World):
        cases = [
            ({}, 4401),
            ({"X-API-Key": "tk_bad_bad"}, 4401),
            ({**acme.headers("bob")}, 4403),
            ({**acme.headers("alice"), "x-tenantid": str(uuid.uuid4())}, 4404),
        ]
        for headers, code in cases:
            with connect(ws_url(server), additional_headers=headers, open_timeout=5) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=5)
                assert closed.value.rcvd.code == code

    def test_two_credentials_at_once_are_refused_everywhere(self, server, acme: World, globex: World):
        """A key of one tenant beside another tenant's token (or `Authorization: ApiKey`
        of another key): `X-API-Key` won silently, so the request ran as whichever
        credential a proxy in front did not check."""
        _, key = create_api_key(tenant=acme.tenant, name="crm")
        _, other_key = create_api_key(tenant=globex.tenant, name="crm")
        for second in ({**globex.headers("alice")}, {"Authorization": f"ApiKey {other_key}"}):
            headers = {"X-API-Key": key, **second}
            refused = httpx.get(f"{server.url}{EVENTS}", headers=headers, timeout=10)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["code"] == "AMBIGUOUS_CREDENTIALS"
            write = httpx.post(
                f"{server.url}/api/v2/ticketing/ticket", headers=headers, json={"subject": "x"}, timeout=10
            )
            assert (write.status_code, write.json()["error"]["code"]) == (401, "AMBIGUOUS_CREDENTIALS"), write.text
            with connect(ws_url(server), additional_headers=headers, open_timeout=5) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=5)
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "AMBIGUOUS_CREDENTIALS")
        assert not Event.objects.filter(tenant_id__in=[acme.tenant.id, globex.tenant.id], type="tickets.ticket.created")
        # Each alone still works.
        assert httpx.get(f"{server.url}{EVENTS}", headers={"X-API-Key": key}, timeout=10).status_code == 200

    def test_a_credential_repeated_in_the_handshake_is_refused_not_picked(self, server, acme: World, globex: World):
        """Two `X-API-Key` lines, two `Authorization` lines, a parameter beside a header, two
        parameters: the socket ran as the last header, or the header over the parameter,
        or the first parameter, so as whichever a gateway did not check (another tenant's)."""
        _, key = create_api_key(tenant=acme.tenant, name="crm")
        _, other_key = create_api_key(tenant=globex.tenant, name="crm")
        url = ws_url(server)
        cases = [
            (url, [("X-API-Key", key), ("X-API-Key", other_key)]),
            (url, [("Authorization", f"ApiKey {key}"), ("Authorization", f"ApiKey {other_key}")]),
            (f"{url}?api_key={key}", [("X-API-Key", other_key)]),
            (f"{url}?api_key={key}&api_key={other_key}", []),
        ]
        for target, headers in cases:
            with connect(target, additional_headers=headers, open_timeout=5) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=5)
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "AMBIGUOUS_CREDENTIALS"), headers
        # One of each alone still opens the feed.
        for target, headers in [(f"{url}?api_key={key}", []), (url, [("X-API-Key", other_key)])]:
            with connect(target, additional_headers=headers, open_timeout=5) as ws:
                ws.send(json.dumps({"action": "ping"}))
                assert receive_json(ws)["action"] == "pong"

    def test_a_support_flag_beside_a_key_is_checked_as_beside_a_token(self, server, acme: World):
        """A key has no roles: `issupportrequest: true` needs `support`, and garbage is a bad
        header, as with a token. Both passed with a key, unread."""
        _, key = create_api_key(tenant=acme.tenant, name="crm", scopes=["events:read", "webhooks"])
        for value, status, code in [("garbage", 400, "INVALID_HEADER"), ("true", 403, "SUPPORT_ROLE_REQUIRED")]:
            headers = {"X-API-Key": key, "issupportrequest": value}
            refused = httpx.get(f"{server.url}{EVENTS}", headers=headers, timeout=10)
            assert (refused.status_code, refused.json()["error"]["code"]) == (status, code), refused.text
            with connect(ws_url(server), additional_headers=headers, open_timeout=5) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=5)
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == ({400: 4401, 403: 4403}[status], code)
        created = httpx.post(
            f"{server.url}/api/v2/webhooks/endpoints",
            headers={"X-API-Key": key, "issupportrequest": "true"},
            json={"url": "https://hooks.example.com/in"},
            timeout=10,
        )
        assert (created.status_code, created.json()["error"]["code"]) == (403, "SUPPORT_ROLE_REQUIRED")
        ok = httpx.get(f"{server.url}{EVENTS}", headers={"X-API-Key": key, "issupportrequest": "false"}, timeout=10)
        assert ok.status_code == 200, ok.text

    @pytest.mark.parametrize(
        ("message", "reason"),
        [("not json", "Messages must be JSON objects"), (b'{"action": "ping"}', "not binary ones")],
    )
    def test_bad_message_closes_4400(self, server, acme: World, message: str | bytes, reason: str):
        _, key = create_api_key(tenant=acme.tenant, name="crm")
        with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
            ws.send(message)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=5)
            assert closed.value.rcvd.code == 4400
            assert reason in closed.value.rcvd.reason

    def test_a_worker_shutting_down_closes_its_sockets_with_service_restart(self, transactional_db, acme: World):
        """A deploy stops the worker: its partners are told to reconnect (1012, RFC 6455's
        "service restart") rather than seeing the connection drop."""
        from tests.conftest import ServerProcess

        _, key = create_api_key(tenant=acme.tenant, name="crm")
        worker = ServerProcess().start()
        try:
            with connect(ws_url(worker), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
                ws.send(json.dumps({"action": "subscribe", "types": []}))
                assert receive_json(ws)["action"] == "subscribed"
                worker.proc.terminate()
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        ws.recv(timeout=5)
                assert closed.value.rcvd.code == 1012
        finally:
            worker.stop()

    def test_ping_is_answered(self, server, acme: World):
        _, key = create_api_key(tenant=acme.tenant, name="crm")
        with connect(ws_url(server) + f"?api_key={key}", open_timeout=5) as ws:
            ws.send(json.dumps({"action": "ping"}))
            assert receive_json(ws)["action"] == "pong"

    def test_resume_with_concurrent_writers_has_no_gap_and_no_duplicate(self, server, api, acme: World):
        _, key = create_api_key(tenant=acme.tenant, name="crm")
        headers = acme.headers("alice")

        def write(n: int) -> None:
            for i in range(n):
                httpx.post(
                    f"{server.url}/api/v2/ticketing/ticket", headers=headers, json={"subject": f"w{i}"}, timeout=10
                )

        write(5)
        first = Event.objects.order_by("id").first()
        writers = [threading.Thread(target=write, args=(15,)) for _ in range(3)]
        with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
            for thread in writers:
                thread.start()
            ws.send(json.dumps({"action": "subscribe", "types": [], "after_id": first.ulid}))
            assert receive_json(ws)["action"] == "subscribed"
            received = []
            deadline = time.monotonic() + 90  # generous: CI machines may be busy
            while len(received) < 4 + 45 and time.monotonic() < deadline:
                received.append(receive_json(ws, timeout=30)["id"])
            for thread in writers:
                thread.join()
        stored = [e.ulid for e in Event.objects.order_by("id")][1:]
        assert received == stored

    def test_type_filter_and_tenant_isolation(self, server, acme: World, globex: World):
        _, key = create_api_key(tenant=acme.tenant, name="crm")
        with connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws:
            ws.send(json.dumps({"action": "subscribe", "types": ["tickets.ticket.closed"]}))
            assert receive_json(ws)["action"] == "subscribed"
            created = httpx.post(
                f"{server.url}/api/v2/ticketing/ticket",
                headers=acme.headers("alice"),
                json={"subject": "x"},
                timeout=10,
            ).json()["data"]
            httpx.post(
                f"{server.url}/api/v2/ticketing/ticket",
                headers=globex.headers("alice"),
                json={"subject": "other tenant"},
                timeout=10,
            )
            httpx.patch(
                f"{server.url}/api/v2/ticketing/ticket/{created['id']}",
                headers=acme.headers("alice"),
                json={"status": "closed"},
                timeout=10,
            )
            event = receive_json(ws)
            assert event["type"] == "tickets.ticket.closed" and event["payload"]["ticket"]["id"] == created["id"]

    def test_replay_reaches_a_live_websocket_and_list_stream_marked_replayed(self, server, acme: World):
        _, key = create_api_key(tenant=acme.tenant, name="crm")
        ticket = httpx.post(
            f"{server.url}/api/v2/ticketing/ticket",
            headers=acme.headers("alice"),
            json={"subject": "replay me"},
            timeout=10,
        ).json()["data"]
        stored = Event.objects.get()
        with (
            connect(ws_url(server), additional_headers={"X-API-Key": key}, open_timeout=5) as ws,
            open_stream(
                "POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body={"top": 5, "offset": 0}
            ) as stream,
        ):
            ws.send(json.dumps({"action": "subscribe"}))
            assert receive_json(ws)["action"] == "subscribed"
            stream.collect(2)
            out = StringIO()
            call_command("replay_events", tenant="acme", stdout=out, stderr=StringIO())
            assert "replayed 1 event" in out.getvalue()
            event = receive_json(ws)
            assert event["id"] == stored.ulid and event["replayed"] is True
            frame = stream.next()
            assert frame.event == "created" and frame.id == stored.ulid and frame.data["replayed"] is True
            assert frame.data["id"] == ticket["id"]

    def test_a_replayed_frame_leaves_the_clients_last_event_id_where_its_live_events_left_it(self, server, acme: World):
        url, headers = list_updates_url(server.url), acme.headers("alice")
        ticket = httpx.post(
            f"{server.url}/api/v2/ticketing/ticket", headers=headers, json={"subject": "replay me"}, timeout=10
        ).json()["data"]
        created = Event.objects.get()
        with open_stream("POST", url, headers=headers, json_body={"top": 5}) as stream:
            stream.collect(2)  # connected, snapshot
            httpx.patch(
                f"{server.url}/api/v2/ticketing/ticket/{ticket['id']}",
                headers=headers,
                json={"priority": "high"},
                timeout=10,
            )
            updated = stream.next()
            assert updated.event == "updated" and updated.id != created.ulid
            call_command("replay_events", tenant="acme", types=["tickets.ticket.created"], stdout=StringIO())
            replayed = stream.next()
            assert replayed.event == "created" and replayed.data["replayed"] is True
            # Its own id is older than the update's: as the client's Last-Event-ID it would
            # have a reconnect send the update again.
            assert stream.last_id == updated.id
        resumed = {**headers, "Last-Event-ID": stream.last_id}
        with open_stream("POST", url, headers=resumed, json_body={"top": 5}, read_timeout=2) as again:
            assert again.next().event == "connected"
            seen = []
            with pytest.raises((TimeoutError, httpx.ReadTimeout)):
                while True:  # until the stream has been quiet for 2 s
                    seen.append(again.next(timeout=2))
            assert not [f for f in seen if f.event == "updated"], seen  # nothing live was missed


@pytest.mark.django_db
def test_replay_dry_run_changes_nothing_and_says_what_it_would_do(api, acme: World):
    make_ticket_events(api, acme, 3)
    out = StringIO()
    call_command("replay_events", tenant="acme", dry_run=True, stdout=out)
    assert out.getvalue().startswith("would replay 3 events of tenant acme")


def add_events(world: World, count: int) -> None:
    """Test data straight into the log: many events without as many tickets."""
    last = Event.objects.order_by("-id").values_list("id", flat=True).first()
    payload = {"ticket": {"id": str(uuid.uuid4()), "subject": "x" * 200}, "parent_ticket": None, "customer": None}
    rows = []
    for _ in range(count):
        last = new_event_id(after=last)
        rows.append(
            Event(
                id=last, tenant=world.tenant, type="tickets.ticket.updated", occurred_at=timezone.now(), payload=payload
            )
        )
    Event.objects.bulk_create(rows, batch_size=2000)


def export_peak_memory(target: Path) -> int:
    tracemalloc.start()
    call_command("export_events", tenant="acme", output=str(target), batch=500, stderr=StringIO())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


@pytest.mark.django_db
def test_export_memory_does_not_grow_with_the_log(acme: World, tmp_path: Path):
    add_events(acme, 5_000)
    small = export_peak_memory(tmp_path / "small.jsonl")
    add_events(acme, 25_000)
    target = tmp_path / "large.jsonl"
    large = export_peak_memory(target)
    lines = target.read_text().splitlines()
    assert len(lines) == 30_000
    assert json.loads(lines[0])["type"] == "tickets.ticket.updated"
    # Six times the events, about the same peak: memory is bounded by a page, not by the log.
    assert large < small * 1.5, (small, large)


@pytest.mark.django_db
def test_prune_deletes_only_events_older_than_the_retention(api, acme: World):
    make_ticket_events(api, acme, 2)
    old_id = first_event_id_at(timezone.now() - timedelta(days=40))
    Event.objects.create(
        id=old_id,
        tenant=acme.tenant,
        type="tickets.ticket.created",
        occurred_at=timezone.now() - timedelta(days=40),
        payload={},
    )
    call_command("prune_events", older_than="30d", stdout=StringIO(), stderr=StringIO())
    assert not Event.objects.filter(id=old_id).exists()
    assert Event.objects.count() == 2
