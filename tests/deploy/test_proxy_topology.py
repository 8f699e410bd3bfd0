"""The production topology as plain processes, checked through the proxy: Debian's nginx
with the project's configuration (deploy/nginx) in front of `config.serve --workers 2`,
PostgreSQL, Redis and the SLA monitor, as docker-compose.yml runs them in containers.

Through nginx: a list stream's first live event arrives within a second of the change
(nothing buffers it), the partner websocket replays and goes live, a 10 MB body is refused
by the proxy itself, the client's address is the proxy's word (a spoofed X-Forwarded-For
is not), and a worker killed with SIGKILL is replaced while stream clients, reconnecting
with Last-Event-ID / after_id as browsers and partners do, see every event exactly once."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from django.db import connection
from httpx_sse import EventSource
from websockets.sync.client import connect

from events.ids import event_id_to_str
from events.models import Event
from tenants.services import create_api_key
from tests.builders import World, base_claims, signed
from tests.conftest import ROOT, ServerProcess, wait_until_database_is_quiet
from tests.deploy.nginx import Nginx, nginx_binary
from tests.faults.redis_server import PrivateRedis
from tests.faults.test_stream_faults import (
    LIST_PATH,
    NOTIFICATIONS_PATH,
    WS_PATH,
    Load,
    Outcomes,
    SocketReader,
    SseReader,
    Workers,
    Writer,
    assert_exactly_the_log,
    finish_load,
)
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the production topology runs on PostgreSQL"),
    pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (Debian: apt-get install nginx)"),
]

# Announcements carry live events; the hubs' poll (which would also find them) is kept
# slower than the latency bound, so a frame within it was pushed, not polled.
POLL_SECONDS = 3


@dataclass
class Topology:
    nginx: Nginx
    app: ServerProcess
    sla_monitor: subprocess.Popen
    redis: PrivateRedis

    def workers(self) -> list[int]:
        """Pids of the server's worker processes (children of its supervising parent)."""
        assert self.app.proc is not None
        pids = []
        for task in Path(f"/proc/{self.app.proc.pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        return [p for p in pids if b"spawn_main" in _cmdline(p)]

    def app_log(self) -> str:
        return self.app.log_path.read_text(errors="replace")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def established_connections(pid: int, port: int) -> int:
    """TCP connections to `port` that process `pid` holds, open (ESTABLISHED)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


@pytest.fixture(scope="module")
def topology(django_db_setup: None, django_db_blocker: object) -> Iterator[Topology]:
    redis = PrivateRedis().start()
    env = {
        "REDIS_URL": redis.url,
        "REDIS_PREFIX": f"topology{redis.port}",
        "EVENT_HUB_POLL_SECONDS": str(POLL_SECONDS),
        # The proxy is the only peer whose X-Forwarded-* headers count.
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
        "SECURE_PROXY_SSL_HEADER": "1",
        # The access log shows each request's client address as the server understood it.
        "LOG_LEVEL": "INFO",
    }
    app = sla_monitor = nginx = None
    try:
        app = ServerProcess("--workers", "2", "--access-log", **env).start()
        sla_monitor = subprocess.Popen(
            [sys.executable, "manage.py", "sla_monitor"],
            cwd=ROOT,
            env={**app.env, "SLA_MONITOR_INTERVAL_SECONDS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        nginx = Nginx(upstream=f"127.0.0.1:{app.port}").start()
        topo = Topology(nginx=nginx, app=app, sla_monitor=sla_monitor, redis=redis)
        wait_for(
            lambda: len(topo.workers()) >= 2,
            timeout=30,
            interval=0.2,
            message="config.serve --workers 2 did not start two workers",
        )
        assert len(topo.workers()) == 2, "config.serve --workers 2 did not start two workers"
        yield topo
    finally:
        if nginx:
            nginx.stop()
        if sla_monitor and sla_monitor.poll() is None:
            sla_monitor.terminate()
            sla_monitor.wait(timeout=10)
        if app:
            app.stop()
        redis.close()


@pytest.fixture
def topo(transactional_db: None, topology: Topology) -> Iterator[Topology]:
    yield topology
    wait_until_database_is_quiet()
    assert topology.sla_monitor.poll() is None, "the SLA monitor exited"


def create_ticket(base: str, world: World, subject: str, client: httpx.Client | None = None) -> dict:
    response = (client or httpx).post(
        f"{base}/api/v2/ticketing/ticket", json={"subject": subject}, headers=world.headers("alice"), timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def newest_event_id(world: World) -> str:
    return event_id_to_str(Event.objects.filter(tenant=world.tenant).order_by("-id").values_list("id", flat=True)[0])


def test_the_proxy_answers_readiness_from_the_workers(topo: Topology):
    response = httpx.get(f"{topo.nginx.url}/readyz", timeout=10)
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok", "migrations": "ok"}


def test_a_list_streams_first_live_event_arrives_through_the_proxy_within_a_second(topo: Topology, acme: World):
    base = topo.nginx.url
    with (
        httpx.Client(timeout=httpx.Timeout(10.0)) as client,
        client.stream(
            "POST", base + LIST_PATH, headers={"accept": "text/event-stream", **acme.headers("alice")}, json={}
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = EventSource(response).iter_sse()
        while next(events).event != "snapshot":
            pass
        latencies = []
        with httpx.Client(timeout=10) as writer:
            for n in range(3):
                subject = f"latency probe {n}"
                create_ticket(base, acme, subject, writer)
                committed = time.monotonic()  # the change is committed when its 201 arrives
                for sse in events:
                    if sse.event == "created" and json.loads(sse.data)["subject"] == subject:
                        latencies.append(time.monotonic() - committed)
                        break
                    assert time.monotonic() - committed < 2 * POLL_SECONDS, "the probe's event never arrived"
    assert max(latencies) < 1.0, f"seconds from commit to frame through nginx: {latencies}"


def test_the_partner_websocket_replays_and_goes_live_through_the_proxy(topo: Topology, acme: World):
    base = topo.nginx.url
    create_ticket(base, acme, "before the socket")
    start = newest_event_id(acme)
    backlog = [create_ticket(base, acme, f"missed {n}")["id"] for n in range(3)]
    _, api_key = create_api_key(tenant=acme.tenant, name="topology feed")
    with connect(base.replace("http://", "ws://") + WS_PATH, additional_headers={"X-API-Key": api_key}) as ws:
        ws.send(json.dumps({"action": "subscribe", "after_id": start}))

        def next_event(timeout: float) -> dict:
            deadline = time.monotonic() + timeout
            while True:
                message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
                if "action" not in message:
                    return message
                assert message["action"] != "error", message

        replayed = [next_event(5)["payload"]["ticket"]["id"] for _ in backlog]
        assert replayed == backlog
        # Live: a change made while connected arrives on the open socket (the list stream
        # test above holds delivery through the proxy to its latency bound).
        live = create_ticket(base, acme, "while connected")["id"]
        assert next_event(10)["payload"]["ticket"]["id"] == live


def test_a_10_mb_body_is_refused_by_the_proxy_in_the_error_envelope(topo: Topology, acme: World):
    body = b'{"subject": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    response = httpx.post(
        f"{topo.nginx.url}/api/v2/ticketing/ticket",
        content=body,
        headers={**acme.headers("alice"), "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "content-security-policy" not in response.headers, "the app answered: the body went past the proxy"
    assert not Event.objects.filter(tenant=acme.tenant).exists()


def test_a_chunked_body_passes_the_proxy_and_another_transfer_coding_gets_the_envelope(topo: Topology, acme: World):
    def pieces() -> Iterator[bytes]:  # httpx sends a body it does not know the length of chunked
        yield b'{"subject": "in chunks", '
        yield b'"priority": "high", "team": "operation"}'

    url = f"{topo.nginx.url}/api/v2/ticketing/ticket"
    headers = {**acme.headers("alice"), "content-type": "application/json"}
    response = httpx.post(url, content=pieces(), headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["subject"] == "in chunks"

    host, port = topo.nginx.url.removeprefix("http://").split(":")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /api/v2/ticketing/ticket HTTP/1.1\r\nHost: {host}\r\n{head}Transfer-Encoding: gzip, chunked\r\n"
            "Connection: close\r\n\r\n0\r\n\r\n".encode()
        )
        received = b""
        while chunk := sock.recv(65_536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 501"), received[:300]
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "NOT_IMPLEMENTED"


def test_a_token_with_many_groups_passes_the_proxy_and_a_huge_header_gets_the_envelope(topo: Topology, acme: World):
    """A token of about 20 KB (an identity provider's user in a few hundred groups) was
    refused by nginx's 8 KB header line with its own HTML 400 page."""
    groups = [f"/org/department-{i:04d}/team" for i in range(600)]
    token = signed(base_claims(acme, "alice", groups=groups), acme.realm.secret)
    assert len(token) > 16_000
    count = f"{topo.nginx.url}/api/v2/ticketing/ticket/notification/count"
    response = httpx.get(count, headers=acme.raw_headers(token), timeout=10)
    assert response.status_code == 200, response.text

    huge = signed(base_claims(acme, "alice", pad="x" * 100_000), acme.realm.secret)
    response = httpx.get(count, headers=acme.raw_headers(huge), timeout=10)
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "HEADER_TOO_LARGE"


def test_the_client_address_is_the_proxys_word_and_a_spoofed_one_is_ignored(topo: Topology):
    spoof = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    # Through the proxy, from 127.0.0.3: nginx replaces the client's X-Forwarded-* headers.
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=10) as client:
        via_proxy = client.get(f"{topo.nginx.url}/healthz?probe=via-proxy", headers=spoof)
    # Straight to the server, from 127.0.0.2, which is not a trusted proxy: headers ignored.
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10) as client:
        direct = client.get(f"{topo.app.url}/healthz?probe=direct-untrusted", headers=spoof)
    # From the trusted proxy's address (127.0.0.1), the same headers are believed.
    trusted = httpx.get(f"{topo.app.url}/healthz?probe=from-trusted-proxy", headers=spoof, timeout=10)
    assert via_proxy.status_code == direct.status_code == trusted.status_code == 200

    def client_of(probe: str) -> str:
        # uvicorn's access line, as text or inside a JSON log line (quotes escaped).
        found = wait_for(
            lambda: re.findall(rf'([0-9A-Fa-f.:\[\]]+) - \\?"GET /healthz\?probe={probe} ', topo.app_log()),
            timeout=5,
            interval=0.1,
            message=lambda: f"no access log line for {probe}: {topo.app_log()[-2000:]}",
        )
        return found[-1].rsplit(":", 1)[0]

    assert client_of("via-proxy") == "127.0.0.3"
    assert client_of("direct-untrusted") == "127.0.0.2"
    assert client_of("from-trusted-proxy") == "203.0.113.7"
    # X-Forwarded-Proto (SECURE_PROXY_SSL_HEADER): nginx says http, whatever the client
    # claimed, so no HSTS; a trusted proxy that says https gets the https answer.
    assert "strict-transport-security" not in via_proxy.headers
    assert "strict-transport-security" in trusted.headers


