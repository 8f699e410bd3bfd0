"""Write throughput of one tenant: N concurrent writers through the real HTTP API, a
partner reading the event log meanwhile.

For each cell of the matrix (writers x ticket set) N writers, each an agent with its own
keep-alive connection, loop over a mix of ticket changes for a fixed time (or until a fixed
number of changes): PATCH status / priority / assignee, POST a comment (a third of them
@mentioning a tenant user), add or remove themselves as a watcher. The "hot" set is 3
tickets every writer fights over; the "wide" set is 1,000 tickets, where they rarely meet.
A partner (API key) pages `GET /v2/system/events?after_id=...` all along, and after the
writers stop reads on until the log is drained. One row per cell:

  changes/s          successful (2xx) writes per second of the writing window, which ends
                     when the last request started before the deadline has returned
  p50 / p99 ms       latency of every write request (errors included)
  server CPU ms/chg  utime+stime of the server process tree (/proc) per successful write,
                     from the writers' start to the reader's drain (its pages included)
  PG CPU ms/chg      utime+stime of every PostgreSQL process plus the postmaster's
                     cutime+cstime (backends that exit are reaped by it), per write.
                     PostgreSQL is shared: other databases' work on the machine counts too
  errors             non-2xx answers (and client-side failures) by status: must be none
  deadlocks          delta of pg_stat_database.deadlocks of the bench database
  db faults          database errors in the server's log (deadlock, too many clients, pool
                     timeout, pool closed): each is one failed attempt; the server retries
                     a rolled-back request once
  events             partner-visible events committed in the cell / those the reader saw
  order              the reader saw every committed id, each once, in strictly increasing order

The server is `python -m config.serve` of `--checkout` (default: this repository), run
with `--python`, so one script measures two versions of the code; its migrations and demo
loader run from that checkout. Each invocation starts from a freshly created database.

    .venv/bin/python bench/write_throughput.py                        # 1,4,16,64 writers x hot,wide, 15 s
    .venv/bin/python bench/write_throughput.py --runs 3 --seconds 10
    .venv/bin/python bench/write_throughput.py --checkout /tmp/baseline --writers 16 --sets hot
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.benchdb import ROOT, machine, percentile, realm_token, stop_process_groups

TICKET_PATH = "/api/v2/ticketing/ticket"
EVENTS_PATH = "/v2/system/events"
STATUSES = ["open", "in_progress", "on_hold", "resolved"]
PRIORITIES = ["low", "medium", "high", "urgent"]
ASSIGNEES = ["alice", "carol", "admin"]  # the demo tenant's agents
MENTIONED = ["alice", "carol"]
# The mix of one writer's loop (weights): what agents do to tickets all day.
MIX = {"status": 20, "priority": 15, "assignee": 15, "comment": 20, "mention": 10, "watcher": 20}
HOT_TICKETS = 3
WIDE_TICKETS = 1000
# load_demo refuses the published demo credentials when DEBUG is off.
DEMO_OPTIONS = ("--tickets", "0", "--admin-password", "bench-admin-password", "--user-password", "bench-user-pass")
DEMO_REALM_SECRET = "bench-only-demo-realm-secret-0123456789-abcdef"  # noqa: S105  (the bench database only)
# What the demo tenant looks like to a token signer, printed by the checkout's own code.
REALM_SCRIPT = """
import json
from tenants.models import Realm
realm = Realm.objects.select_related("tenant").get(tenant__slug="demo", name="demo")
print(json.dumps({"tenant_id": str(realm.tenant_id), "realm": realm.name, "secret": realm.secret,
                  "issuer": realm.issuer or "", "audience": realm.audience or "", "teams_claim": realm.teams_claim}))
