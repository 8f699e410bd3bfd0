"""Benchmark: page a tenant's whole event log over HTTP with `after_id` and limit=1000.

Target (issue 5): >= 20,000 events/s end to end on PostgreSQL with 1,000,000 events, and
every page's query uses the (tenant, audience, id) index.

    .venv/bin/python bench/events_paging.py --events 1000000

With --tenants-mix (issue 12) the log holds one big tenant and many small ones,
interleaved in time as concurrent tenants write (default 1 x 1,000,000 and
100 x 10,000 events), and the benchmark measures what a small tenant's partner waits for:
pages after a cursor in the middle of its history, plus the plan PostgreSQL runs for
them. --scale shrinks every count for a quick check of the benchmark itself.

    .venv/bin/python bench/events_paging.py --tenants-mix
    .venv/bin/python bench/events_paging.py --tenants-mix --scale 0.01
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
    from events.selectors import last_event_id

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
    last = last_event_id(tenant)
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


SAMPLE_PAYLOAD = {
    "ticket": {"id": "8d4c9d0e-5b1e-4c43-9d55-3f2f1f5f0b11", "subject": "Unable to access VPN", "status": "open"},
    "customer": {"name": "Acme Corp"},
}


def fill_mix(big, smalls: list, big_events: int, small_events: int) -> None:
    """One big tenant's and many small tenants' events, interleaved in id (time) order the
    way concurrent tenants write, inserted by PostgreSQL itself (a million ORM objects
    would take minutes). Ids are ULIDs of this millisecond: valid, fresh cursors."""
    import json

    from django.db import connection

    from events.ids import new_event_id

    total = big_events + small_events * len(smalls)
    # Ids share the top 64 bits (time and part of the random bits) of one fresh ULID and
    # count up in the low 64, so they stay unique, ordered and inside the retention window.
    prefix = f"{new_event_id().int >> 64:016x}"
    # Row n belongs to a small tenant when n falls on its share of the interleaving.
    every = total / (small_events * len(smalls)) if smalls and small_events else 0
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO events_event (id, tenant_id, type, occurred_at, payload, changes, support, audience)
            SELECT (%(prefix)s || lpad(to_hex(n), 16, '0'))::uuid,
                   CASE WHEN %(every)s > 0 AND floor(n / %(every)s) > floor((n - 1) / %(every)s)
                        THEN (%(smalls)s::uuid[])[(floor(n / %(every)s)::bigint %% %(count)s) + 1]
                        ELSE %(big)s::uuid END,
                   'tickets.ticket.updated', now(), %(payload)s::jsonb,
                   '{"status": {"from": "open", "to": "in_progress"}}'::jsonb, false, 'partner'
            FROM generate_series(1, %(total)s) n
            """,
            {
                "prefix": prefix,
                "every": every,
                "smalls": [t.id for t in smalls],
                "count": max(len(smalls), 1),
                "big": big.id,
                "payload": json.dumps(SAMPLE_PAYLOAD),
                "total": total,
            },
        )
        cursor.execute("ANALYZE events_event")
    print(f"  filled {total:,} events ({time.monotonic() - started:.0f} s)", file=sys.stderr)


def explain_analyze_page(tenant, after) -> tuple[str, float]:
    """The plan PostgreSQL runs for one REST page, and its execution time in ms."""
    from django.db import connection

    from events.selectors import partner_page_query, tenant_events

    sql, params = partner_page_query(tenant_events(tenant, after_id=after), 1000).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        lines = [row[0] for row in cursor.fetchall()]
    executed = next((float(line.split(":")[1].split()[0]) for line in lines if line.startswith("Execution Time")), 0.0)
    return "\n".join(lines), executed


def start_server(url: str) -> tuple[subprocess.Popen, int]:
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
    return server, port


def timed_pages(client, base: str, cursor: str | None, limit: int, pages: int) -> list[float]:
    """Seconds per page for up to `pages` pages after `cursor`."""
    times = []
    for _ in range(pages):
        params = {"limit": limit, **({"after_id": cursor} if cursor else {})}
        t0 = time.monotonic()
        response = client.get(base, params=params)
        response.raise_for_status()
        result = response.json()["result"]
        times.append(time.monotonic() - t0)
        if not result:
            break
        cursor = result[-1]["id"]
    return times


