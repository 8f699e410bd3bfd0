"""The live ticket list, against a real server process with a real SSE client."""

import json
import os
import re
import socket
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.builders import World
from tests.conftest import WORKER_ONLY, ServerProcess, free_port
from tests.sse_client import SseStream, list_updates_url, open_stream
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(worker_or_edge):
    """A worker serving the stream, and the edge deployment (tests.conftest.worker_or_edge)."""
    return worker_or_edge


BODY = {"top": 10, "offset": 0, "sort": "updatedAt", "searchOrder": "DESC"}


def create(server, world: World, user: str = "alice", **fields) -> dict:
    response = httpx.post(
        f"{server.url}/api/v2/ticketing/ticket",
        headers=world.headers(user),
        json={"subject": "Printer on fire", **fields},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def patch(server, world: World, ticket_id: str, user: str = "alice", **fields) -> dict:
    response = httpx.patch(
        f"{server.url}/api/v2/ticketing/ticket/{ticket_id}", headers=world.headers(user), json=fields, timeout=10
    )
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


def status_filter(*statuses: str) -> dict:
    return {
        **BODY,
        "filter": {"op": "AND", "operand": [{"id": "st", "op": "IN", "column": "status", "operand": list(statuses)}]},
    }


def test_tickets_entering_and_leaving_the_filter_come_as_created_and_deleted_with_reason_scope(server, acme: World):
    ticket = create(server, acme)
    with open_stream(
        "POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body=status_filter("open")
    ) as stream:
        assert [stream.next().event, stream.next().event] == ["connected", "snapshot"]
        patch(server, acme, ticket["id"], status="in_progress")
        left = stream.next()
        assert left.event == "deleted" and left.data["reason"] == "scope"
        assert left.data["id"] == ticket["id"] and left.data["ticketNumber"] == ticket["ticketNumber"]
        patch(server, acme, ticket["id"], status="on_hold")  # outside before and after: nothing
        patch(server, acme, ticket["id"], status="open")
        entered = stream.next()
        assert entered.event == "created" and entered.data["reason"] == "scope"
        assert entered.data["status"] == "open"


def test_a_real_delete_is_sent_without_reason(server, acme: World):
    ticket = create(server, acme)
    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("admin"), json_body=BODY) as stream:
        stream.collect(2)
        assert (
            httpx.delete(
                f"{server.url}/api/v2/ticketing/ticket/{ticket['id']}", headers=acme.headers("admin"), timeout=10
            ).status_code
            == 204
        )
        deleted = stream.next()
        assert deleted.event == "deleted" and "reason" not in deleted.data and deleted.data["deletedAt"]


def test_agent_scope_gets_only_tickets_of_the_agent_or_their_teams(server, acme: World):
    with open_stream(
        "POST", list_updates_url(server.url, "agent"), headers=acme.headers("carol"), json_body=BODY
    ) as stream:
        stream.collect(2)
        create(server, acme, team="operation")  # not carol's team, not assigned to her
        mine = create(server, acme, team="operation", assignee="carol")
        team = create(server, acme, team="network")
        assert [stream.next().data["id"], stream.next().data["id"]] == [mine["id"], team["id"]]


def test_user_scope_gets_only_the_callers_requests(server, acme: World):
    with open_stream(
        "POST", list_updates_url(server.url, "user"), headers=acme.headers("bob"), json_body=BODY
    ) as stream:
        stream.collect(2)
        create(server, acme, user="dave")
        own = create(server, acme, user="bob")
        assert stream.next().data["id"] == own["id"]


def test_search_applies_to_live_events(server, acme: World):
    with open_stream(
        "POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body={**BODY, "search": "vpn"}
    ) as stream:
        stream.collect(2)
        create(server, acme, subject="Printer")
        vpn = create(server, acme, subject="VPN again")
        assert stream.next().data["id"] == vpn["id"]


def test_resume_with_last_event_id_replays_exactly_what_was_missed(server, acme: World):
    first = create(server, acme)
    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body=BODY) as stream:
        stream.collect(2)
        patch(server, acme, first["id"], priority="low")
        seen = stream.next()
        last_id = seen.id
    # Missed while disconnected:
    second = create(server, acme, subject="while away")
    patch(server, acme, first["id"], status="on_hold")
    headers = {**acme.headers("alice"), "Last-Event-ID": last_id}
    with open_stream("POST", list_updates_url(server.url), headers=headers, json_body=BODY) as stream:
        assert stream.next().event == "connected"
        replayed = stream.collect(2)
        assert [(f.event, f.data["id"]) for f in replayed] == [("created", second["id"]), ("updated", first["id"])]
        assert replayed[1].data["changes"]["status"] == {"from": "open", "to": "on_hold"}
        assert last_id < replayed[0].id < replayed[1].id
        live = create(server, acme, subject="live again")
        assert stream.next().data["id"] == live["id"]  # then live, nothing repeated in between