"""
# The partner-visible part of the tenant's log, read straight from the table: the count the
# reader's view is checked against.
PARTNER_EVENTS_SQL = "SELECT id FROM events_event WHERE tenant_id = %s AND audience = 'partner'"

# Database errors in the server's log, by what PostgreSQL said.
DB_FAULTS = {
    "deadlock": "deadlock detected",
    "too many clients": "too many clients already",
    # The server's connection pool (DB_POOL): no connection free within its timeout, and
    # requests that met a pool the server was closing, replacing or had not opened yet.
    "pool timeout": "couldn't get a connection after",
    "pool closed": "is closed",
    "pool reused": "cannot be reused",
    "pool not open": "is not open yet",
}


# --- processes and CPU --------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # gone meanwhile


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree_cpu_ms(root: int, *, reaped: bool = False) -> float:
    """utime+stime of a process and its descendants, in ms; with `reaped`, also the root's
    cutime+cstime (children that exited and were waited for)."""
    children = _children()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        fields = _stat(pid)
        if fields is None:
            continue
        total += int(fields[11]) + int(fields[12])
        if reaped and pid == root:
            total += int(fields[13]) + int(fields[14])
        todo += children.get(pid, [])
    return total * 1000 / CLK_TCK


def postmaster_pid() -> int:
    """The PostgreSQL postmaster: the `postgres` process whose parent is not one."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "postgres":
                fields = _stat(int(entry.name))
                parent = Path(f"/proc/{fields[1]}/comm") if fields else None
                if parent and not (parent.exists() and parent.read_text().strip() == "postgres"):
                    return int(entry.name)
    raise RuntimeError("no PostgreSQL postmaster found in /proc (is PostgreSQL on this machine?)")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the bench database, tenant and server ------------------------------------------------


def server_env(args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{args.db}",
        "REDIS_URL": args.redis_url,
        "REDIS_PREFIX": "bench",
        "SECRET_KEY": "bench-only-secret-key-not-for-production",
        "DEMO_REALM_SECRET": DEMO_REALM_SECRET,
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",  # plain http on loopback
        "LOG_LEVEL": "WARNING",
        # 0 as docker-compose.yml runs the service: a connection per request, whose backend
        # start-up is PostgreSQL CPU too.
        "DB_CONN_MAX_AGE": str(args.db_conn_max_age),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONUNBUFFERED": "1",
    }


def manage(args: argparse.Namespace, *command: str) -> str:
    """Run a management command of the checkout under test; its stdout."""
    done = subprocess.run(
        [args.python, "manage.py", *command],
        cwd=args.checkout,
        env=server_env(args),
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return done.stdout


@dataclass
class Tenancy:
    tenant_id: str
    realm: str
    secret: str
    issuer: str
    audience: str
    teams_claim: str
    api_key: str = ""
    hot: list[str] = field(default_factory=list)
    wide: list[str] = field(default_factory=list)


def prepare(args: argparse.Namespace) -> Tenancy:
    """A fresh database migrated by the checkout, the demo tenant (users, no tickets), a
    partner API key."""
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db}"')
    manage(args, "migrate", "--noinput", "-v", "0")
    manage(args, "load_demo", *DEMO_OPTIONS)
    tenancy = Tenancy(**json.loads(manage(args, "shell", "-c", REALM_SCRIPT).strip().splitlines()[-1]))
    tenancy.api_key = manage(args, "create_api_key", "--tenant", "demo", "--name", "write bench").strip()
    return tenancy


def make_token(tenancy: Tenancy, username: str, roles: list[str], ttl: int = 12 * 3600) -> str:
    return realm_token(tenancy, username, roles=roles, teams=["operation", "network"], ttl=ttl)


def headers_for(tenancy: Tenancy, token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "x-tenantid": tenancy.tenant_id, "realmname": tenancy.realm}


def flush_redis(args: argparse.Namespace) -> None:
    import redis

    client = redis.Redis.from_url(args.redis_url)
    keys = list(client.scan_iter(match="bench:*", count=1000))
    if keys:
        client.delete(*keys)


