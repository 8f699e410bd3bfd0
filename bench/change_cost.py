"""CPU of one ticket change, in process: the whole Django request (middleware, JWT, DRF,
the services, the unit of work's end and COMMIT) through Django's test client, without
the network or an ASGI server, and what the PostgreSQL backend serving it spent.

    .venv/bin/python bench/change_cost.py --rounds 5 --changes 200

The write bench (bench/write_throughput.py) measures a change through the real server
with concurrent writers; on a VM whose speed drifts by tens of per cent between minutes,
its runs cannot separate changes of a few per cent. Here the variants run in one process,
one round of each in turn, on one database, so drift hits them alike. The variants are
how Django talks to PostgreSQL:

  client binding     psycopg quotes every parameter into the SQL text in Python (Django's
                     default: server_side_binding off), PostgreSQL parses and plans each
                     statement
  server binding     parameters travel apart from the statement (server_side_binding)
  server + prepared  and a statement a connection has run 5 times is prepared once
                     (psycopg's prepare_threshold), so PostgreSQL skips parsing and planning

Each round makes `--changes` changes with the write bench's mix (status, priority and
assignee PATCHes, comments, mentions, watch and unwatch) over 100 tickets of the demo
tenant, as its agents. Per change: the process's CPU (time.process_time: the request and
the test client's own small share) and the backend's (utime + stime of its process, read
from /proc; one persistent connection per variant, so one backend). Printed: the median
of the rounds and their spread (max - min), and every round."""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.benchdb import cpu_seconds, machine, use_bench_database
from bench.write_throughput import ASSIGNEES, DEMO_OPTIONS, MENTIONED, MIX, PRIORITIES, STATUSES, TICKET_PATH

VARIANTS: dict[str, dict[str, Any]] = {
    "client binding": {"server_side_binding": False, "prepare_threshold": None},
    "server binding": {"server_side_binding": True, "prepare_threshold": None},
    "server + prepared": {"server_side_binding": True, "prepare_threshold": 5},
}
TICKETS = 100
WRITERS = ["alice", "carol", "admin"]


class Writers:
    """The demo agents' clients and what they watch."""

    def __init__(self, seed: int) -> None:
        from django.test import Client

        from tenants.models import Realm
        from tenants.services import issue_token
        from ticketing.models import Ticket

        realm = Realm.objects.select_related("tenant").get(tenant__slug="demo", name="demo")
        self.clients = {}
        for name in WRITERS:
            token = issue_token(
                realm=realm, username=name, roles=["agent"], teams=["operation", "network"], ttl_seconds=12 * 3600
            )
            headers = {"Authorization": f"Bearer {token}", "x-tenantid": str(realm.tenant_id), "realmname": realm.name}
            self.clients[name] = Client(headers=headers, HTTP_HOST="127.0.0.1")  # in ALLOWED_HOSTS
        admin = self.clients["admin"]
        self.tickets = [str(pk) for pk in Ticket.objects.filter(tenant=realm.tenant).values_list("pk", flat=True)]
        while len(self.tickets) < TICKETS:
            response = admin.post(
                "/api/v2/ticketing/ticket", {"subject": "Bench ticket"}, content_type="application/json"
            )
            assert response.status_code == 201, (response.status_code, response.headers, response.content)
            self.tickets.append(response.json()["data"]["id"])
        self.tickets = self.tickets[:TICKETS]
        self.watching: set[tuple[str, str]] = set()
        self.rng = random.Random(seed)

    def change(self, n: int) -> None:
        rng = self.rng
        name = rng.choice(WRITERS)
        client = self.clients[name]
        ticket = rng.choice(self.tickets)
        url = f"{TICKET_PATH}/{ticket}"
        kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        json = "application/json"
        if kind == "status":
            response = client.patch(url, {"status": rng.choice(STATUSES)}, content_type=json)
        elif kind == "priority":
            response = client.patch(url, {"priority": rng.choice(PRIORITIES)}, content_type=json)
        elif kind == "assignee":
            response = client.patch(url, {"assignee": rng.choice(ASSIGNEES)}, content_type=json)
        elif kind == "comment":
            response = client.post(f"{url}/comments", {"body": f"Looked at it ({name} #{n})."}, content_type=json)
        elif kind == "mention":
            body = f"@{rng.choice(MENTIONED)} can you take a look? ({name} #{n})"
            response = client.post(f"{url}/comments", {"body": body}, content_type=json)
        elif (name, ticket) in self.watching:
            response = client.delete(f"{url}/watchers/{name}")
            self.watching.discard((name, ticket))
        else:
            response = client.post(f"{url}/watchers", {"user": name}, content_type=json)
            self.watching.add((name, ticket))
        if response.status_code >= 300:
            raise SystemExit(f"{kind}: {response.status_code} {response.content[:300]!r}")


def use_variant(options: dict[str, Any]) -> int:
    """Reconnect with these options; the new connection's backend pid."""
    from django.db import connection

    connection.close()
    connection.settings_dict["OPTIONS"].update(options)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--changes", type=int, default=200, help="changes per round and variant")
    parser.add_argument("--warm-up", type=int, default=50, help="changes per variant before its first round")
    parser.add_argument("--db", default="ticketing_bench_change_cost")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}

    # One persistent connection per variant, so one backend to read; no pool. Logs of
    # every request would be measured too. DEBUG off (it keeps every query's SQL), and plain
    # HTTP as the write bench's server is run.
    os.environ.update(
        {"DB_POOL": "0", "DB_CONN_MAX_AGE": "86400", "LOG_LEVEL": "WARNING", "DEBUG": "0", "SECURE_SSL_REDIRECT": "0"}
    )
    os.environ.setdefault("DEMO_REALM_SECRET", "bench-only-demo-realm-secret-0123456789-abcdef")
    use_bench_database(args.db)
    from django.core.management import call_command
    from django.db import connection

    call_command("load_demo", *DEMO_OPTIONS, verbosity=0)
    if connection.vendor != "postgresql":
        raise SystemExit("PostgreSQL only: the variants are psycopg's")
    writers = Writers(args.seed)
    print(f"machine: {machine()}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.rounds} rounds x {args.changes} changes per variant, {TICKETS} tickets, seed {args.seed}")

    n = 0
    for options in variants.values():
        use_variant(options)
        for _ in range(args.warm_up):
            n += 1
            writers.change(n)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, options in variants.items():
            pid = use_variant(options)
            for _ in range(10):  # let the new connection prepare what it will
                n += 1
                writers.change(n)
            cpu0, pg0 = time.process_time(), cpu_seconds(pid)
            for _ in range(args.changes):
                n += 1
                writers.change(n)
            cpu1, pg1 = time.process_time(), cpu_seconds(pid)
            results[name].append(((cpu1 - cpu0) * 1000 / args.changes, (pg1 - pg0) * 1000 / args.changes))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({max(values) - min(values):.2f})"

    print("| variant | server CPU ms/change | PostgreSQL CPU ms/change | rounds (server / PostgreSQL) |")
    print("|---|---:|---:|---|")
    for name, rounds in results.items():
        server, pg = [r[0] for r in rounds], [r[1] for r in rounds]
        each = ", ".join(f"{s:.1f} / {p:.1f}" for s, p in rounds)
        print(f"| {name} | {cell(server)} | {cell(pg)} | {each} |")


if __name__ == "__main__":
    main()