def run_mix(args: argparse.Namespace) -> None:
    """Issue 12's many-tenant case: a small tenant's pages on a log dominated by another."""
    big_events = max(int(args.events * args.scale), 1)
    small_events = max(int(args.small_events * args.scale), 1)
    url = use_bench_database(args.database if args.database != DEFAULT_DATABASE else f"{DEFAULT_DATABASE}_mix")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import httpx

    from events.ids import event_id_to_str
    from events.models import Event
    from events.selectors import log_after
    from tenants.models import Tenant
    from tenants.services import create_api_key

    big, _ = Tenant.objects.get_or_create(slug="bench-mix-big", defaults={"name": "Big"})
    smalls = [
        Tenant.objects.get_or_create(slug=f"bench-mix-small-{n}", defaults={"name": f"Small {n}"})[0]
        for n in range(args.small_tenants)
    ]
    if Event.objects.count() != big_events + small_events * len(smalls):
        from django.db import connection

        with connection.cursor() as cursor:  # a database of its own: start the log afresh
            cursor.execute("TRUNCATE events_event")
        fill_mix(big, smalls, big_events, small_events)
    small = smalls[0]
    small_cursor = log_after(small).values_list("id", flat=True)[small_events // 2]
    big_cursor = log_after(big).values_list("id", flat=True)[big_events // 2]
    small_plan, small_db_ms = explain_analyze_page(small, small_cursor)
    big_plan, big_db_ms = explain_analyze_page(big, big_cursor)
    _, small_key = create_api_key(tenant=small, name="bench")
    _, big_key = create_api_key(tenant=big, name="bench")

    server, port = start_server(url)
    base = f"http://127.0.0.1:{port}/v2/system/events"
    try:
        with httpx.Client(timeout=30) as client:
            for _ in range(100):
                try:
                    client.get(base, params={"limit": 0}, headers={"X-API-Key": small_key})
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            client.headers["X-API-Key"] = small_key
            small_times = timed_pages(client, base, event_id_to_str(small_cursor), args.limit, 20)
            client.headers["X-API-Key"] = big_key
            big_times = timed_pages(client, base, event_id_to_str(big_cursor), args.limit, 20)
    finally:
        server.terminate()
        server.wait(timeout=10)

    def on_index(plan: str) -> bool:
        # A (tenant, ...) index, walked in order or as a bitmap of only the tenant's rows
        # then sorted (the planner's choice for a short tail); never the primary key.
        tenant_indexes = ("event_tenant_id", "event_tenant_audience_id", "event_tenant_type_id")
        return any(f" {name} " in plan for name in tenant_indexes) and "_pkey" not in plan and "Seq Scan" not in plan

    def ms(times: list[float]) -> str:
        times = sorted(times)
        return f"{times[len(times) // 2] * 1000:.1f} ms / {times[-1] * 1000:.1f} ms ({len(times)} pages)"

    print_table(
        f"Event log paging, many tenants ({machine()})",
        [
            ("events in the log", f"{big_events + small_events * len(smalls):,}"),
            ("tenants", f"1 x {big_events:,} + {len(smalls)} x {small_events:,}"),
            ("small tenant: page after a cursor, p50 / max", ms(small_times)),
            ("small tenant: the page's query in PostgreSQL", f"{small_db_ms:.1f} ms"),
            ("small tenant: plan on the tenant's index", f"{on_index(small_plan)}"),
            ("big tenant: page after a cursor, p50 / max", ms(big_times)),
            ("big tenant: the page's query in PostgreSQL", f"{big_db_ms:.1f} ms"),
            ("big tenant: plan on the tenant's index", f"{on_index(big_plan)}"),
        ],
    )
    print("\nplan of the small tenant's page:\n" + small_plan)


DEFAULT_DATABASE = "ticketing_bench_events"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="Events of the (big) tenant.")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument(
        "--database", default=DEFAULT_DATABASE, help=f"Default {DEFAULT_DATABASE} (with --tenants-mix: ..._mix)."
    )
    parser.add_argument("--tenants-mix", action="store_true", help="One big tenant and many small ones (issue 12).")
    parser.add_argument("--small-tenants", type=int, default=100, help="With --tenants-mix: how many small tenants.")
    parser.add_argument("--small-events", type=int, default=10_000, help="With --tenants-mix: events of each.")
    parser.add_argument("--scale", type=float, default=1.0, help="With --tenants-mix: multiply every event count.")
    args = parser.parse_args()
    if args.tenants_mix:
        run_mix(args)
        return

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
    from events.selectors import log_after

    middle = log_after(tenant).values_list("id", flat=True)[args.events // 2]
    plan_middle = explain_page(tenant, middle)

    server, port = start_server(url)
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