class Server:
    """`python -m config.serve` of the checkout, in its own process group."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(args.log_dir) / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.args.python, "-m", "config.serve", "--port", str(self.port), "--workers", str(self.args.workers)],
                cwd=self.args.checkout,
                env=server_env(self.args),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited; see {self.log_path}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 60 s")
            time.sleep(0.2)

    def cpu_ms(self) -> float:
        return tree_cpu_ms(self.proc.pid) if self.proc else 0.0

    def db_faults(self, *, since: int) -> dict[str, int]:
        """Database errors the server logged after byte `since` of its log, by kind: each is
        one failed attempt of a request (a retried request can log two)."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        # Only the lines that start a log record (a timestamp), not a traceback's lines.
        heads = [line for line in text.splitlines() if line[:1].isdigit()]
        counts = {kind: sum(needle in line for line in heads) for kind, needle in DB_FAULTS.items()}
        return {kind: n for kind, n in counts.items() if n}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process_groups([self.proc], timeout=15)
        self.proc = None


# --- database probes ----------------------------------------------------------------------


class Probe:
    """One connection to the bench database, for counters that are not the server's."""

    def __init__(self, args: argparse.Namespace, tenant_id: str) -> None:
        import psycopg

        self.conn = psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={args.db}", autocommit=True)
        self.db = args.db
        self.tenant_id = tenant_id

    def deadlocks(self) -> int:
        row = self.conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = %s", [self.db]).fetchone()
        return int(row[0])

    def newest_partner_event(self) -> int:
        row = self.conn.execute(
            f"{PARTNER_EVENTS_SQL} ORDER BY id DESC LIMIT 1",
            [self.tenant_id],
        ).fetchone()
        return row[0].int if row else 0

    def partner_events_after(self, after: int) -> set[int]:
        import uuid

        rows = self.conn.execute(
            f"{PARTNER_EVENTS_SQL} AND id > %s",
            [self.tenant_id, uuid.UUID(int=after)],
        ).fetchall()
        return {row[0].int for row in rows}

    def close(self) -> None:
        self.conn.close()


# --- writers and the partner reader -------------------------------------------------------


def ulid_int(text: str) -> int:
    from ulid import ULID

    return ULID.from_str(text).to_uuid().int


@dataclass
class Tally:
    """What all writers of a cell saw."""

    changes: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_bodies: dict[str, str] = field(default_factory=dict)
    by_kind: Counter[str] = field(default_factory=Counter)


@dataclass
class Cell:
    writers: int
    tickets: list[str]
    until: float  # monotonic deadline of the writing window
    max_changes: int | None
    tally: Tally = field(default_factory=Tally)

    def done(self) -> bool:
        if self.max_changes is not None:
            return self.tally.changes >= self.max_changes
        return time.monotonic() >= self.until


def pick(rng: random.Random) -> str:
    return rng.choices(list(MIX), weights=list(MIX.values()))[0]


async def writer(cell: Cell, client: Any, username: str, rng: random.Random) -> None:
    # Whether this writer watches a ticket: True, False, or None after a failed watcher
    # request (then it adds, which answers 2xx either way, instead of removing).
    watching: dict[str, bool | None] = {}
    n = 0
    while not cell.done():
        ticket = rng.choice(cell.tickets)
        kind = pick(rng)
        url = f"{TICKET_PATH}/{ticket}"
        n += 1
        if kind == "status":
            request = client.build_request("PATCH", url, json={"status": rng.choice(STATUSES)})
        elif kind == "priority":
            request = client.build_request("PATCH", url, json={"priority": rng.choice(PRIORITIES)})
        elif kind == "assignee":
            request = client.build_request("PATCH", url, json={"assignee": rng.choice(ASSIGNEES)})
        elif kind == "comment":
            request = client.build_request("POST", f"{url}/comments", json={"body": f"Looked at it ({username} #{n})."})
        elif kind == "mention":
            body = f"@{rng.choice(MENTIONED)} can you take a look? ({username} #{n})"
            request = client.build_request("POST", f"{url}/comments", json={"body": body})
        elif watching.get(ticket):
            kind = "unwatch"
            request = client.build_request("DELETE", f"{url}/watchers/{username}")
        else:
            kind = "watch"
            request = client.build_request("POST", f"{url}/watchers", json={"user": username})
        started = time.perf_counter()
        try:
            response = await client.send(request)
            status, text = str(response.status_code), response.text
        except Exception as exc:  # a failed request is a result too, counted by its kind
            status, text = type(exc).__name__, str(exc)
        cell.tally.latencies.append(time.perf_counter() - started)
        if status.startswith("2"):
            cell.tally.changes += 1
            cell.tally.by_kind[kind] += 1
            if kind in ("watch", "unwatch"):
                watching[ticket] = kind == "watch"
        else:
            cell.tally.errors[status] += 1
            cell.tally.error_bodies.setdefault(status, f"{request.method} {kind}: {text[:400]}")
            if kind in ("watch", "unwatch"):
                watching[ticket] = None


