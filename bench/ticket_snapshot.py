"""Benchmark: the list snapshot (page + total) over 1,000,000 tickets of one tenant.

Target (issue 3): a typical filter answers in under 100 ms on PostgreSQL. Times the same
selector the list endpoint and the stream snapshot use (server time, no HTTP).

    .venv/bin/python bench/ticket_snapshot.py --tickets 1000000
"""

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.benchdb import machine, print_table, use_bench_database

WORDS = [
    "VPN",
    "laptop",
    "printer",
    "email",
    "password",
    "monitor",
    "network",
    "license",
    "Wi-Fi",
    "disk",
    "access",
    "server",
    "backup",
    "phone",
    "badge",
    "update",
    "crash",
    "slow",
    "error",
    "install",
]


def fill(tenant, users, count: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from ticketing.models import Priority, Status, Ticket

    have = Ticket.objects.filter(tenant=tenant).count()
    rng = random.Random(have)
    now = timezone.now()
    started = time.monotonic()
    while have < count:
        rows = []
        for i in range(have, min(have + 20_000, count)):
            rows.append(
                Ticket(
                    tenant=tenant,
                    number=f"TKT-2026-{i:07d}",
                    subject=" ".join(rng.choice(WORDS) for _ in range(4)),
                    description=" ".join(rng.choices(WORDS, k=12)),
                    status=rng.choices(Status.values, weights=[20, 15, 5, 25, 30, 5])[0],
                    priority=rng.choice(Priority.values),
                    category=rng.choice(["Network", "Hardware", "Software"]),
                    team=rng.choice(["operation", "network", "security", "facilities"]),
                    assignee=rng.choice([*users, None]),
                    requester=rng.choice(users),
                    customer=rng.choice(["Acme", ""]),
                )
            )
        # Benchmark data straight into the table: no events needed to measure reads.
        Ticket.objects.bulk_create(rows)
        have += len(rows)
        print(f"  filled {have}/{count} tickets ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE ticketing_ticket SET updated_at = created_at - (random() * interval '90 days'), "
            "created_at = created_at - (random() * interval '180 days') WHERE updated_at >= %s",
            [now],
        )
    with connection.cursor() as cursor:
        # As autovacuum would after a bulk load: fresh statistics and visibility map.
        cursor.execute("VACUUM ANALYZE ticketing_ticket")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--database", default="ticketing_bench_snapshot")
    args = parser.parse_args()
    use_bench_database(args.database)

    from tenants.callers import caller_for_user
    from tenants.models import Tenant, TenantUser
    from ticketing.selectors import list_tickets, ticket_query_from

    tenant, _ = Tenant.objects.get_or_create(slug="bench-snapshot", defaults={"name": "Bench snapshot"})
    users = []
    for n in range(50):
        user, _ = TenantUser.objects.get_or_create(
            tenant=tenant,
            username=f"agent{n}",
            defaults={"subject": f"agent{n}", "roles": ["agent"], "teams": ["operation"]},
        )
        users.append(user)
    fill(tenant, users, args.tickets)
    caller = caller_for_user(users[0])

    def f(*conditions):
        return {"op": "AND", "operand": [{"id": f"c{i}", **c} for i, c in enumerate(conditions)]}

    scenarios = {
        "template: open work of a team, newest first": (
            "template",
            {
                "top": 30,
                "offset": 0,
                "sort": "updatedAt",
                "searchOrder": "DESC",
                "filter": f(
                    {"op": "IN", "column": "status", "operand": ["open", "in_progress"]},
                    {"op": "EQ", "column": "team", "operand": "network"},
                ),
            },
        ),
        "agent: my tickets and my team's, open": (
            "agent",
            {
                "top": 30,
                "offset": 0,
                "filter": f({"op": "IN", "column": "status", "operand": ["open", "in_progress", "on_hold"]}),
            },
        ),
        "template: urgent, by created date": (
            "template",
            {
                "top": 30,
                "offset": 0,
                "sort": "createdAt",
                "filter": f({"op": "EQ", "column": "priority", "operand": "urgent"}),
            },
        ),
        "template: search a ticket number": ("template", {"top": 30, "offset": 0, "search": "TKT-2026-0123456"}),
        "template: search two common words (worst case)": (
            "template",
            {"top": 30, "offset": 0, "search": "printer crash"},
        ),
        "template: last week, 3rd page": (
            "template",
            {
                "top": 30,
                "offset": 60,
                "filter": f({"op": "GE", "column": "updatedAt", "operand": "2026-11-15T00:00:00Z"}),
            },
        ),
        "template: no filter": ("template", {"top": 30, "offset": 0}),
    }
    rows = []
    for name, (scope, body) in scenarios.items():
        query = ticket_query_from(caller, scope, body)
        times = []
        page = None
        for _ in range(args.runs):
            t0 = time.perf_counter()
            page = list_tickets(caller, query)
            times.append(time.perf_counter() - t0)
        times.sort()
        p50, p99 = times[len(times) // 2] * 1000, times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
        total = f"{page.total:,}" + ("" if page.total_exact else "+")
        verdict = "ok" if p99 < 100 else "SLOW"
        rows.append((name, f"p50 {p50:6.1f} ms | p99 {p99:6.1f} ms | total {total} | {verdict}"))
    print_table(f"Snapshot over {args.tickets:,} tickets of one tenant ({machine()}); target < 100 ms", rows)


if __name__ == "__main__":
    main()
