"""Saved-view live counts: W agents each hold `GET /api/v2/ticketing/views/counts/stream`
over V views shared with the tenant; tickets change at R per second; how long from a
change's commit to each watcher's `counts` frame, what the server's CPU pays, and whether
every watcher ends with the true counts?

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ticketing REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/view_counts.py --views 200 --watchers 1000 --rate 20 --duration 60

One server process (`config.serve`, started here on a free port) serves the streams. The
changes are committed in this process through ticketing.services.update_ticket (the path
of the REST endpoint) at `--rate` per second, each a random team, priority or status
change of one of `--tickets` tickets; the commit time is taken by an on_commit callback
registered before the change's own. The streams are raw asyncio connections in this
process (one clock for commit and receipt).

Latency of a frame item (view v at count n): receipt time minus the commit time of the
latest change before the receipt that brought v's true count to n (the bench keeps the
true counts with its own matcher, from the first snapshot on). Counts are coalesced by
the server, so a watcher may skip intermediate values; what must hold is that every
watcher ends with the true count of every view ("final counts right").

Server CPU: user+system seconds of the server process during the change phase, divided
by its length; and, for the opening, per stream opened (the first stream's opening also
counts every view once). The bench tenant is deleted afterwards."""

import argparse
import asyncio
import bisect
import itertools
import json
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from benchdb import ROOT, cpu_seconds, django_setup, percentile

PATH = "/api/v2/ticketing/views/counts/stream"
TEAMS = ["operation", "network", "support"]
PRIORITIES = ["low", "medium", "high", "urgent"]
STATUSES = ["open", "in_progress", "on_hold", "resolved"]
WORDS = ["vpn", "printer", "network", "password", "laptop", "email"]
SUBJECTS = ["Unable to access VPN", "Printer jams", "Slow network", "Password reset", "Laptop broken", "Email down"]


def watcher_team(i: int) -> str:
    """The watchers' teams receive no ticket: a team queue notifies its agents of each
    ticket landing in it (1,000 agents of one team made every change a 1,000-row
    notification write), and that cost belongs to the notification benchmarks, not here."""
    return f"desk{i % 20}"


def cond(column: str, op: str, operand: Any) -> dict[str, Any]:
    return {"column": column, "op": op, "operand": operand}


def view_filters(count: int) -> list[dict[str, Any]]:
    """`count` distinct filters of the kinds help desks save: team x priority x status
    combinations, subject words, and an OR group."""
    menu: list[dict[str, Any]] = []
    statuses: list[Any] = [*STATUSES, ["open", "in_progress"], None]
    for team, priority, status in itertools.product([*TEAMS, None], [*PRIORITIES, None], statuses):
        parts = []
        if team:
            parts.append(cond("team", "EQ", team))
        if priority:
            parts.append(cond("priority", "EQ", priority))
        if isinstance(status, list):
            parts.append(cond("status", "IN", status))
        elif status:
            parts.append(cond("status", "EQ", status))
        menu.append({"op": "AND", "operand": parts})
    for word, status in itertools.product(WORDS, statuses):
        parts = [cond("subject", "LIKE", word)]
        if isinstance(status, list):
            parts.append(cond("status", "IN", status))
        elif status:
            parts.append(cond("status", "EQ", status))
        menu.append({"op": "AND", "operand": parts})
    for team, status in itertools.product([*TEAMS, None], statuses):
        parts = [cond("priority", "IN", ["high", "urgent"])]
        if team:
            parts.append(cond("team", "EQ", team))
        if isinstance(status, list):
            parts.append(cond("status", "IN", status))
        elif status:
            parts.append(cond("status", "EQ", status))
        menu.append({"op": "AND", "operand": parts})
    for word, priority in itertools.product(WORDS, PRIORITIES):
        menu.append({"op": "AND", "operand": [cond("subject", "LIKE", word), cond("priority", "EQ", priority)]})
    menu.append({"op": "OR", "operand": [cond("status", "NE", "resolved"), cond("priority", "EQ", "urgent")]})
    if count > len(menu):
        raise SystemExit(f"at most {len(menu)} distinct views")
    return menu[:count]


def matches(node: dict[str, Any], state: dict[str, Any]) -> bool:
    if "column" not in node:
        parts = [matches(child, state) for child in node["operand"]]
        if not parts:
            return True
        return all(parts) if node["op"] == "AND" else any(parts)
    value, op, operand = state.get(node["column"]), node["op"], node["operand"]
    if op == "EQ":
        return value == operand
    if op == "NE":
        return value != operand
    if op == "IN":
        return value in operand
    if op == "LIKE":
        return value is not None and operand.upper() in value.upper()
    raise ValueError(op)