@dataclass
class ReaderLog:
    ids: list[int] = field(default_factory=list)
    pages: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def reader(base_url: str, api_key: str, after: int, stop: asyncio.Event, log: ReaderLog, interval: float) -> None:
    """A partner polling the log: next page after the last id seen; a short page means it
    is caught up, so it waits `interval`. After `stop`, it reads until two pages in a row
    come back empty."""
    import uuid

    import httpx

    cursor = str(uuid.UUID(int=after)) if after else None  # None: from the start of the log
    empty_after_stop = 0
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": api_key}, timeout=60) as client:
        while empty_after_stop < 2:
            stopping = stop.is_set()
            try:
                params = {"limit": 1000, **({"after_id": cursor} if cursor else {})}
                response = await client.get(EVENTS_PATH, params=params)
            except httpx.HTTPError as exc:
                log.errors[type(exc).__name__] += 1
                await asyncio.sleep(interval)
                continue
            if response.status_code != 200:
                log.errors[str(response.status_code)] += 1
                await asyncio.sleep(interval)
                continue
            page = response.json()["result"]
            log.pages += 1
            if page:
                log.ids += [ulid_int(event["id"]) for event in page]
                cursor = page[-1]["id"]
            empty_after_stop = empty_after_stop + 1 if stopping and not page else 0
            if len(page) < 1000:
                await asyncio.sleep(interval)


def order_check(ids: list[int]) -> tuple[int, int]:
    """(duplicates, ids not greater than the one before)."""
    duplicates = len(ids) - len(set(ids))
    backwards = sum(1 for a, b in itertools.pairwise(ids) if b <= a)
    return duplicates, backwards


# --- one cell, one run --------------------------------------------------------------------


async def warm_up(server: Server, tenancy: Tenancy, tokens: list[str], ticket: str) -> None:
    """Every writer identity calls once (its tenant user is created on its first request),
    and the server imports and connects what it does once, outside any measurement."""
    import httpx

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        for token in tokens:
            response = await client.get(f"{TICKET_PATH}/{ticket}", headers=headers_for(tenancy, token))
            response.raise_for_status()
        response = await client.get(EVENTS_PATH, params={"limit": 1}, headers={"X-API-Key": tenancy.api_key})
        response.raise_for_status()


async def create_tickets(server: Server, tenancy: Tenancy, token: str, count: int) -> list[str]:
    """`count` tickets through the API, 8 at a time; their ids in creation order."""
    import httpx

    ids: list[str | None] = [None] * count
    queue = list(range(count))
    rng = random.Random(1)

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop(0)
            body = {
                "subject": f"Bench ticket {i + 1}",
                "description": "Created by bench/write_throughput.py.",
                "priority": rng.choice(PRIORITIES),
                "team": rng.choice(["operation", "network"]),
            }
            response = await client.post(TICKET_PATH, json=body)
            response.raise_for_status()
            ids[i] = response.json()["data"]["id"]

    async with httpx.AsyncClient(base_url=server.url, headers=headers_for(tenancy, token), timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(8)))
    return [i for i in ids if i]