def test_resume_id_in_the_body_works_like_the_header(server, acme: World):
    create(server, acme)
    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body=BODY) as stream:
        snapshot = stream.collect(2)[1]
    missed = create(server, acme)
    with open_stream(
        "POST",
        list_updates_url(server.url),
        headers=acme.headers("alice"),
        json_body={**BODY, "lastEventId": snapshot.id},
    ) as stream:
        assert stream.collect(2)[1].data["id"] == missed["id"]


def test_unknown_last_event_id_gets_a_fresh_snapshot_marked_reset(server, acme: World):
    create(server, acme)
    headers = {**acme.headers("alice"), "Last-Event-ID": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}
    with open_stream("POST", list_updates_url(server.url), headers=headers, json_body=BODY) as stream:
        snapshot = stream.collect(2)[1]
        assert snapshot.event == "snapshot" and snapshot.data["reset"] is True and snapshot.data["total"] == 1


def test_token_expiry_sends_token_expired_and_closes(server, acme: World):
    headers = acme.headers("alice", ttl=2)
    with open_stream("POST", list_updates_url(server.url), headers=headers, json_body=BODY) as stream:
        stream.collect(2)
        error = stream.next(timeout=8)
        assert error.event == "error" and error.data["code"] == "TOKEN_EXPIRED"
        with pytest.raises(StopIteration):
            stream.next(timeout=5)


def test_heartbeats_keep_an_idle_stream_alive(server, acme: World):
    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body=BODY) as stream:
        stream.collect(2)
        beat = stream.next(skip=(), timeout=5)
        assert beat.event == "heartbeat" and beat.data["timestamp"]


def test_streams_of_one_tenant_never_see_another_tenants_tickets(server, acme: World, globex: World):
    with open_stream("POST", list_updates_url(server.url), headers=globex.headers("admin"), json_body=BODY) as stream:
        snapshot = stream.collect(2)[1]
        assert snapshot.data["total"] == 0
        create(server, acme, subject="acme secret")
        own = create(server, globex, subject="globex ticket")
        assert stream.next().data["id"] == own["id"]


