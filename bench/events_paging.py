"""Benchmark: page a tenant's whole event log over HTTP with `after_id` and limit=1000.

Target (issue 5): >= 20,000 events/s end to end on PostgreSQL with 1,000,000 events, and
every page's query uses the (tenant, audience, id) index.

    .venv/bin/python bench/events_paging.py --events 1000000
"""

import argparse
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.benchdb import ROOT, machine, print_table, use_bench_database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(tenant, count: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from events.ids import new_event_id
    from events.models import Event

    have = Event.objects.filter(tenant=tenant).count()
    if have >= count:
        return
    payload = {
        "ticket": {
            "id": str(uuid.uuid4()),
            "ticketNumber": "TKT-2026-000001",
            "subject": "Unable to access VPN",
            "description": "User is experiencing connectivity issues with the corporate VPN.",
            "status": "in_progress",
            "priority": "high",
            "category": "Network",
            "team": "operation",
            "assignee": {"id": str(uuid.uuid4()), "name": "Alice Agent"},
            "requester": {"id": str(uuid.uuid4()), "name": "Bob User"},
            "customer": "Acme Corp",
            "parent": None,
            "createdAt": "2026-11-01T10:00:00Z",
            "updatedAt": "2026-11-01T10:05:00Z",
        },
        "parent_ticket": None,
        "customer": {"name": "Acme Corp"},
    }
    changes = {"status": {"from": "open", "to": "in_progress"}}
    last = Event.objects.filter(tenant=tenant).order_by("-id").values_list("id", flat=True).first()
    batch = 20_000
    started = time.monotonic()
    while have < count:
        rows = []
        for _ in range(min(batch, count - have)):
            last = new_event_id(after=last)
            rows.append(
                Event(
                    id=last,
                    tenant=tenant,
                    type="tickets.ticket.updated",
                    occurred_at=timezone.now(),
                    payload=payload,
                    changes=changes,
                )
            )
        Event.objects.bulk_create(rows)
        have += len(rows)
        print(f"  filled {have}/{count} events ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE events_event")


def explain_page(tenant, after) -> str:
    from django.db import connection

    from events.selectors import partner_page_query, tenant_events

    sql, params = partner_page_query(tenant_events(tenant, after_id=after), 1000).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--database", default="ticketing_bench_events")
    args = parser.parse_args()

    url = use_bench_database(args.database)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from tenants.models import Tenant
    from tenants.services import create_api_key

    tenant, _ = Tenant.objects.get_or_create(slug="bench-events", defaults={"name": "Bench events"})
    # Other tenants share the table, as in production, so the planner sees real selectivity.
    for n in range(3):
        other, _ = Tenant.objects.get_or_create(slug=f"bench-other-{n}", defaults={"name": "Other"})
        fill(other, args.events // 10)
    fill(tenant, args.events)
    _, key = create_api_key(tenant=tenant, name="bench")
    plan = explain_page(tenant, None)
    from events.models import Event

    middle = Event.objects.filter(tenant=tenant).order_by("id").values_list("id", flat=True)[args.events // 2]
    plan_middle = explain_page(tenant, middle)

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
        "LOG_LEVEL": "WARNING",
        "DB_CONN_MAX_AGE": "60",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "config.serve", "--port", str(port), "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import httpx

        base = f"http://127.0.0.1:{port}/v2/system/events"
        with httpx.Client(headers={"X-API-Key": key}, timeout=30) as client:
            for _ in range(100):
                try:
                    client.get(base, params={"limit": 0})
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            total, pages, cursor, page_times = 0, 0, None, []
            started = time.monotonic()
            while True:
                params = {"limit": args.limit, **({"after_id": cursor} if cursor else {})}
                t0 = time.monotonic()
                response = client.get(base, params=params)
                response.raise_for_status()
                result = response.json()["result"]
                page_times.append(time.monotonic() - t0)
                if not result:
                    break
                total += len(result)
                pages += 1
                cursor = result[-1]["id"]
            elapsed = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=10)
    page_times.sort()
    uses_index = all("Index Scan" in p and "Seq Scan" not in p and "Sort" not in p for p in (plan, plan_middle))
    print_table(
        f"Event log paging over HTTP ({machine()})",
        [
            ("events in the log", f"{args.events:,}"),
            ("events read", f"{total:,}"),
            ("pages (limit)", f"{pages:,} ({args.limit})"),
            ("elapsed", f"{elapsed:.1f} s"),
            ("events/s end to end", f"{total / elapsed:,.0f} (target >= 20,000)"),
            (
                "page time p50 / p99",
                f"{page_times[len(page_times) // 2] * 1000:.1f} ms / "
                f"{page_times[int(len(page_times) * 0.99)] * 1000:.1f} ms",
            ),
            ("every page an index scan (no seq scan, no sort)", f"{uses_index}"),
        ],
    )
    print("\nplan of a page in the middle of the log:\n" + plan_middle)


if __name__ == "__main__":
    main()