async def run_cell(
    args: argparse.Namespace, server: Server, tenancy: Tenancy, probe: Probe, writers: int, set_name: str, run: int
) -> dict[str, Any]:
    import httpx

    tickets = tenancy.hot if set_name == "hot" else tenancy.wide
    after = probe.newest_partner_event()
    deadlocks_before = probe.deadlocks()
    log_offset = server.log_path.stat().st_size
    stop = asyncio.Event()
    log = ReaderLog()
    reader_task = asyncio.create_task(reader(server.url, tenancy.api_key, after, stop, log, args.reader_interval))
    clients = [
        httpx.AsyncClient(
            base_url=server.url,
            headers=headers_for(tenancy, args.tokens[w]),
            timeout=args.timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for w in range(writers)
    ]
    server_cpu, pg_cpu, client_cpu = server.cpu_ms(), tree_cpu_ms(args.postmaster, reaped=True), time.process_time()
    started = time.monotonic()
    cell = Cell(writers, tickets, started + args.seconds, args.changes)
    try:
        await asyncio.gather(
            *(
                writer(cell, clients[w], f"bench-agent-{w:02d}", random.Random(f"{args.seed}-{run}-{set_name}-{w}"))
                for w in range(writers)
            )
        )
        elapsed = time.monotonic() - started
        stop.set()
        try:
            await asyncio.wait_for(reader_task, args.drain)
            drained = True
        except TimeoutError:
            drained = False
    finally:
        reader_task.cancel()
        for client in clients:
            await client.aclose()
    server_cpu = server.cpu_ms() - server_cpu
    pg_cpu = tree_cpu_ms(args.postmaster, reaped=True) - pg_cpu
    client_cpu = (time.process_time() - client_cpu) * 1000
    await asyncio.sleep(1)  # backends report their statistics when they end
    committed = probe.partner_events_after(after)
    seen = set(log.ids)
    duplicates, backwards = order_check(log.ids)
    tally = cell.tally
    per_change = max(tally.changes, 1)
    return {
        "writers": writers,
        "set": set_name,
        "changes": tally.changes,
        "seconds": elapsed,
        "changes/s": tally.changes / elapsed,
        "p50 ms": percentile(tally.latencies, 50) * 1000,
        "p99 ms": percentile(tally.latencies, 99) * 1000,
        "server CPU ms/chg": server_cpu / per_change,
        "PG CPU ms/chg": pg_cpu / per_change,
        "client CPU ms/chg": client_cpu / per_change,
        "errors": dict(tally.errors),
        "error bodies": tally.error_bodies,
        "deadlocks": probe.deadlocks() - deadlocks_before,
        "db faults": server.db_faults(since=log_offset),
        "committed": len(committed),
        "seen": len(seen),
        "missed": len(committed - seen),
        "unknown": len(seen - committed),  # read, yet not in the log: never expected
        "duplicates": duplicates,
        "backwards": backwards,
        "drained": drained,
        "reader errors": dict(log.errors),
        "by kind": dict(tally.by_kind),
        "server alive": server.alive(),
        "load": loadavg(),
    }


def order_ok(cell: dict[str, Any]) -> bool:
    faults = (cell["duplicates"], cell["backwards"], cell["missed"], cell["unknown"], len(cell["reader errors"]))
    return not any(faults) and cell["drained"]


def run_matrix(args: argparse.Namespace, tenancy: Tenancy, run: int) -> list[dict[str, Any]]:
    flush_redis(args)
    server = Server(args)
    probe = Probe(args, tenancy.tenant_id)
    cells: list[dict[str, Any]] = []
    try:
        server.start()

        async def matrix() -> None:
            await warm_up(server, tenancy, args.tokens, tenancy.hot[0])
            for writers in args.writer_counts:
                for set_name in args.set_names:
                    await asyncio.sleep(args.pause)
                    cell = await run_cell(args, server, tenancy, probe, writers, set_name, run)
                    cells.append(cell)
                    print(f"  {format_row(cell)} | load {cell['load']}", flush=True)
                    if not cell["server alive"]:
                        raise RuntimeError(f"the server died; see {server.log_path}")

        asyncio.run(matrix())
    finally:
        server.stop()
        probe.close()
    return cells


# --- output -------------------------------------------------------------------------------

COLUMNS = ["writers", "set", "changes/s", "p50 ms", "p99 ms", "server CPU ms/chg", "PG CPU ms/chg", "errors"]
COLUMNS += ["deadlocks", "db faults in server log", "events committed/seen", "order"]
NUMERIC = ["changes/s", "p50 ms", "p99 ms", "server CPU ms/chg", "PG CPU ms/chg", "client CPU ms/chg", "deadlocks"]


def errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} x{n}" for code, n in sorted(errors.items())) or "0"


