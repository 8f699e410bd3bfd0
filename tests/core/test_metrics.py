"""`/metrics` through a real two-worker server: streams open in either worker are counted
once, by kind and tier; refusals (429), ends by reason, commit-to-send latency, event-log
writes and requests by route pattern show up; outside callers need the bearer token. Also
the request id and the JSON log lines of that server, which never carry a credential."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tenants.models import Tenant
from tenants.services import create_api_key
from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.sse_client import SseStream, list_updates_url, open_stream
from tests.waiting import wait_for

METRICS_TOKEN = "metrics-test-token-0123456789"
STREAM_LIMIT = 3
TIMEOUT = 10
# Several workers share stream slots and announcements through Redis; without it (the
# embedded default) the service runs as one process, and so does this test.
WORKERS = 2 if settings.REDIS_URL else 1


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metrics")


@pytest.fixture(scope="module")
def _two_workers(django_db_setup: None, django_db_blocker: object, metrics_dir: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        "--workers",
        str(WORKERS),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        # As if the server were reached through a proxy on the same host: loopback is
        # not trusted, the token is needed.
        METRICS_LOOPBACK_OPEN="0",
        METRICS_TOKEN=METRICS_TOKEN,
        SSE_MAX_LIST_STREAMS_PER_USER=str(STREAM_LIMIT),
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def two_workers(transactional_db: None, _two_workers: ServerProcess) -> Iterator[ServerProcess]:
    yield _two_workers
    wait_until_database_is_quiet()


def scrape(server: ServerProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def eventually(server: ServerProcess, check: Callable[[dict], bool], timeout: float = 15.0) -> dict:
    """Scrape until `check` holds (each scrape may be answered by either worker)."""
    scrapes: list[dict] = []

    def holds() -> bool:
        scrapes.append(scrape(server))
        return check(scrapes[-1])

    wait_for(
        holds,
        timeout=timeout,
        interval=0.2,
        message=lambda: (
            "the check never held; last scrape: "
            + str(sorted(str((k[0], dict(k[1]), v)) for k, v in scrapes[-1].items()))
        ),
    )
    return scrapes[-1]


def pids_with_open_stream_gauges(metrics_dir: Path) -> set[str]:
    return {file.stem.rsplit("_", 1)[1] for file in metrics_dir.glob("gauge_livesum_*.db")}


def test_metrics_need_the_token_when_loopback_is_not_trusted(two_workers: ServerProcess) -> None:
    bare = httpx.get(f"{two_workers.url}/metrics", timeout=TIMEOUT)
    assert bare.status_code == 401
    assert bare.json()["error"]["code"] == "UNAUTHORIZED"
    wrong = httpx.get(f"{two_workers.url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=TIMEOUT)
    assert wrong.status_code == 401
    good = httpx.get(
        f"{two_workers.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=TIMEOUT
    )
    assert good.status_code == 200
    # The refusals above were counted (metrics with no value yet are not listed).
    assert 'ticketing_http_requests_total{method="GET",route="/metrics",status="401"}' in good.text


def test_streams_in_both_workers_are_counted_with_their_ends_refusals_and_latency(
    two_workers: ServerProcess, metrics_dir: Path, acme: World
) -> None:
    before = scrape(two_workers)
    url = list_updates_url(two_workers.url)
    with ExitStack() as stack:
        streams: list[SseStream] = []
        held: list[tuple[str, str, SseStream, ExitStack]] = []

        # Each user may hold STREAM_LIMIT list streams; the connections are spread over
        # the two workers by the kernel.
        def open_one(username: str, scope: str) -> None:
            stream_url = list_updates_url(two_workers.url, type=scope)
            own = stack.enter_context(ExitStack())  # so that one stream can be closed alone
            stream = own.enter_context(open_stream("POST", stream_url, headers=acme.headers(username), json_body={}))
            assert stream.next().event == "connected"
            assert stream.next().event == "snapshot"
            streams.append(stream)
            held.append((username, scope, stream, own))

        for username in ("alice", "carol"):
            for _ in range(STREAM_LIMIT):
                open_one(username, "template")
        # The kernel hands each connection to a worker; should one have taken them all
        # (about 3 % of runs), bob and then the admin open streams until both hold some
        # (bob's alone left about 0.4 % of runs on one worker; with the admin's, 0.05 %).
        extra = [("admin", "template")] * STREAM_LIMIT + [("bob", "user")] * STREAM_LIMIT
        while len(pids_with_open_stream_gauges(metrics_dir)) < WORKERS and extra:
            open_one(*extra.pop())
        # Still all on one worker: the last stream is closed and opened again (its user's
        # slot freed first, or the new one would be refused) until the other takes one.
        reopened = 0
        while len(pids_with_open_stream_gauges(metrics_dir)) < WORKERS:
            assert reopened < 20, "twenty new connections in a row went to the same worker"
            username, scope, stream, own = held.pop()
            own.close()
            streams.remove(stream)
            eventually(
                two_workers, lambda s: value(s, "ticketing_streams_open", kind="list", tier="standard") == len(streams)
            )
            open_one(username, scope)
            reopened += 1
        # One more for alice: 429, counted as a refusal.
        refused = httpx.post(url, headers=acme.headers("alice"), json={}, timeout=TIMEOUT)
        assert refused.status_code == 429

        opened = len(streams)
        samples = eventually(
            two_workers, lambda s: value(s, "ticketing_streams_open", kind="list", tier="standard") == opened
        )
        # Whichever worker answered the scrape, it counted both workers' streams.
        assert len(pids_with_open_stream_gauges(metrics_dir)) == WORKERS, list(metrics_dir.iterdir())
        opens = "ticketing_stream_opens_total"
        assert (
            value(samples, opens, kind="list", tier="standard", outcome="opened")
            - value(before, opens, kind="list", tier="standard", outcome="opened")
            == opened + reopened
        )
        assert (
            value(samples, opens, kind="list", tier="standard", outcome="too_many_streams")
            - value(before, opens, kind="list", tier="standard", outcome="too_many_streams")
            == 1
        )

        # A change reaches every stream: its commit-to-send latency is observed per frame
        # (bob requests it, so his `user` lists see it too).
        created = httpx.post(
            f"{two_workers.url}/api/v2/ticketing/ticket",
            headers=acme.headers("bob"),
            json={"subject": "Metrics", "priority": "high"},
            timeout=TIMEOUT,
        )
        assert created.status_code == 201, created.text
        for stream in streams:
            assert stream.next().event == "created"
        latency = "ticketing_event_delivery_seconds_count"
        samples = eventually(
            two_workers, lambda s: value(s, latency, kind="list") - value(before, latency, kind="list") == opened
        )
        written = "ticketing_events_written_total"
        assert value(samples, written, audience="partner") > value(before, written, audience="partner")
        # Requests are counted by route pattern, not by path.
        route = "/api/v2/ticketing/ticket"
        requests = "ticketing_http_requests_total"
        assert value(samples, requests, route=route, method="POST", status="201") >= 1
        assert value(samples, requests, route="/api/v2/ticketing/ticket/sse/list/updates", method="POST", status="429")
        assert not any(name == requests and str(acme.tenant.id) in str(labels) for name, labels in samples)

    # The clients went away: every stream ended, reason "client", and none is open.
    ends = "ticketing_stream_ends_total"
    samples = eventually(
        two_workers,
        lambda s: (
            value(s, "ticketing_streams_open", kind="list", tier="standard") == 0
            and value(s, ends, kind="list", reason="client") - value(before, ends, kind="list", reason="client")
            == opened + reopened
        ),
    )


def test_commits_reach_the_workers_streams_with_their_announcements_not_read_back(
    two_workers: ServerProcess, acme: World
) -> None:
    """The workers holding streams take a commit's events from its announcement (source
    `carried`), not from a read of the log, and every stream still gets every change."""
    before = scrape(two_workers)
    changes = 5
    with ExitStack() as stack:
        streams = []
        for username in ("alice", "carol"):  # spread over the workers by the kernel
            for _ in range(STREAM_LIMIT):
                stream = stack.enter_context(
                    open_stream("POST", list_updates_url(two_workers.url), headers=acme.headers(username), json_body={})
                )
                assert [stream.next().event, stream.next().event] == ["connected", "snapshot"]
                streams.append(stream)
        created = []
        for n in range(changes):
            response = httpx.post(
                f"{two_workers.url}/api/v2/ticketing/ticket",
                headers=acme.headers("alice"),
                json={"subject": f"Carried {n}"},
                timeout=TIMEOUT,
            )
            assert response.status_code == 201, response.text
            created.append(response.json()["data"]["id"])
        for stream in streams:
            assert [frame.data["id"] for frame in stream.collect(changes)] == created
    samples = scrape(two_workers)
    handed = "ticketing_hub_feed_events_total"
    carried = value(samples, handed, source="carried") - value(before, handed, source="carried")
    read = value(samples, handed, source="log") - value(before, handed, source="log")
    # A worker holding streams got the commits' events from their announcements; now and
    # then one is read from the log instead, when the feed's poll came between a commit
    # and its announcement.
    assert carried >= changes - 1, (carried, read)
    assert read * 4 <= carried, (carried, read)


def test_a_resume_and_a_reset_are_counted_apart(two_workers: ServerProcess, acme: World) -> None:
    before = scrape(two_workers)
    url = list_updates_url(two_workers.url)
    headers = acme.headers("alice")
    ticket = {"subject": "Resume", "priority": "low", "team": "operation"}
    created = httpx.post(f"{two_workers.url}/api/v2/ticketing/ticket", headers=headers, json=ticket, timeout=TIMEOUT)
    assert created.status_code == 201  # the log has a position to resume from
    with open_stream("POST", url, headers=headers, json_body={}) as stream:
        stream.next()
        position = stream.next().id  # the snapshot's log position
    assert position
    with open_stream("POST", url, headers={**headers, "Last-Event-ID": position}, json_body={}) as stream:
        stream.next()
        # Nothing was missed, so nothing is replayed: the next frame is a heartbeat,
        # sent once the opening is over.
        assert stream.next(skip=()).event == "heartbeat"
    unknown = "01" + "0" * 24  # a well-formed id that is not in the log: a reset
    with open_stream("POST", url, headers={**headers, "Last-Event-ID": unknown}, json_body={}) as stream:
        stream.next()
        assert stream.next().data.get("reset") is True
    resumes = "ticketing_stream_resumes_total"
    eventually(
        two_workers,
        lambda s: (
            value(s, resumes, kind="list", outcome="resumed") - value(before, resumes, kind="list", outcome="resumed")
            == 1
            and value(s, resumes, kind="list", outcome="reset") - value(before, resumes, kind="list", outcome="reset")
            == 1
        ),
    )


def log_lines(server: ServerProcess) -> list[dict]:
    lines = []
    for raw in server.log_path.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def test_every_request_gets_an_id_and_json_log_lines_without_credentials(
    two_workers: ServerProcess, acme: World
) -> None:
    token = acme.token("alice")
    headers = {**acme.raw_headers(token), "X-Request-ID": "req-0123-abcd"}
    response = httpx.get(f"{two_workers.url}/api/v2/ticketing/ticket/notification/count", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-0123-abcd"
    # An unusable id (spaces, too long) is replaced by a generated one, never echoed.
    for bad in ("has spaces", "x" * 200):
        response = httpx.get(f"{two_workers.url}/healthz", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", httpx.get(f"{two_workers.url}/healthz").headers["x-request-id"])

    # A stream, opened and closed by a client sending its token and a partner key query.
    url = list_updates_url(two_workers.url) + "&api_key=secret-partner-key-value"
    with open_stream(
        "POST", url, headers={**acme.raw_headers(token), "X-Request-ID": "req-stream-1"}, json_body={}
    ) as s:
        s.next()

    def logged() -> tuple[list[dict], list[dict]] | None:
        lines = log_lines(two_workers)
        mine = [line for line in lines if line.get("request_id") == "req-0123-abcd"]
        stream = [line for line in lines if line.get("request_id") == "req-stream-1"]
        if mine and any(line.get("event") == "stream_closed" for line in stream):
            return mine, stream
        return None

    mine, stream = wait_for(
        logged,
        timeout=TIMEOUT,
        interval=0.2,
        message=lambda: (
            f"the request's line or the stream's stream_closed line was not logged: {log_lines(two_workers)[-20:]}"
        ),
    )
    request_line = next(line for line in mine if line.get("event") == "request")
    assert request_line["route"] == "/api/v2/ticketing/ticket/notification/count"
    assert request_line["status"] == 200
    assert request_line["method"] == "GET"
    assert request_line["tenant"] == str(acme.tenant.id)
    assert request_line["user"] == str(acme.users["alice"].id)
    assert isinstance(request_line["duration_ms"], float)
    closed = next(line for line in stream if line.get("event") == "stream_closed")
    assert closed["reason"] == "client"
    assert closed["tenant"] == str(acme.tenant.id)
    text = two_workers.log_path.read_text(errors="replace")
    assert token not in text
    assert token.split(".")[2] not in text  # not even the signature
    assert "secret-partner-key-value" not in text


def test_an_unknown_path_is_counted_under_one_route_label(two_workers: ServerProcess) -> None:
    for _ in range(3):
        httpx.get(f"{two_workers.url}/no/such/{uuid.uuid4().hex}", timeout=TIMEOUT)
    samples = scrape(two_workers)
    routes = {dict(labels).get("route") for name, labels in samples if name == "ticketing_http_requests_total"}
    assert "unmatched" in routes
    assert not any(route and route.startswith("/no/such") for route in routes)


def test_partner_sockets_are_counted_by_tier_with_their_end_reasons_and_latency(
    two_workers: ServerProcess, acme: World
) -> None:
    acme.tenant.tier = Tenant.Tier.ENTERPRISE
    acme.tenant.save(update_fields=["tier"])
    _, secret = create_api_key(tenant=acme.tenant, name="crm")
    before = scrape(two_workers)
    ws_url = two_workers.url.replace("http://", "ws://") + f"/v2/system/events/ws?api_key={secret}"
    with connect(ws_url, open_timeout=5) as left, connect(ws_url, open_timeout=5) as bad:
        for ws in (left, bad):
            ws.send(json.dumps({"action": "subscribe", "types": []}))
            assert json.loads(ws.recv(timeout=5))["action"] == "subscribed"
        eventually(two_workers, lambda s: value(s, "ticketing_streams_open", kind="partner_ws", tier="enterprise") == 2)
        created = httpx.post(
            f"{two_workers.url}/api/v2/ticketing/ticket",
            headers=acme.headers("bob"),
            json={"subject": "Partner"},
            timeout=TIMEOUT,
        )
        assert created.status_code == 201
        assert json.loads(left.recv(timeout=5))["type"].startswith("tickets.")
        bad.send("not json")
        with pytest.raises(ConnectionClosed):
            while True:
                bad.recv(timeout=5)
    ends = "ticketing_stream_ends_total"
    latency = "ticketing_event_delivery_seconds_count"

    def grew(samples: dict, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    eventually(
        two_workers,
        lambda s: (
            value(s, "ticketing_streams_open", kind="partner_ws", tier="enterprise") == 0
            and grew(s, ends, kind="partner_ws", reason="client") == 1
            and grew(s, ends, kind="partner_ws", reason="bad_message") == 1
            and grew(s, latency, kind="partner_ws") >= 1
        ),
    )
    assert secret not in two_workers.log_path.read_text(errors="replace")