def test_response_headers_make_proxies_stream_it(server, acme: World):
    with httpx.stream(
        "POST",
        list_updates_url(server.url),
        headers={**acme.headers("alice"), "Accept-Encoding": "gzip"},
        json=BODY,
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers


@pytest.mark.parametrize(
    ("query", "body", "status", "code"),
    [
        ("type=template&module=ticketing", {"top": "ten"}, 400, "INVALID_BODY"),
        ("type=template&module=ticketing", {"top": 10, "bogus": 1}, 400, "INVALID_BODY"),
        ("type=template&module=assets", BODY, 400, "INVALID_QUERY"),
        ("type=everything&module=ticketing", BODY, 400, "INVALID_QUERY"),
        ("module=ticketing", BODY, 400, "INVALID_QUERY"),
        (
            "type=template&module=ticketing",
            {**BODY, "filter": {"op": "AND", "operand": [{"id": "f1", "op": "EQ", "column": "secret", "operand": 1}]}},
            422,
            "INVALID_FILTER",
        ),
    ],
)
def test_bad_requests_are_refused_before_any_stream_opens(server, acme: World, query, body, status, code):
    response = httpx.post(
        f"{server.url}/api/v2/ticketing/ticket/sse/list/updates?{query}",
        headers=acme.headers("alice"),
        json=body,
        timeout=10,
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code


def test_non_json_body_is_400(server, acme: World):
    response = httpx.post(
        list_updates_url(server.url),
        headers={**acme.headers("alice"), "content-type": "application/json"},
        content=b"{oops",
        timeout=10,
    )
    assert response.status_code == 400


def test_auth_failures_are_refused_before_any_stream_opens(server, acme: World):
    url = list_updates_url(server.url)
    assert (
        httpx.post(
            url, headers={**acme.headers("alice"), "Authorization": "Bearer x.y.z"}, json=BODY, timeout=10
        ).status_code
        == 401
    )
    assert (
        httpx.post(url, headers={**acme.headers("alice"), "x-tenantid": "nope"}, json=BODY, timeout=10).status_code
        == 400
    )
    # An end user may not watch the whole tenant.
    response = httpx.post(url, headers=acme.headers("bob"), json=BODY, timeout=10)
    assert response.status_code == 403 and response.json()["error"]["code"] == "FORBIDDEN"


STREAMS_PER_USER = 8  # the default SSE_MAX_LIST_STREAMS_PER_USER


def open_a_users_every_stream(stack: ExitStack, server, world: World, username: str) -> list[SseStream]:
    """As many streams as the user may hold, each read up to its snapshot. Keep the list:
    a stream whose reader is garbage-collected closes its connection."""
    url = list_updates_url(server.url)
    streams = [
        stack.enter_context(open_stream("POST", url, headers=world.headers(username), json_body=BODY))
        for _ in range(STREAMS_PER_USER)
    ]
    for stream in streams:
        stream.collect(2)
    return streams


@WORKER_ONLY
def test_too_many_streams_is_429_and_a_closed_stream_frees_its_slot(server, acme: World):
    url = list_updates_url(server.url)
    with ExitStack() as stack:
        streams = open_a_users_every_stream(stack, server, acme, "carol")
        refused = httpx.post(url, headers=acme.headers("carol"), json=BODY, timeout=10)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        assert refused.json()["error"]["code"] == "TOO_MANY_STREAMS"
        assert streams[-1].next(skip=(), timeout=5).event == "heartbeat"  # the open ones go on
        # Another user is not affected.
        with open_stream("POST", url, headers=acme.headers("alice"), json_body=BODY) as other:
            assert [f.event for f in other.collect(2)] == ["connected", "snapshot"]
    # All eight clients went away: their slots are free again within seconds.
    deadline = time.monotonic() + 5
    statuses = []
    with ExitStack() as stack:
        while len(statuses) < STREAMS_PER_USER and time.monotonic() < deadline:
            response = stack.enter_context(
                httpx.stream("POST", url, headers=acme.headers("carol"), json=BODY, timeout=10)
            )
            statuses.append(response.status_code)
            if response.status_code != 200:
                statuses.clear()
                stack.close()
                time.sleep(0.2)
                continue
            SseStream(response).collect(2)  # connected + snapshot: the stream is fully up
    assert statuses == [200] * STREAMS_PER_USER


def test_an_event_whose_broadcast_was_lost_still_arrives_from_the_log(server, acme: World, settings):
    """The change is made in this process with its broadcast sent nowhere the server listens."""
    from channels.layers import channel_layers

    from tenants.callers import caller_for_user
    from ticketing import services

    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body=BODY) as stream:
        stream.collect(2)
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        channel_layers.backends.clear()
        try:
            ticket = services.create_ticket(
                caller=caller_for_user(acme.users["alice"]), data={"subject": "silent change"}
            )
        finally:
            channel_layers.backends.clear()
        arrived = stream.next(timeout=5)
        assert arrived.event == "created" and arrived.data["id"] == str(ticket.id)


@WORKER_ONLY
def test_a_change_made_through_one_worker_reaches_a_stream_on_another(server, second_server, acme: World):
    with open_stream(
        "POST", list_updates_url(second_server.url), headers=acme.headers("alice"), json_body=BODY
    ) as stream:
        stream.collect(2)
        started = time.monotonic()
        ticket = create(server, acme, subject="from worker A")
        arrived = stream.next(timeout=5)
        assert arrived.data["id"] == ticket["id"]
        assert time.monotonic() - started < 3


def test_product_changes_come_as_updates_with_the_product_list(server, acme: World):
    ticket = create(server, acme)
    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body=BODY) as stream:
        stream.collect(2)
        response = httpx.post(
            f"{server.url}/api/v2/ticketing/ticket/{ticket['id']}/products",
            headers=acme.headers("alice"),
            json={"sku": "DOCK-1", "name": "Dock"},
            timeout=10,
        )
        assert response.status_code == 201
        updated = stream.next()
        assert updated.event == "updated"
        assert updated.data["products"] == [{"sku": "DOCK-1", "name": "Dock", "quantity": 1}]
        assert updated.data["changes"]["products"] == {"from": [], "to": updated.data["products"]}


def test_a_merge_comes_as_one_update_of_the_merged_ticket(server, acme: World):
    """The status change that closed it, with its changes: the merge's own event moved
    nothing a list shows and sent no second, empty `updated`."""
    source, target = create(server, acme, subject="Duplicate"), create(server, acme, subject="Original")
    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body=BODY) as stream:
        stream.collect(2)
        merged = httpx.post(
            f"{server.url}/api/v2/ticketing/ticket/{source['id']}/merge",
            headers=acme.headers("alice"),
            json={"into": target["id"]},
            timeout=10,
        )
        assert merged.status_code == 200, merged.text
        patch(server, acme, target["id"], subject="Original, with the duplicate's report")
        frames = [stream.next(), stream.next()]
    assert [(f.event, f.data["id"]) for f in frames] == [("updated", source["id"]), ("updated", target["id"])]
    assert frames[0].data["changes"]["status"]["to"] == "closed"