def order_text(cell: dict[str, Any]) -> str:
    if order_ok(cell):
        return "ok"
    problems = [f"{cell[k]} {k}" for k in ("missed", "unknown", "duplicates", "backwards") if cell[k]]
    problems += [] if cell["drained"] else ["not drained"]
    problems += [f"reader got {errors_text(cell['reader errors'])}"] if cell["reader errors"] else []
    return "NO: " + ", ".join(problems)


def number(value: float) -> str:
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def cell_values(cell: dict[str, Any]) -> list[str]:
    return [
        str(cell["writers"]),
        cell["set"],
        *(number(cell[k]) for k in COLUMNS[2:7]),
        errors_text(cell["errors"]),
        str(cell["deadlocks"]),
        errors_text(cell["db faults"]),
        f"{cell['committed']}/{cell['seen']}",
        order_text(cell),
    ]


def format_row(cell: dict[str, Any]) -> str:
    return " | ".join(f"{k}={v}" for k, v in zip(COLUMNS, cell_values(cell), strict=True))


def markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    return "\n".join(lines)


def describe(args: argparse.Namespace) -> str:
    length = f"{args.changes} changes" if args.changes else f"{args.seconds:g} s"
    return (
        f"checkout {args.checkout} ({args.commit}), {args.workers} server worker(s), "
        f"DB_CONN_MAX_AGE={args.db_conn_max_age}, {length} per cell, "
        f"writers {','.join(map(str, args.writer_counts))}, sets {','.join(args.set_names)}, seed {args.seed}"
    )


def print_run(run: int, cells: list[dict[str, Any]], seconds: float) -> None:
    print(f"\n### Run {run + 1} ({seconds:.0f} s, load average after: {loadavg()})\n")
    print(markdown(COLUMNS, [cell_values(c) for c in cells]))
    bodies = {code: body for c in cells for code, body in c["error bodies"].items()}
    for code, body in sorted(bodies.items()):
        print(f"\nfirst {code} body: {body}")


