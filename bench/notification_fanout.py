"""Notification fan-out: N users each hold a live notification stream; a comment on a
ticket watched by W of them is committed R times; how long from the commit to each
watcher's `notification` frame?

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ticketing REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/notification_fanout.py --users 1000 --watchers 50 --rounds 20

One server process (`config.serve`) serves the streams (started here, on a free port). The commits are
made in this process through ticketing.services.add_comment (the same path as the REST
endpoint); the commit time is taken by an on_commit callback registered before the
change's own, i.e. right after COMMIT and before the announcements. The streams are raw
asyncio connections in this process, so commit and receipt use one clock. The bench
tenant is deleted afterwards."""

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import uuid

from benchdb import ROOT, django_setup, percentile

PATH = "/api/v2/ticketing/ticket/sse/notifications"


class Stream(asyncio.Protocol):
    def __init__(self, request: bytes, ready: asyncio.Future, receipts: dict) -> None:
        self.request, self.ready, self.receipts = request, ready, receipts
        self.buffer = b""
        self.status = 0
        self.frames = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        if not self.status and b"\r\n" in self.buffer:
            self.status = int(self.buffer.split(b" ", 2)[1])
        # Chunked encoding: frames arrive whole inside chunks; scan for complete frames.
        while b"\n\n" in self.buffer:
            frame, self.buffer = self.buffer.split(b"\n\n", 1)
            self.frames += 1
            if b"event: count" in frame and not self.ready.done():
                self.ready.set_result(None)
            if b"event: notification" in frame:
                data_line = next(line for line in frame.split(b"\n") if line.startswith(b"data: "))
                payload = json.loads(data_line[6:])
                self.receipts.setdefault(payload["metadata"]["commentPreview"], []).append(now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def open_streams(port: int, heads: list[bytes], receipts: dict, concurrency: int) -> list[Stream]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    streams: list[Stream] = []

    async def one(head: bytes) -> None:
        async with gate:
            ready = loop.create_future()
            _, protocol = await loop.create_connection(lambda: Stream(head, ready, receipts), "127.0.0.1", port)
            streams.append(protocol)
            await asyncio.wait_for(ready, 180)

    await asyncio.gather(*(one(h) for h in heads))
    return streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pause", type=float, default=1.0, help="Seconds between rounds.")
    parser.add_argument("--concurrency", type=int, default=50, help="Streams being opened at once.")
    args = parser.parse_args()
    django_setup()

    from django.conf import settings
    from django.db import connection, transaction

    from tenants.callers import caller_for_user
    from tenants.models import Realm, Tenant, TenantUser
    from tenants.services import issue_token, subject_for
    from ticketing import services
    from ticketing.models import Ticket, Watcher

    slug = f"bench-fanout-{uuid.uuid4().hex[:8]}"
    tenant = Tenant.objects.create(slug=slug, name=slug)
    server = None
    try:
        realm = Realm.objects.create(tenant=tenant, name="bench", secret="bench-secret-0123456789-abcdefghijkl")  # noqa: S106
        users = TenantUser.objects.bulk_create(
            TenantUser(
                tenant=tenant,
                realm=realm,
                subject=subject_for(tenant, f"user{i}"),
                username=f"user{i}",
                roles=["agent"],
                teams=["operation"],
            )
            for i in range(args.users)
        )
        agent = TenantUser.objects.create(
            tenant=tenant,
            realm=realm,
            subject=subject_for(tenant, "actor"),
            username="actor",
            roles=["agent"],
            teams=["operation"],
        )
        actor = caller_for_user(agent)
        ticket = services.create_ticket(caller=actor, data={"subject": "Fan-out"})
        watched = users[:: max(1, args.users // args.watchers)][: args.watchers]
        Watcher.objects.bulk_create(Watcher(ticket=ticket, user=u) for u in watched)
        heads = []
        for user in users:
            token = issue_token(
                realm=realm,
                username=user.username,
                roles=["agent"],
                teams=["operation"],
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

        receipts: dict[str, list[float]] = {}
        commits: dict[str, float] = {}
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        opened_at = time.monotonic()
        streams = asyncio.run_coroutine_threadsafe(open_streams(port, heads, receipts, args.concurrency), loop).result(
            timeout=600
        )
        open_seconds = time.monotonic() - opened_at

        for r in range(args.rounds):
            body = f"round {r}"
            with transaction.atomic():
                transaction.on_commit(lambda body=body: commits.__setitem__(body, time.monotonic()))
                services.add_comment(caller=actor, ticket=Ticket.objects.get(pk=ticket.pk), body=body)
            deadline = time.monotonic() + 15
            while len(receipts.get(body, ())) < len(watched) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(args.pause)
        latencies = [(t - commits[body]) * 1000 for body, times in receipts.items() for t in times]
        received = sum(len(v) for v in receipts.values())
        dead = sum(1 for s in streams if s.closed)
        loop.call_soon_threadsafe(loop.stop)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        # Tickets first: their delete signal reads the requester, which a tenant cascade removes first.
        Ticket.objects.filter(tenant=tenant).delete()
        tenant.delete()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"database {connection.vendor}, channel layer {'redis' if settings.REDIS_URL else 'in-memory'}, "
        "1 server process (uvicorn); client and committer in one process on the same machine"
    )
    print(
        f"{len(streams)} streams open in {open_seconds:.1f} s ({dead} closed during the run); "
        f"{args.rounds} comments x {len(watched)} watchers"
    )
    print()
    print(
        "| streams | watchers notified per change | notifications expected | received | "
        "p50 ms | p95 ms | p99 ms | max ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {len(streams)} | {len(watched)} | {args.rounds * len(watched)} | {received} | "
        f"{percentile(latencies, 50):.1f} | {percentile(latencies, 95):.1f} | {percentile(latencies, 99):.1f} | "
        f"{max(latencies):.1f} |"
    )


if __name__ == "__main__":
    main()