def test_a_worker_killed_behind_the_proxy_is_replaced_and_stream_clients_lose_nothing(topo: Topology, acme: World):
    proxy = Workers([SimpleNamespace(url=topo.nginx.url)])
    alice = acme.headers("alice")
    # The writers' tickets, straight from the server (those connections close at once, so
    # every connection the workers hold below is a stream's).
    tickets = [create_ticket(topo.app.url, acme, f"writer {i}")["id"] for i in range(3)]
    start = newest_event_id(acme)
    outcomes = Outcomes()
    _, api_key = create_api_key(tenant=acme.tenant, name="topology feed")
    load = Load(
        world=acme,
        start=start,
        list_reader=SseReader(proxy, LIST_PATH, "POST", alice, start, outcomes, "list stream"),
        notification_reader=SseReader(
            proxy, NOTIFICATIONS_PATH, "GET", acme.headers("carol"), start, outcomes, "notification stream"
        ),
        socket_reader=SocketReader(proxy, api_key, start),
        writers=[Writer(proxy, alice, ticket, outcomes, i) for i, ticket in enumerate(tickets)],
        outcomes=outcomes,
    )
    for reader in load.readers:
        reader.start()
    time.sleep(1.5)
    workers = topo.workers()
    for writer in load.writers:
        writer.start()
    time.sleep(2.0)

    # Kill the worker holding the most streams; if the readers were all on the other one
    # after all (idle proxy connections count too), kill that one next.
    killed = []
    for victim in sorted(workers, key=lambda pid: established_connections(pid, topo.app.port), reverse=True):
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        time.sleep(2.0)
        if any(r.reconnects for r in load.readers):
            break
    writes_at_kill = sum(w.writes for w in load.writers)
    time.sleep(2.0)
    writes_after = sum(w.writes for w in load.writers) - writes_at_kill
    results = finish_load(load)

    assert_exactly_the_log(results)
    assert any(r.reconnects for r in load.readers), "no stream was on a killed worker"
    # A request the killed worker held is a 502 from the proxy (a write's outcome is then
    # in the log, which the readers were checked against); nothing else may fail.
    bad = [b for b in outcomes.bad if not b.startswith(("write: 502", "list stream open: 502"))]
    bad = [b for b in bad if not b.startswith("notification stream open: 502")]
    assert not bad, bad
    assert outcomes.statuses.get("write 502", 0) <= len(load.writers) * len(killed), outcomes.statuses
    # (A loaded CI box manages a few writes a second; any success after the kill counts.)
    assert writes_after >= 3, f"the proxy stopped serving after the kill: {outcomes.statuses}"

    # uvicorn's supervisor replaced every killed worker.
    def replaced() -> bool:
        now = topo.workers()
        return len(now) == 2 and not set(now) & set(killed)

    wait_for(
        replaced,
        timeout=20,
        interval=0.2,
        message=lambda: f"killed workers not replaced: workers {workers}, killed {killed}, now {topo.workers()}",
    )
    assert httpx.get(f"{topo.nginx.url}/readyz", timeout=10).status_code == 200