def print_summary(runs: list[list[dict[str, Any]]]) -> None:
    """Each run's figure side by side, then median and spread (max - min), per metric."""
    keys = [(c["writers"], c["set"]) for c in runs[0]]
    at = [{(c["writers"], c["set"]): c for c in cells} for cells in runs]
    header = ["writers", "set", *(f"run {i + 1}" for i in range(len(runs))), "median", "spread"]
    for metric in NUMERIC:
        rows = []
        for key in keys:
            values = [run[key][metric] for run in at if key in run]
            rows.append(
                [
                    str(key[0]),
                    key[1],
                    *map(number, values),
                    number(statistics.median(values)),
                    number(max(values) - min(values)),
                ]
            )
        print(f"\n{metric}\n\n" + markdown(header, rows))
    rows = []
    for key in keys:
        cells = [run[key] for run in at if key in run]
        errors: Counter[str] = Counter()
        for c in cells:
            errors.update(c["errors"])
        row = [str(key[0]), key[1]]
        for metric in NUMERIC[:5]:
            values = [c[metric] for c in cells]
            row.append(f"{number(statistics.median(values))} ({number(max(values) - min(values))})")
        row += [
            errors_text(errors),
            str(sum(c["deadlocks"] for c in cells)),
            errors_text(sum((Counter(c["db faults"]) for c in cells), Counter())),
            f"{sum(c['committed'] for c in cells)}/{sum(c['seen'] for c in cells)}",
            f"ok in {sum(order_ok(c) for c in cells)}/{len(cells)}",
        ]
        rows.append(row)
    header = COLUMNS[:2] + [f"{c} median (spread)" for c in COLUMNS[2:7]]
    header += ["errors (all runs)", "deadlocks (all runs)", "db faults in server log (all runs)"]
    header += ["events committed/seen (all runs)", "order"]
    print(f"\n### Median of {len(runs)} runs (spread = max - min)\n\n" + markdown(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the code to serve (default: this repository)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the server and manage.py")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument("--writers", default="1,4,16,64", help="concurrent writers per cell (default 1,4,16,64)")
    parser.add_argument("--sets", default="hot,wide", help="ticket sets: hot (3 tickets), wide (1,000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="writing time per cell (default 15)")
    parser.add_argument("--changes", type=int, help="instead of --seconds: successful changes per cell")
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole matrix (default 1)")
    parser.add_argument("--reader-interval", type=float, default=0.2, help="partner's pause when caught up (s)")
    parser.add_argument("--drain", type=float, default=30.0, help="most seconds the reader may take to drain")
    parser.add_argument("--pause", type=float, default=2.0, help="idle seconds before each cell")
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout of one request (s)")
    parser.add_argument(
        "--db", default="ticketing_bench", help="PostgreSQL database, recreated (default ticketing_bench)"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="keys under bench: are deleted")
    parser.add_argument("--db-conn-max-age", type=int, default=0, help="the server's DB_CONN_MAX_AGE (default 0)")
    parser.add_argument("--log-dir", default="/tmp/write_throughput", help="where the server log goes")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="also write every cell's figures to this JSON file")
    args = parser.parse_args()
    args.checkout = args.checkout.resolve()
    args.writer_counts = [int(n) for n in args.writers.split(",")]
    args.set_names = [s.strip() for s in args.sets.split(",")]
    if not set(args.set_names) <= {"hot", "wide"}:
        parser.error("--sets takes hot and/or wide")
    args.commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=args.checkout, capture_output=True, text=True
    ).stdout.strip()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {machine()}; load average before: {loadavg()}")
    print(describe(args), flush=True)
    args.postmaster = postmaster_pid()
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.log_dir) / "server.log").write_bytes(b"")  # this invocation's log only
    print(f"server log: {Path(args.log_dir) / 'server.log'}")
    started = time.monotonic()
    tenancy = prepare(args)
    args.tokens = [make_token(tenancy, f"bench-agent-{w:02d}", ["agent"]) for w in range(max(args.writer_counts))]
    admin_token = make_token(tenancy, "admin", ["admin", "agent"])

    server = Server(args)
    try:
        server.start()
        ids = asyncio.run(create_tickets(server, tenancy, admin_token, HOT_TICKETS + WIDE_TICKETS))
    finally:
        server.stop()
    tenancy.hot, tenancy.wide = ids[:HOT_TICKETS], ids[HOT_TICKETS:]
    print(f"set-up: {len(ids)} tickets in {time.monotonic() - started:.0f} s", flush=True)

    runs: list[list[dict[str, Any]]] = []
    for run in range(args.runs):
        run_started = time.monotonic()
        print(f"\nrun {run + 1}/{args.runs}, load average {loadavg()}", flush=True)
        runs.append(run_matrix(args, tenancy, run))
        print_run(run, runs[-1], time.monotonic() - run_started)
    print(f"\n## Write throughput ({machine()})\n\n{describe(args)}")
    if args.runs > 1:
        print_summary(runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "args": describe(args), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