def _thread_count(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))


def open_raw_stream(server: ServerProcess, world: World, username: str) -> socket.socket:
    """A list stream on a plain socket, read up to its snapshot and then left alone."""
    body = json.dumps(BODY).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in world.headers(username, roles=["agent"]).items())
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        f"POST {list_updates_url(server.url).removeprefix(server.url)} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while b"event: snapshot" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"stream refused: {received[:300]!r}"
        received += chunk
    return sock


def new_stream_status(server: ServerProcess, world: World, username: str) -> int:
    with httpx.stream(
        "POST", list_updates_url(server.url), headers=world.headers(username, roles=["agent"]), json=BODY, timeout=10
    ) as response:
        return response.status_code  # a 200 is a stream: do not read it to the end


@WORKER_ONLY
def test_open_streams_do_not_keep_a_thread_each(server, acme: World):
    """An idle stream holds no thread of its own (at thousands of streams per process, a
    thread each was half of the server's memory)."""
    sockets = [open_raw_stream(server, acme, f"warm{n}") for n in range(3)]  # the feed and pools start
    try:
        before = _thread_count(server.proc.pid)
        sockets += [open_raw_stream(server, acme, f"agent{n}") for n in range(15)]
        during = _thread_count(server.proc.pid)
    finally:
        for sock in sockets:
            sock.close()
    assert during - before <= 3, f"{before} -> {during} threads for 15 more streams"


def test_streams_are_refused_with_503_while_the_stream_registry_is_unreachable(transactional_db, acme: World):
    """Redis (which counts each user's streams across workers) is down: the client gets a
    clear 503 with Retry-After in the error envelope, not a 500, and no stream opens."""
    worker = ServerProcess(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").start()
    try:
        response = httpx.post(list_updates_url(worker.url), headers=acme.headers("alice"), json=BODY, timeout=30)
    finally:
        worker.stop()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert int(response.headers["retry-after"]) > 0


def test_a_long_open_stream_keeps_its_slot_past_the_lease_time(server, acme: World):
    """Slots are leases that expire (so a killed worker's streams free theirs); a stream
    that stays open renews its lease, so the limit still holds long after it opened."""
    lease_seconds = float(server.env["SSE_LEASE_SECONDS"])
    with ExitStack() as stack:
        streams = open_a_users_every_stream(stack, server, acme, "carol")
        deadline = time.monotonic() + lease_seconds * 1.5
        while time.monotonic() < deadline:
            for stream in streams:  # keep reading, as a live client does (heartbeats)
                stream.next(skip=(), timeout=5)
        status = new_stream_status(server, acme, "carol")
    assert status == 429


@WORKER_ONLY
def test_a_killed_workers_streams_give_their_slots_back_when_their_leases_expire(server, acme: World):
    """A worker dies without closing anything: its streams' slots are leases that stop
    being renewed, so the user can open streams again (on any worker) once they expire.
    With Redis the slots are shared by the workers: until then, the limit still holds."""
    lease_seconds = 3.0
    worker = ServerProcess(SSE_LEASE_SECONDS=str(lease_seconds)).start()
    sockets: list[socket.socket] = []
    try:
        sockets = [open_raw_stream(worker, acme, "carol") for _ in range(STREAMS_PER_USER)]
        worker.kill()
        freed_by = time.monotonic() + lease_seconds + 3
        if os.environ.get("REDIS_URL"):
            assert new_stream_status(server, acme, "carol") == 429
        wait_for(
            lambda: new_stream_status(server, acme, "carol") == 200,
            timeout=freed_by - time.monotonic(),
            interval=0.25,
            message="the dead worker's slots were never freed",
        )
    finally:
        for sock in sockets:
            sock.close()
        worker.stop()


@WORKER_ONLY
def test_a_worker_shutting_down_ends_its_streams_and_gives_their_slots_back(server, acme: World):
    """A deploy stops a worker with SIGTERM: its streams end with SERVER_SHUTDOWN (clients
    reconnect with Last-Event-ID elsewhere) and release their slots at once, rather than
    being cut off and leaving the user at the limit until the leases expire."""
    worker = ServerProcess().start()
    try:
        with ExitStack() as stack:
            streams = open_a_users_every_stream(stack, worker, acme, "carol")
            stopping = time.monotonic()
            worker.proc.terminate()
            last = [stream.next(timeout=5) for stream in streams]
            assert [(f.event, f.data["code"]) for f in last] == [("error", "SERVER_SHUTDOWN")] * STREAMS_PER_USER
        worker.proc.wait(timeout=10)
        assert time.monotonic() - stopping < 4, "the worker waited for its streams instead of ending them"
    finally:
        worker.stop()
    assert new_stream_status(server, acme, "carol") == 200
