"""Webhook delivery: deliveries per second to a local receiver with 1, 10 and 100
endpoints, commit→delivery latency, and what one slow endpoint (10 s answers) does to the
others.

One `manage.py deliver_webhooks` process, one aiohttp receiver process (answers 200 at
once on /fast/<n>, after 10 s on /slow), and this process writing events through the
real recording path (`unit_of_work` + `record_event`, one event per unit, so each is its
own commit and announcement). Per cell:

  latency   events written at a steady rate (--rate per second, lowered so that the
            cell asks for at most --load deliveries/s: a latency taken past the
            throughput would only measure a growing backlog), for --seconds; each
            delivery's commit→delivery time is measured at the receiver (its arrival
            minus the event's `occurred_at`, taken just before COMMIT): p50 / p99 ms
  burst     --burst deliveries' worth of events committed at once (one transaction;
            --burst / endpoints events); deliveries/s from their commit until every
            endpoint has them all
  slow      the same latency run with one more endpoint that answers after 10 s: the
            healthy endpoints' p99 must not move

    .venv/bin/python bench/webhook_delivery.py                     # 1, 10, 100 endpoints
    .venv/bin/python bench/webhook_delivery.py --endpoints 10 --seconds 5 --burst 200

Runs on its own PostgreSQL database (ticketing_bench_webhooks); set REDIS_URL to have the
deliverer woken by announcements (else it polls every WEBHOOKS_POLL_SECONDS)."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdb import ROOT, machine, print_table, use_bench_database


def receiver_main(port: int, ready: multiprocessing.synchronize.Event) -> None:
    import logging

    from aiohttp import web

    # The slow endpoint's 10 s answers are cut short when the bench ends: not an error.
    logging.disable(logging.ERROR)

    arrivals: list[tuple[str, str, float]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        if request.match_info["kind"] == "slow":
            await asyncio.sleep(10)
        occurred = json.loads(body)["occurred_at"]
        arrivals.append((request.path, request.headers["webhook-id"], now - _epoch(occurred)))
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(arrivals)

    async def count(request: web.Request) -> web.Response:
        # What the bench polls while it waits: a number, not the whole list, so that the
        # waiting costs the machine next to nothing.
        return web.Response(text=str(sum(1 for path, _, _ in arrivals if path.startswith("/fast/"))))

    async def reset(request: web.Request) -> web.Response:
        arrivals.clear()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{kind}/{n}", hook)
    app.router.add_get("/stats", stats)
    app.router.add_get("/count", count)
    app.router.add_post("/reset", reset)
    ready.set()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _epoch(iso_text: str) -> float:
    return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", default="1,10,100")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second in the latency runs")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=500.0, help="most deliveries/s asked of the latency runs")
    parser.add_argument(
        "--burst", type=int, default=5000, help="deliveries per burst cell (events written at once x endpoints)"
    )
    parser.add_argument("--no-slow", action="store_true")
    args = parser.parse_args()

    os.environ["WEBHOOKS_ALLOW_PRIVATE_NETWORKS"] = "1"  # the receiver is on 127.0.0.1
    db_url = use_bench_database("ticketing_bench_webhooks")
    import logging

    import httpx
    from django.db import connection

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll of the receiver

    from events.recording import record_event, unit_of_work
    from tenants.models import Tenant
    from webhooks.models import Endpoint, WebhookSettings
    from webhooks.services import create_endpoint, delete_endpoint

    port = 18000 + os.getpid() % 1000
    ready = multiprocessing.Event()
    receiver = multiprocessing.Process(target=receiver_main, args=(port, ready), daemon=True)
    receiver.start()
    ready.wait(10)
    base = f"http://127.0.0.1:{port}"
    time.sleep(0.5)

    tenant, _ = Tenant.objects.get_or_create(slug="bench-webhooks", defaults={"name": "Bench webhooks"})
    WebhookSettings.objects.update_or_create(tenant=tenant, defaults={"allow_http": True})
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "WEBHOOKS_ALLOW_PRIVATE_NETWORKS": "1",
        "LOG_LEVEL": "WARNING",
        "SECRET_KEY": os.environ["SECRET_KEY"],
    }
    deliverer = subprocess.Popen([sys.executable, "manage.py", "deliver_webhooks"], cwd=ROOT, env=env)

    def write(n: int, rate: float | None) -> None:
        if rate is None:  # a burst: one commit, so the deliverer (not the writer) is measured
            with unit_of_work():
                for i in range(n):
                    record_event(tenant=tenant, type="bench.tick", payload={"i": i})
            return
        interval = 1 / rate
        start = time.monotonic()
        for i in range(n):
            with unit_of_work():
                record_event(tenant=tenant, type="bench.tick", payload={"i": i})
            if interval:
                delay = start + (i + 1) * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    def arrivals() -> list[tuple[str, str, float]]:
        return httpx.get(f"{base}/stats", timeout=30).json()

    def wait_for(count: int, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        got = 0
        while time.monotonic() < deadline:
            got = int(httpx.get(f"{base}/count", timeout=30).text)
            if got >= count:
                return time.monotonic()
            time.sleep(0.05)
        raise SystemExit(f"only {got} of {count} deliveries arrived in {timeout} s")

    rows: list[tuple[str, str]] = []
    try:
        for n_endpoints in [int(x) for x in args.endpoints.split(",")]:
            for slow in [False] if args.no_slow else [False, True]:
                for old in Endpoint.objects.filter(tenant=tenant):
                    delete_endpoint(endpoint=old)
                for i in range(n_endpoints):
                    create_endpoint(tenant=tenant, url=f"{base}/fast/{i}", event_types=[], ordered=False)
                if slow:
                    create_endpoint(tenant=tenant, url=f"{base}/slow/0", event_types=[], ordered=False)
                time.sleep(3.0)  # the deliverer claims them (claim loop, every 2 s)
                httpx.post(f"{base}/reset")
                label = f"{n_endpoints} endpoint{'s' if n_endpoints > 1 else ''}{' + 1 slow' if slow else ''}"
                rate = min(args.rate, args.load / n_endpoints)
                events = int(rate * args.seconds)
                write(events, rate)
                wait_for(events * n_endpoints)
                latencies = [a[2] * 1000 for a in arrivals() if a[0].startswith("/fast/")]
                rows.append(
                    (
                        f"{label}: commit→delivery p50 / p99 ms ({rate:g} events/s)",
                        f"{statistics.median(latencies):.0f} / {percentile(latencies, 99):.0f}",
                    )
                )
                if not slow:
                    httpx.post(f"{base}/reset")
                    burst = max(1, args.burst // n_endpoints)
                    write(burst, None)
                    # From the commit: nothing can be delivered before it, and writing
                    # thousands of events in one transaction is the writer's time, not the deliverer's.
                    started = time.monotonic()
                    finished = wait_for(burst * n_endpoints, timeout=300)
                    rows.append(
                        (
                            f"{label}: deliveries/s (burst of {burst} events)",
                            f"{burst * n_endpoints / (finished - started):.0f}",
                        )
                    )
        connection.close()
    finally:
        deliverer.terminate()
        deliverer.wait(15)
        receiver.terminate()
    print_table(f"Webhook delivery ({machine()})", rows)


if __name__ == "__main__":
    main()