class Stream(asyncio.Protocol):
    def __init__(self, request: bytes, ready: asyncio.Future) -> None:
        self.request, self.ready = request, ready
        self.buffer = b""
        self.status = 0
        self.closed = False
        self.snapshot: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        # `counts` frames as received (receipt time, raw frame); decoded after the run, so the
        # client spends as little as possible of the machine while the changes are measured.
        self.raw: list[tuple[float, bytes]] = []
        self.items: list[tuple[float, str, int]] = []  # (receipt, view id, count)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        if not self.status and b"\r\n" in self.buffer:
            self.status = int(self.buffer.split(b" ", 2)[1])
        while b"\n\n" in self.buffer:
            frame, self.buffer = self.buffer.split(b"\n\n", 1)
            if b"event: counts" in frame:
                self.raw.append((now, frame))
            elif b"event: snapshot" in frame:
                for view in self._views(frame):
                    self.counts[view["id"]] = view["count"]
                self.snapshot = dict(self.counts)
                if not self.ready.done():
                    self.ready.set_result(None)

    @staticmethod
    def _views(frame: bytes) -> list[dict[str, Any]]:
        line = next(x for x in frame.split(b"\n") if x.startswith(b"data:"))
        return json.loads(line.split(b":", 1)[1])["views"]

    def decode(self) -> None:
        for received, frame in self.raw:
            for view in self._views(frame):
                self.counts[view["id"]] = view["count"]
                self.items.append((received, view["id"], view["count"]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before the snapshot (HTTP {self.status})"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def open_streams(port: int, heads: list[bytes], concurrency: int) -> list[Stream]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    streams: list[Stream] = []

    async def one(head: bytes) -> None:
        async with gate:
            ready = loop.create_future()
            _, protocol = await loop.create_connection(lambda: Stream(head, ready), "127.0.0.1", port)
            streams.append(protocol)
            await asyncio.wait_for(ready, 300)

    await asyncio.gather(*(one(h) for h in heads))
    return streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=200)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="Ticket changes per second.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of changes.")
    parser.add_argument("--tickets", type=int, default=300)
    parser.add_argument("--drain", type=float, default=3.0, help="Seconds to wait for the last frames.")
    parser.add_argument("--concurrency", type=int, default=50, help="Streams being opened at once.")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    random.seed(args.seed)
    django_setup()

    from django.conf import settings
    from django.db import connection, transaction

    from tenants.callers import caller_for_user
    from tenants.models import Realm, Tenant, TenantUser
    from tenants.services import issue_token, subject_for
    from ticketing import services
    from ticketing.models import SavedView, Ticket

    slug = f"bench-views-{uuid.uuid4().hex[:8]}"
    tenant = Tenant.objects.create(slug=slug, name=slug)
    server = None
    loop = asyncio.new_event_loop()
    try:
        realm = Realm.objects.create(tenant=tenant, name="bench", secret="bench-secret-0123456789-abcdefghijkl")  # noqa: S106
        admin = TenantUser.objects.create(
            tenant=tenant, realm=realm, subject=subject_for(tenant, "admin"), username="admin", roles=["admin"]
        )
        watchers = TenantUser.objects.bulk_create(
            TenantUser(
                tenant=tenant,
                realm=realm,
                subject=subject_for(tenant, f"agent{i}"),
                username=f"agent{i}",
                roles=["agent"],
                teams=[watcher_team(i)],
            )
            for i in range(args.watchers)
        )
        filters = view_filters(args.views)
        views = SavedView.objects.bulk_create(
            SavedView(tenant=tenant, owner=admin, name=f"view {i}", filter=f, visibility="tenant")
            for i, f in enumerate(filters)
        )
        filter_of = {str(v.id): f for v, f in zip(views, filters, strict=True)}
        actor = caller_for_user(admin)
        states: dict[uuid.UUID, dict[str, Any]] = {}
        for _ in range(args.tickets):
            fields = {
                "subject": random.choice(SUBJECTS),
                "team": random.choice(TEAMS),
                "priority": random.choice(PRIORITIES),
                "status": random.choice(STATUSES),
            }
            ticket = services.create_ticket(caller=actor, data=dict(fields))
            states[ticket.id] = fields
        heads = []
        for user in watchers:
            token = issue_token(
                realm=realm,
                username=user.username,
                roles=["agent"],
                teams=list(user.teams),
                ttl_seconds=3600,
                subject=user.subject,
            )
            heads.append(
                (
                    f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                    f"x-tenantid: {tenant.id}\r\nrealmname: bench\r\nAccept: text/event-stream\r\n\r\n"
                ).encode()
            )

        port = free_port()
        env = {
            **os.environ,
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",
            "LOG_LEVEL": "WARNING",
            "SSE_HEARTBEAT_SECONDS": "30",
            "SSE_MAX_VIEW_COUNT_STREAMS_PER_USER": "5",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(150):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)

        threading.Thread(target=loop.run_forever, daemon=True).start()
        opened_at = time.monotonic()
        open_cpu_before = cpu_seconds(server.pid)
        streams = asyncio.run_coroutine_threadsafe(open_streams(port, heads, args.concurrency), loop).result(
            timeout=1800
        )
        open_seconds = time.monotonic() - opened_at
        open_cpu = cpu_seconds(server.pid) - open_cpu_before
        rss_open = rss_mb(server.pid)

        # The truth, from the database (the same for every watcher: agents see every ticket).
        truth = {vid: sum(matches(f, s) for s in states.values()) for vid, f in filter_of.items()}
        snapshots_right = sum(1 for s in streams if s.snapshot == truth)
        # view id -> [(commit time, count)], in commit order.
        history: dict[str, list[tuple[float, int]]] = {vid: [(0.0, n)] for vid, n in truth.items()}

        ids = list(states)
        interval = 1.0 / args.rate
        cpu_before = cpu_seconds(server.pid)
        started = time.monotonic()
        changes = 0
        while time.monotonic() - started < args.duration:
            due = started + changes * interval
            if (pause := due - time.monotonic()) > 0:
                time.sleep(pause)
            ticket_id = random.choice(ids)
            column = random.choice(["team", "priority", "status"])
            options = {"team": TEAMS, "priority": PRIORITIES, "status": STATUSES}[column]
            before = states[ticket_id]
            value = random.choice([o for o in options if o != before[column]])
            after = {**before, column: value}
            committed: list[float] = []
            with transaction.atomic():
                transaction.on_commit(lambda committed=committed: committed.append(time.monotonic()))
                ticket = Ticket.objects.get(pk=ticket_id)
                services.update_ticket(caller=actor, ticket=ticket, data={column: value})
            states[ticket_id] = after
            for vid, f in filter_of.items():
                delta = int(matches(f, after)) - int(matches(f, before))
                if delta:
                    truth[vid] += delta
                    history[vid].append((committed[0], truth[vid]))
            changes += 1
        phase = time.monotonic() - started
        cpu_used = cpu_seconds(server.pid) - cpu_before
        time.sleep(args.drain)
        rss_end = rss_mb(server.pid)
        loop.call_soon_threadsafe(loop.stop)

        latencies: list[float] = []
        unmatched = 0
        for stream in streams:
            stream.decode()
            for received, vid, count in stream.items:
                steps = history[vid]
                times = [t for t, _ in steps]
                k = bisect.bisect_right(times, received) - 1
                while k >= 0 and steps[k][1] != count:
                    k -= 1
                # The change that brought the view to this count: the latest one that did.
                while k > 0 and steps[k - 1][1] == count:
                    k -= 1
                if k <= 0:
                    unmatched += 1
                    continue
                latencies.append((received - steps[k][0]) * 1000)
        finals_right = sum(1 for s in streams if s.counts == truth)
        dead = sum(1 for s in streams if s.closed)
        items = sum(len(s.items) for s in streams)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        Ticket.objects.filter(tenant=tenant).delete()
        tenant.delete()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"database {connection.vendor}, channel layer {'redis' if settings.REDIS_URL else 'in-memory'}, "
        "1 server process (uvicorn); streams and committer in one client process on the same machine"
    )
    print(
        f"{len(streams)} streams x {args.views} views open in {open_seconds:.1f} s "
        f"(server CPU {1000 * open_cpu / max(1, len(streams)):.1f} ms per stream opened; "
        f"{dead} closed during the run); "
        f"snapshots right {snapshots_right}/{len(streams)}; server RSS {rss_open:.0f} MB open, {rss_end:.0f} MB end"
    )
    print(f"{changes} changes in {phase:.1f} s ({changes / phase:.1f}/s), {items} view counts delivered")
    print()
    print(
        "| views | watchers | changes/s | server CPU | count updates | p50 ms | p95 ms | p99 ms | max ms "
        "| unmatched | final counts right |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.views} | {len(streams)} | {changes / phase:.1f} | {100 * cpu_used / phase:.0f} % | {len(latencies)} "
        f"| {percentile(latencies, 50):.1f} | {percentile(latencies, 95):.1f} | {percentile(latencies, 99):.1f} "
        f"| {max(latencies, default=float('nan')):.1f} | {unmatched} | {finals_right}/{len(streams)} |"
    )


if __name__ == "__main__":
    main()
