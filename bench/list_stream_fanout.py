"""Live ticket-list stream fan-out benchmark.

Starts the service as N worker processes (config.serve) on the local PostgreSQL / Redis (its own
database `ticketing_bench`, Redis prefix `bench`), opens many concurrent
`POST /api/v2/ticketing/ticket/sse/list/updates` streams with varied filters from
light-weight client processes, changes tickets through the REST API at a fixed rate,
and checks every stream against what it should have received:

  events sent       ticket changes committed by the writer (each is one log event)
  frames expected   created / updated / deleted frames the streams' filters call for
  frames delivered  the frames the streams received
  lost / dup / wrong  expected-but-missing, same id twice on a stream, not expected
  latency           receipt time minus, in its three columns: the event's occurred_at
                    (set when the service records it, mid-transaction: "commit->receipt"),
                    the event id's time (minted inside the tenant's log lock just before
                    INSERT and COMMIT: "numbered->receipt"), and the moment the writer's
                    HTTP response returned, after the commit ("response->receipt")
  RSS per stream    (worker RSS with the streams open and idle - RSS before) / streams,
                    "before" being after a warm-up that opened and closed a few streams
  heartbeat gap     per stream, the longest wait for a heartbeat (snapshot to the first,
                    between two, the last to the end of the run): due every --heartbeat s

Example:
    .venv/bin/python bench/list_stream_fanout.py                   # 2,000 streams, 20/s, 60 s
    .venv/bin/python bench/list_stream_fanout.py --find-max        # ramp 2k, 4k, 8k, ...
    .venv/bin/python bench/list_stream_fanout.py --edge            # through Pushpin (SSE_EDGE)
    .venv/bin/python bench/list_stream_fanout.py --streams 10000 --match-all --rate 1 \
        --settle 35 --client-procs 4                               # 10,000 mostly idle streams

With `--edge` the streams are held by the stream edge (events/edge): one Pushpin
(tests/pushpin.py; `--edge-nodes N`: N of them side by side, the streams spread over them)
in front of one worker started with SSE_EDGE=pushpin, and the edge
publisher (`manage.py publish_to_edge`) beside it. The streams and the writer's requests
go to Pushpin; "server" CPU and RSS are those of the worker, the publisher and every
Pushpin process (the runner and its condure, zurl, pushpin-proxy, pushpin-handler).

The figures are for client and server on the same machine; the client processes are
counted in the machine's load, not in the server's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ulid import ULID

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The repository root too, for tests/pushpin.py (the Pushpin launcher, free of Django).
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from benchdb import cpu_seconds, realm_token, stop_process_groups
from sse_load import StreamSpec, reader_main

from tests.pushpin import SIG_KEY, Pushpin

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SERVE = [sys.executable, "-m", "config.serve", "--workers", "1", "--host", "127.0.0.1"]
STREAM_PATH = "/api/v2/ticketing/ticket/sse/list/updates?type=template&module=ticketing"
TICKET_PATH = "/api/v2/ticketing/ticket"
TEAMS = ["operation", "network", "support"]
PRIORITIES = ["low", "medium", "high", "urgent"]
STATUSES = ["open", "in_progress", "on_hold", "resolved"]
ASSIGNEES = ["alice", "carol", "admin"]
SUBJECTS = [
    "Unable to access VPN",
    "Printer jams on floor 3",
    "Slow network in meeting room",
    "Password reset",
    "Laptop will not boot",
    "Email not syncing on phone",
]
LIKE_WORDS = ["vpn", "printer", "network", "password"]


# --- filters: the menu the streams cycle through, and the bench's own matcher ----------


def cond(column: str, op: str, operand: Any, n: int = 1) -> dict[str, Any]:
    return {"id": f"c{n}", "op": op, "column": column, "operand": operand}


def filter_menu(user_ids: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    menu: list[tuple[str, dict[str, Any]]] = []
    for team in TEAMS:
        menu.append((f"team={team}", {"op": "AND", "operand": [cond("team", "EQ", team)]}))
    for priority in PRIORITIES:
        menu.append((f"priority={priority}", {"op": "AND", "operand": [cond("priority", "EQ", priority)]}))
    menu.append(("status IN open,in_progress", {"op": "AND", "operand": [cond("status", "IN", STATUSES[:2])]}))
    menu.append(("status IN on_hold,resolved", {"op": "AND", "operand": [cond("status", "IN", STATUSES[2:])]}))
    for name in ASSIGNEES:
        menu.append((f"assignee={name}", {"op": "AND", "operand": [cond("assignee", "EQ", user_ids[name])]}))
    for word in LIKE_WORDS:
        menu.append((f"subject LIKE {word}", {"op": "AND", "operand": [cond("subject", "LIKE", word)]}))
    for team in TEAMS[:2]:
        menu.append(
            (
                f"team={team} AND priority IN high,urgent",
                {"op": "AND", "operand": [cond("team", "EQ", team), cond("priority", "IN", ["high", "urgent"], 2)]},
            )
        )
    menu.append(
        (
            "status NE resolved OR priority=urgent",
            {"op": "OR", "operand": [cond("status", "NE", "resolved"), cond("priority", "EQ", "urgent", 2)]},
        )
    )
    menu.append(("match-all", {"op": "AND", "operand": []}))
    return menu


def _value(state: dict[str, Any], column: str) -> Any:
    value = state.get(column)
    if isinstance(value, dict):
        value = value.get("id")
    return value


def matches(node: dict[str, Any], state: dict[str, Any] | None) -> bool:
    if state is None:
        return False
    if "column" not in node:
        parts = [matches(child, state) for child in node["operand"]]
        if not parts:
            return True
        return all(parts) if node["op"] == "AND" else any(parts)
    value, op, operand = _value(state, node["column"]), node["op"], node["operand"]
    if op == "EQ":
        return value is not None and value == operand
    if op == "NE":
        return value is None or value != operand
    if op == "IN":
        return value is not None and value in operand
    if op == "LIKE":
        return value is not None and operand.upper() in value.upper()
    raise ValueError(op)


def expected_kind(node: dict[str, Any], before: dict | None, after: dict | None) -> str | None:
    was, now = matches(node, before), matches(node, after)
    if now and not was:
        return "created"
    if was and now:
        return "updated"
    if was and not now:
        return "deleted"
    return None


# --- machine / process helpers ------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- database / tenant setup ------------------------------------------------------------


def server_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RATE_LIMITS_ENABLED", "0")  # far more requests than a rate limit allows
    env.update(
        {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{args.db}",
            "REDIS_URL": args.redis_url,
            "REDIS_PREFIX": "bench",
            "SECRET_KEY": "bench-only-secret-key-not-for-production",
            # load_demo refuses the published demo credentials when DEBUG is off.
            "DEMO_REALM_SECRET": "bench-only-demo-realm-secret-0123456789-abcdef",
            "DEBUG": "0",
            # Plain http on loopback: no redirect to https.
            "SECURE_SSL_REDIRECT": "0",
            "DB_CONN_MAX_AGE": "0",
            "LOG_LEVEL": args.log_level,
            "SSE_HEARTBEAT_SECONDS": str(args.heartbeat),
            "SSE_MAX_LIST_STREAMS_PER_USER": str(args.streams_per_user * 2),
            "SSE_IDLE_TIMEOUT_SECONDS": "36000",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def prepare_database(args: argparse.Namespace) -> None:
    import psycopg

    _close_django_pools()
    # A fresh database each time: every run creates tickets and events, and runs are only
    # comparable if each starts from the same `--tickets` and an empty log.
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db}"')
        print(f"created database {args.db}")
    env = server_env(args)
    python = str(VENV_BIN / "python")
    subprocess.run([python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [python, "manage.py", "load_demo", "--tickets", str(args.tickets), *BENCH_DEMO_PASSWORDS],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _close_django_pools() -> None:
    """A run before this one in the same process (bench/peers/compare.py measures several
    stream counts) read its database through Django's connection pool: those connections
    die with the database, and the pool would hand them out again."""
    from django.apps import apps

    if not apps.ready:
        return
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        connection.close()
        close_pool = getattr(connection, "close_pool", None)
        if close_pool is not None:
            close_pool()


# load_demo refuses the published demo passwords when DEBUG is off.
BENCH_DEMO_PASSWORDS = ("--admin-password", "bench-admin-password", "--user-password", "bench-user-password")


def flush_redis(args: argparse.Namespace) -> None:
    import redis

    client = redis.Redis.from_url(args.redis_url)
    keys = list(client.scan_iter(match="bench:*", count=1000))
    if keys:
        client.delete(*keys)


@dataclass
class Tenancy:
    tenant_id: str
    realm: str
    secret: str
    issuer: str
    audience: str
    teams_claim: str
    user_ids: dict[str, str]
    tickets: dict[str, dict[str, Any]]


def load_tenancy(args: argparse.Namespace) -> Tenancy:
    os.environ.update(server_env(args))
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.db import connections

    from tenants.models import Realm, TenantUser
    from ticketing.models import Ticket
    from ticketing.serializers import ticket_state

    realm = Realm.objects.select_related("tenant").get(tenant__slug="demo", name="demo")
    users = {u.username: str(u.id) for u in TenantUser.objects.filter(tenant=realm.tenant, username__in=ASSIGNEES)}
    tickets = {
        str(t.id): ticket_state(t)
        for t in Ticket.objects.filter(tenant=realm.tenant).select_related("assignee", "requester")
    }
    tenancy = Tenancy(
        tenant_id=str(realm.tenant_id),
        realm=realm.name,
        secret=realm.secret,
        issuer=realm.issuer or "",
        audience=realm.audience or "",
        teams_claim=realm.teams_claim,
        user_ids=users,
        tickets=tickets,
    )
    connections.close_all()
    return tenancy


def run_events(tenant_id: str, after_id: str | None) -> list[tuple[str, str, str, str, float]]:
    """(ulid, type, ticket id, ticket updatedAt, occurred_at epoch) of the tenant's ticket-state
    events after an id. `occurred_at` is set in the writing transaction when the event is
    recorded, before the event is numbered and committed."""
    from django.db import connections

    from events.ids import event_id_to_str
    from events.selectors import log_after
    from ticketing.events import STATE_EVENTS

    rows = log_after(uuid.UUID(tenant_id), uuid.UUID(after_id) if after_id else None, types=STATE_EVENTS)
    out = [
        (
            event_id_to_str(e.id),
            e.type,
            str(e.ticket_id),
            (e.payload.get("ticket") or {}).get("updatedAt"),
            e.occurred_at.timestamp(),
        )
        for e in rows.only("id", "type", "ticket_id", "payload", "occurred_at")
    ]
    connections.close_all()
    return out


def last_event_id(tenant_id: str) -> str | None:
    from django.db import connections

    from events import selectors

    value = selectors.last_event_id(uuid.UUID(tenant_id))
    connections.close_all()
    return str(value) if value else None


def make_token(tenancy: Tenancy, username: str, ttl: int = 7200) -> str:
    return realm_token(tenancy, username, roles=["agent"], teams=["operation"], ttl=ttl)


# --- server -----------------------------------------------------------------------------


class Server:
    """N server processes (config.serve), one port each, in their own process groups."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ports = [args.base_port + i for i in range(args.workers)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []

    def env(self) -> dict[str, str]:
        return server_env(self.args)

    @property
    def client_ports(self) -> list[int]:
        """Where the streams and the writer connect: the workers themselves."""
        return self.ports

    def start(self) -> None:
        env = self.env()
        log_dir = Path(self.args.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        for port in self.ports:
            log = open(log_dir / f"server-{port}.log", "wb")  # noqa: SIM115
            self.logs.append(log)
            self.procs.append(
                subprocess.Popen(
                    [*SERVE, "--port", str(port), "--server", self.args.server],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 60
        for port, proc in zip(self.ports, self.procs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server on port {port} exited; see {log_dir}/server-{port}.log")
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server on port {port} did not start")
                time.sleep(0.2)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def counted(self) -> dict[int, str]:
        """Every process whose CPU and RSS is "the server's": pid -> role."""
        return dict.fromkeys(self.pids, "worker")

    def describe(self) -> str:
        return f"{len(self.pids)} workers on ports {self.ports}; server CPU/RSS count the workers {self.pids}"

    def rss_kb(self) -> int:
        return sum(self.rss_by_role().values())

    def rss_by_role(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for pid, role in self.counted().items():
            totals[role] = totals.get(role, 0) + _alive_or_zero(rss_kb, pid)
        return totals

    def cpu_snapshot(self) -> dict[int, tuple[str, float]]:
        """CPU seconds so far of each counted process (pid -> (role, seconds)); taken per pid
        so that a process that appears or goes between two snapshots is not misread."""
        return {pid: (role, _alive_or_zero(cpu_seconds, pid)) for pid, role in self.counted().items()}

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        stop_process_groups(self.procs)
        for log in self.logs:
            log.close()
        self.procs.clear()
        self.logs.clear()


_N = TypeVar("_N", int, float)


def _alive_or_zero(read: Callable[[int], _N], pid: int) -> _N | int:
    # A process can end between listing it and reading it (Pushpin's runner restarts a
    # crashed child): it then counts as nothing rather than failing the run.
    try:
        return read(pid)
    except (OSError, IndexError, ValueError):
        return 0


def cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds used between two snapshots, per role. A process only in `after` started in
    between and counts in full; one only in `before` ended and its last part is not seen."""
    used: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        used[role] = used.get(role, 0.0) + seconds - before.get(pid, (role, 0.0))[1]
    return used


def descendants(root: int) -> list[int]:
    """All processes below `root`, from the ppid field of every /proc/<pid>/stat (psutil is
    not a dependency of the project)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name (field 2) may hold spaces or parentheses: split after the last ")".
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


PUSHPIN_LOG_KEEP = 64 * 1024 * 1024


def keep_tail(source: Path, target: Path, limit: int) -> None:
    with source.open("rb") as src, target.open("wb") as dst:
        size = source.stat().st_size
        if size > limit:
            src.seek(size - limit)
            src.readline()  # from the first whole line
            dst.write(f"[... first {src.tell()} bytes of {size} left out ...]\n".encode())
        shutil.copyfileobj(src, dst)


def pushpin_counts(log: Path) -> dict[str, int]:
    """What Pushpin's log (log_level 2 logs every request) says of the run: its handler drops
    a delivery when more are queued than its publish high-water mark, and a connection that
    missed an item (or whose timer is due) is recovered by a call-back to the worker."""
    counts = {"dropped": 0, "callbacks": 0}
    with contextlib.suppress(OSError), log.open("rb") as lines:
        for line in lines:
            if b"exceeded publish hwm" in line:
                counts["dropped"] += 1
            elif b"[handler] GET " in line and b"/edge/link/" in line:
                counts["callbacks"] += 1
    return counts


class EdgeServer(Server):
    """The stream edge as deployed: Pushpin in front of one worker started with
    SSE_EDGE=pushpin, and the edge publisher beside it (as tests/edge_proxy.py wires it,
    on the bench's database and Redis). Pushpin routes every request to the first worker:
    the edge mode runs with --workers 1, so that no worker idles in the server's figures."""

    def __init__(self, args: argparse.Namespace, streams: int) -> None:
        super().__init__(args)
        # Beyond the streams: the warm-up streams, the writer's connections, the headroom
        # for a connection Pushpin has not yet reaped; at client_maxconn it refuses more.
        # With --edge-nodes N, N Pushpins side by side, the streams spread over them.
        per_node = -(-streams // args.edge_nodes) + 2000
        self.pushpins = [
            Pushpin(f"127.0.0.1:{self.ports[0]}", max_connections=per_node) for _ in range(args.edge_nodes)
        ]
        self.publisher: subprocess.Popen[bytes] | None = None
        self.publisher_log: Any = None
        # Read from Pushpin's log at stop (whole run, opening included): see pushpin_counts.
        self.log_counts: dict[str, int] = {}

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(
            {
                "SSE_EDGE": "pushpin",
                "PUSHPIN_SIG_KEY": SIG_KEY,
                "PUSHPIN_PUBLISH_URL": ",".join(node.publish_url for node in self.pushpins),
            }
        )
        if self.args.edge_link_seconds is not None:
            env["SSE_EDGE_LINK_SECONDS"] = str(self.args.edge_link_seconds)
        return env

    @property
    def client_ports(self) -> list[int]:
        return [node.http_port for node in self.pushpins]

    def start(self) -> None:
        # Pushpin first: the worker's hand-offs and the publisher's publishes need it. Its
        # processes inherit this process's RLIMIT_NOFILE (raised in main()).
        for node in self.pushpins:
            node.start()
        super().start()
        log_dir = Path(self.args.log_dir)
        self.publisher_log = open(log_dir / "publisher.log", "wb")  # noqa: SIM115
        # The publisher gets the worker's environment: same database, Redis, prefix, key.
        self.publisher = subprocess.Popen(
            [str(VENV_BIN / "python"), "manage.py", "publish_to_edge"],
            cwd=ROOT,
            env=self.env(),
            stdout=self.publisher_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        time.sleep(3)  # Django set up, first registry read; a publisher that fails does so by now
        if self.publisher.poll() is not None:
            raise RuntimeError(f"publish_to_edge exited; see {log_dir}/publisher.log")

    def counted(self) -> dict[int, str]:
        roles = super().counted()
        if self.publisher is not None:
            roles[self.publisher.pid] = "publisher"
        for node in self.pushpins:
            if node.proc is not None:
                # Looked up at each call: the runner restarts a child that dies, with a new pid.
                for pid in [node.proc.pid, *descendants(node.proc.pid)]:
                    roles[pid] = "pushpin"
        return roles

    def describe(self) -> str:
        names = ", ".join(f"{process_name(pid)} {pid} ({role})" for pid, role in self.counted().items())
        pushpins = ", ".join(node.url for node in self.pushpins)
        return f"edge mode: Pushpin {pushpins} -> worker port {self.ports[0]}; server CPU/RSS count {names}"

    def alive(self) -> bool:
        return (
            super().alive()
            and self.publisher is not None
            and self.publisher.poll() is None
            and all(node.proc is not None and node.proc.poll() is None for node in self.pushpins)
        )

    def stop(self) -> None:
        try:
            if self.publisher is not None:
                stop_process_groups([self.publisher])
            if self.publisher_log is not None:
                self.publisher_log.close()
            super().stop()
        finally:
            self.log_counts = {"dropped": 0, "callbacks": 0}
            # Pushpin.stop() deletes its run directory: keep its logs beside the others, the
            # end of each only (a line per dropped delivery makes hundreds of MB).
            log_dir = Path(self.args.log_dir)
            for number, node in enumerate(self.pushpins):
                for kind, count in pushpin_counts(node.rundir / "pushpin.log").items():
                    self.log_counts[kind] += count
                prefix = "pushpin-" if number == 0 else f"pushpin{number + 1}-"
                for log in node.rundir.glob("*.log"):
                    with contextlib.suppress(OSError):
                        keep_tail(log, log_dir / f"{prefix}{log.name}", PUSHPIN_LOG_KEEP)
                node.stop()


# --- one run ----------------------------------------------------------------------------


@dataclass
class Change:
    index: int
    kind: str
    ticket: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None = None
    sent_at: float = 0.0
    returned_at: float = 0.0
    status: int = 0


@dataclass
class RunResult:
    streams: int
    figures: dict[str, Any] = field(default_factory=dict)
    ok: bool = False


async def warm_up(ports: list[int], tenancy: Tenancy, token: str) -> None:
    """Make each worker do once what it does once per process (imports, the stream database
    pool and its connections, the Redis pools, the tenant feed), so that the RSS taken after
    this is the baseline of a running server and the per-stream figure is per stream."""
    import httpx

    headers = {"Authorization": f"Bearer {token}", "x-tenantid": tenancy.tenant_id, "realmname": tenancy.realm}

    async def one_stream(client: httpx.AsyncClient, port: int) -> None:
        url = f"http://127.0.0.1:{port}{STREAM_PATH}"
        async with client.stream("POST", url, json={"top": 30}, headers=headers) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                if b"event: snapshot" in chunk:
                    return

    async with httpx.AsyncClient(timeout=30) as client:
        for port in ports:
            for _ in range(3):
                response = await client.post(
                    f"http://127.0.0.1:{port}{TICKET_PATH}/list?type=template", json={"top": 5}, headers=headers
                )
                response.raise_for_status()
            # Several at once, so that every thread of the stream database pool starts.
            await asyncio.gather(*(one_stream(client, port) for _ in range(6)))


async def writer(
    args: argparse.Namespace, ports: list[int], tenancy: Tenancy, token: str, rng: random.Random, changes: list[Change]
) -> dict[str, Any]:
    """Change tickets at a fixed rate; never two changes of one ticket in flight."""
    import httpx

    headers = {"Authorization": f"Bearer {token}", "x-tenantid": tenancy.tenant_id, "realmname": tenancy.realm}
    state = tenancy.tickets
    in_flight: set[str] = set()
    clients = [
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=httpx.Limits(max_connections=32))
        for port in ports
    ]
    total = int(args.rate * args.duration)
    behind = skipped = 0
    failures: list[str] = []

    async def one(change: Change, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        key = change.ticket
        change.sent_at = time.monotonic()
        try:
            if change.kind == "create":
                response = await client.post(TICKET_PATH, json=body, headers=headers)
            else:
                response = await client.patch(f"{TICKET_PATH}/{change.ticket}", json=body, headers=headers)
            change.returned_at = time.monotonic()
            change.status = response.status_code
            if response.status_code in (200, 201):
                change.after = response.json()["data"]
                change.ticket = change.after["id"]
                state[change.ticket] = change.after
            else:
                failures.append(f"{response.status_code} {response.text[:200]}")
        except Exception as exc:
            failures.append(repr(exc))
        finally:
            in_flight.discard(key)

    tasks: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(args.max_in_flight)
    start = time.monotonic()

    async def gated(change: Change, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        try:
            await one(change, client, body)
        finally:
            gate.release()

    for k in range(total):
        delay = start + k / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        if start + k / args.rate - time.monotonic() < -0.5:
            behind += 1
        if rng.random() < args.create_share:
            change = Change(k, "create", ticket=f"new-{k}", before=None)
            body = {
                "subject": f"{rng.choice(SUBJECTS)} (bench {k})",
                "priority": rng.choice(PRIORITIES),
                "team": rng.choice(TEAMS),
                "status": rng.choice(STATUSES),
                "assignee": rng.choice(ASSIGNEES),
            }
        else:
            free = [t for t in state if t not in in_flight]
            if not free:
                skipped += 1
                gate.release()
                continue
            ticket = rng.choice(free)
            before = state[ticket]
            kind = rng.choice(["team", "priority", "status", "assignee", "subject"])
            if kind == "team":
                body = {"team": rng.choice([t for t in TEAMS if t != before["team"]])}
            elif kind == "priority":
                body = {"priority": rng.choice([p for p in PRIORITIES if p != before["priority"]])}
            elif kind == "status":
                body = {"status": rng.choice([s for s in STATUSES if s != before["status"]])}
            elif kind == "assignee":
                current = (before.get("assignee") or {}).get("id")
                body = {"assignee": rng.choice([a for a in ASSIGNEES if tenancy.user_ids[a] != current])}
            else:
                body = {"subject": rng.choice([s for s in SUBJECTS if s != before["subject"]]) + f" #{k}"}
            change = Change(k, kind, ticket=ticket, before=dict(before))
        in_flight.add(change.ticket)
        changes.append(change)
        tasks.append(asyncio.create_task(gated(change, clients[k % len(clients)], body)))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - start
    for client in clients:
        await client.aclose()
    return {"elapsed": elapsed, "behind": behind, "skipped": skipped, "failures": failures}


async def run_phase(args: argparse.Namespace, server: Server, tenancy: Tenancy, streams: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    menu = filter_menu(tenancy.user_ids)
    if args.match_all:
        menu = [entry for entry in menu if entry[0] == "match-all"]
    writer_token = make_token(tenancy, "alice")
    # Through Pushpin in edge mode: the hand-off, the channel registry, Pushpin's processes
    # and the publisher's tenant feed are then part of the baseline, not of the streams.
    await warm_up(server.client_ports, tenancy, writer_token)
    await asyncio.sleep(2)  # the warm-up streams are closed and gone
    rss_before = server.rss_kb()
    rss_roles_before = server.rss_by_role()

    tokens: dict[int, str] = {}
    specs: list[StreamSpec] = []
    for i in range(streams):
        user = i // args.streams_per_user
        if user not in tokens:
            tokens[user] = make_token(tenancy, f"bench-u{user:05d}")
        body = json.dumps({"top": 30, "offset": 0, "filter": menu[i % len(menu)][1]}).encode()
        ports = server.client_ports
        specs.append(StreamSpec(i, ports[i % len(ports)], tokens[user], body))

    ctx = mp.get_context("spawn")
    options = {
        "path": STREAM_PATH,
        "tenant_id": tenancy.tenant_id,
        "realm": tenancy.realm,
        "concurrency": args.open_concurrency,
        "open_timeout": args.open_timeout,
        "client_loop": args.client_loop,
    }
    readers = []
    open_started = time.monotonic()
    try:
        for r in range(args.client_procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=reader_main, args=(child, specs[r :: args.client_procs], options), daemon=True)
            proc.start()
            child.close()
            readers.append((proc, parent))
        opened = 0
        open_errors: list[str] = []
        for _, conn in readers:
            _, ok, errors = await loop.run_in_executor(None, conn.recv)
            opened += ok
            open_errors += errors
        open_seconds = time.monotonic() - open_started
        print(f"  {opened}/{streams} streams open in {open_seconds:.1f}s; settling {args.settle}s", flush=True)
        if open_errors:
            print(f"  open errors (first): {open_errors[:3]}", flush=True)
        await asyncio.sleep(args.settle)
        rss_open = server.rss_kb()
        rss_roles_open = server.rss_by_role()
        position = await loop.run_in_executor(None, last_event_id, tenancy.tenant_id)

        cpu_before = server.cpu_snapshot()
        wall_before = time.monotonic()
        changes: list[Change] = []
        print(f"  writing {args.rate}/s for {args.duration}s", flush=True)
        write = await writer(args, server.client_ports, tenancy, writer_token, rng, changes)
        await asyncio.sleep(args.drain)
        cpu_roles = cpu_delta(cpu_before, server.cpu_snapshot())
        cpu_used = sum(cpu_roles.values())
        wall = time.monotonic() - wall_before
        server_alive = server.alive()

        for _, conn in readers:
            conn.send("stop")
        results: list[dict[str, Any]] = []
        for proc, conn in readers:
            _kind, payload = await loop.run_in_executor(None, conn.recv)
            results.extend(json.loads(payload))
            proc.join(10)
    finally:
        for proc, conn in readers:
            if proc.is_alive():
                proc.terminate()
            conn.close()
    events = await loop.run_in_executor(None, run_events, tenancy.tenant_id, position)
    return {
        "clock_offset": time.time() - time.monotonic(),
        "streams": streams,
        "opened": opened,
        "open_seconds": open_seconds,
        "open_errors": open_errors,
        "rss_before": rss_before,
        "rss_open": rss_open,
        "cpu_used": cpu_used,
        "cpu_roles": cpu_roles,
        "rss_roles_before": rss_roles_before,
        "rss_roles_open": rss_roles_open,
        "wall": wall,
        "write": write,
        "changes": changes,
        "results": results,
        "events": events,
        "menu": menu,
        "server_alive": server_alive,
    }


def analyse(args: argparse.Namespace, phase: dict[str, Any]) -> dict[str, Any]:
    changes: list[Change] = [c for c in phase["changes"] if c.after is not None]
    by_key = {(c.ticket, c.after["updatedAt"]): c for c in changes}
    event_change: dict[str, Change] = {}
    recorded_at: dict[str, float] = {}  # the event's occurred_at, on the monotonic clock
    numbered_at: dict[str, float] = {}  # the id's mint time (inside the log lock), monotonic
    unmapped: set[str] = set()
    offset = phase["clock_offset"]
    for ulid, _type, ticket, updated_at, occurred_at in phase["events"]:
        change = by_key.get((ticket, updated_at))
        if change is None:
            unmapped.add(ulid)  # committed, but the writer saw no success (HTTP error)
        else:
            event_change[ulid] = change
            recorded_at[ulid] = occurred_at - offset
            numbered_at[ulid] = ULID.from_str(ulid).timestamp - offset
    menu = phase["menu"]
    # Expected frames per filter of the menu: {event id: kind}
    expected_by_filter = []
    for _, node in menu:
        expected = {}
        for ulid, change in event_change.items():
            kind = expected_kind(node, change.before, change.after)
            if kind:
                expected[ulid] = kind
        expected_by_filter.append(expected)

    delivered = lost = dup = wrong = 0
    expected_total = 0
    latencies: list[float] = []  # receipt - the event's occurred_at (when it was recorded)
    latencies_response: list[float] = []  # receipt - the writer's HTTP response returned
    latencies_numbered: list[float] = []  # receipt - the id's mint time
    unpredicted = 0
    streams_ok = 0
    closed_early = 0
    errors: dict[str, int] = {}
    heartbeat_gaps: list[float] = []
    first_send = min((c.sent_at for c in changes), default=0.0)
    last_receipt = first_send
    failed_opens: dict[str, int] = {}  # why a stream did not open, and how many
    for result in phase["results"]:
        if result["status"] == 200 and result["ready_at"]:
            streams_ok += 1
        else:
            reason = open_failure(result)
            failed_opens[reason] = failed_opens.get(reason, 0) + 1
            continue
        closed_early += result["closed_early"]
        heartbeat_gaps.append(result["heartbeat_gap_max"])
        for error in result["errors"]:
            errors[error[:80]] = errors.get(error[:80], 0) + 1
        expected = expected_by_filter[result["index"] % len(menu)]
        expected_total += len(expected)
        seen: set[str] = set()
        for received_at, kind, ulid in result["frames"]:
            delivered += 1
            last_receipt = max(last_receipt, received_at)
            if ulid in seen:
                dup += 1
                continue
            seen.add(ulid)
            if ulid in unmapped:
                unpredicted += 1
                continue
            want = expected.get(ulid)
            if want != kind:
                wrong += 1
                continue
            change = event_change[ulid]
            latencies.append(received_at - recorded_at[ulid])
            latencies_response.append(received_at - change.returned_at)
            latencies_numbered.append(received_at - numbered_at[ulid])
        lost += sum(1 for ulid in expected if ulid not in seen)
    streams = phase["streams"]
    rss_delta = phase["rss_open"] - phase["rss_before"]
    active = max(1e-9, last_receipt - first_send)
    p99 = percentile(latencies, 99)
    writes = [c.returned_at - c.sent_at for c in changes]
    return {
        "streams": streams,
        "streams open": f"{phase['opened']} ({phase['open_seconds']:.1f} s)",
        "events sent (changes)": f"{len(changes)} ({len(phase['changes']) - len(changes)} failed)",
        "events committed, HTTP failed": f"{len(unmapped)} ({unpredicted} frames, not scored)",
        "frames expected": expected_total,
        "frames delivered": delivered,
        "lost": lost,
        "duplicated": dup,
        "wrong/unexpected": wrong,
        "closed early": closed_early,
        "commit->receipt p50 ms": round(percentile(latencies, 50) * 1000, 1),
        "commit->receipt p99 ms": round(p99 * 1000, 1),
        "commit->receipt max ms": round(max(latencies, default=float("nan")) * 1000, 1),
        "response->receipt p50/p99 ms": "/".join(
            str(round(percentile(latencies_response, p) * 1000, 1)) for p in (50, 99)
        ),
        "numbered->receipt p50/p99 ms": "/".join(
            str(round(percentile(latencies_numbered, p) * 1000, 1)) for p in (50, 99)
        ),
        "write request p50/p99 ms": "/".join(str(round(percentile(writes, p) * 1000, 1)) for p in (50, 99)),
        "frames/s delivered": round(delivered / active),
        "server CPU s (all workers)": round(phase["cpu_used"], 1),
        "server cores busy": round(phase["cpu_used"] / phase["wall"], 2),
        **_by_role(phase),
        "frames per server CPU-s": round(delivered / max(1e-9, phase["cpu_used"])),
        "vs naive 2,000 frames/s/core": f"{delivered / max(1e-9, phase['cpu_used']) / 2000:.1f}x",
        "server RSS before (MiB)": round(phase["rss_before"] / 1024, 1),
        "server RSS streams open (MiB)": round(phase["rss_open"] / 1024, 1),
        "RSS per idle stream (KB)": round(rss_delta / max(1, phase["opened"]), 1),
        "writes/s achieved": round(len(changes) / phase["write"]["elapsed"], 1),
        "writes >0.5 s behind schedule": phase["write"]["behind"],
        "writer failures": "; ".join(f[:60].replace("\n", " ") for f in phase["write"]["failures"][:3]) or "-",
        "stream errors": "; ".join(f"{k} x{v}" for k, v in errors.items()) or "-",
        "failed opens": "; ".join(f"{k} x{v}" for k, v in failed_opens.items()) or "-",
        # Due every --heartbeat seconds, however busy the worker: a stream's longest wait.
        "heartbeat gap p99/max s": "/".join(str(round(percentile(heartbeat_gaps, p), 2)) for p in (99, 100)),
        f"streams with a gap > {args.heartbeat + 1:g} s": sum(g > args.heartbeat + 1 for g in heartbeat_gaps),
        "server alive": phase["server_alive"],
        "_p99": p99,
        "_ok": phase["opened"] == streams and lost == 0 and dup == 0 and wrong == 0 and phase["server_alive"],
        # A stream count is only "held" if the writer also kept (95 % of) its rate.
        "_rate_kept": len(changes) / phase["write"]["elapsed"] >= 0.95 * args.rate,
    }


def open_failure(result: dict[str, Any]) -> str:
    """Why a stream did not open, in a few words: its refusal (the status and the error
    code of the envelope), the connection's error, or that no snapshot came."""
    if result["errors"]:
        error = result["errors"][0]
        code = re.search(r'"code": ?"([A-Z_]+)"', error)  # the envelope's error code
        if error.startswith("HTTP "):  # a body may lack the envelope, or not have come with the head
            return f"{error.split(':', 1)[0]} {code.group(1) if code else '(no error code)'}"
        return error[:80]
    if result["status"] == 0:
        return "closed before any answer" if result["closed_early"] else "no answer"
    return f"HTTP {result['status']} without a snapshot"


def _by_role(phase: dict[str, Any]) -> dict[str, str]:
    """With the edge the server is several kinds of process: where its CPU and memory went."""
    roles = phase["cpu_roles"]
    if set(roles) == {"worker"}:
        return {}
    before, after = phase["rss_roles_before"], phase["rss_roles_open"]
    return {
        "server CPU s by process": " / ".join(f"{role} {seconds:.1f}" for role, seconds in roles.items()),
        "RSS per idle stream by process (KB)": " / ".join(
            f"{role} {(after.get(role, 0) - before.get(role, 0)) / max(1, phase['opened']):.1f}" for role in after
        ),
    }


def one_run(args: argparse.Namespace, tenancy: Tenancy, streams: int) -> dict[str, Any]:
    flush_redis(args)
    server = EdgeServer(args, streams) if args.edge else Server(args)
    try:
        server.start()
        counted = server.describe()
        print(f"run: {streams} streams, load {loadavg()}\n  {counted}", flush=True)
        phase = asyncio.run(run_phase(args, server, tenancy, streams))
    finally:
        server.stop()
    # The writer changed tickets: the next run starts from their new states.
    for change in phase["changes"]:
        if change.after is not None:
            tenancy.tickets[change.ticket] = change.after
    figures = analyse(args, phase)
    figures["load avg after"] = loadavg()
    figures["_counted"] = counted
    if isinstance(server, EdgeServer):
        figures["pushpin deliveries dropped (publish hwm)"] = server.log_counts.get("dropped", 0)
        figures["pushpin link call-backs to the worker"] = server.log_counts.get("callbacks", 0)
    return figures


def print_table(title: str, runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    info = machine()
    print()
    print(f"## {title}")
    print()
    print(
        f"machine: {info['nproc']} cores, {info['cpu']}, {info['ram']} RAM, Python {info['python']}, "
        f"kernel {info['kernel']}"
    )
    print(
        f"parameters: workers={args.workers} rate={args.rate}/s duration={args.duration}s "
        f"create_share={args.create_share} client_procs={args.client_procs} client_loop={args.client_loop} "
        f"tickets={args.tickets} "
        f"heartbeat={args.heartbeat}s streams/user={args.streams_per_user} seed={args.seed}"
    )
    if args.edge:
        link = args.edge_link_seconds if args.edge_link_seconds is not None else "default"
        print(f"SSE_EDGE=pushpin, {args.edge_nodes} edge node(s), SSE_EDGE_LINK_SECONDS={link}; {runs[-1]['_counted']}")
    print()
    keys = [k for k in runs[0] if not k.startswith("_")]
    header = ["metric"] + [f"{r['streams']} streams" for r in runs]
    rows = [[k] + [str(r.get(k, "")) for r in runs] for k in keys if k != "streams"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2000, help="concurrent streams (default 2000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="server processes, one port each (default 2; with --edge 1, the only count allowed there)",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="ticket changes per second (default 20)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of changes (default 60)")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=8,
        help="most writer requests in flight; a slower server makes the writer fall behind instead of piling up "
        "requests (each holds a PostgreSQL connection)",
    )
    parser.add_argument("--create-share", type=float, default=0.1, help="share of changes that create a ticket")
    parser.add_argument("--tickets", type=int, default=300, help="tickets in the bench tenant (default 300)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes holding the streams")
    parser.add_argument(
        "--client-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of the client processes (default uvloop; asyncio: as the runs before 2026-12-04 late evening)",
    )
    parser.add_argument("--streams-per-user", type=int, default=8, help="streams per bench user (default 8)")
    parser.add_argument("--open-concurrency", type=int, default=32, help="stream opens in flight per client process")
    parser.add_argument("--open-timeout", type=float, default=120.0, help="seconds for a stream to get its snapshot")
    parser.add_argument("--heartbeat", type=float, default=15.0, help="SSE_HEARTBEAT_SECONDS for the server")
    parser.add_argument(
        "--match-all",
        action="store_true",
        help="every stream follows the whole list (no filter): each change reaches every stream",
    )
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds with streams open before RSS")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait for frames after the last change")
    parser.add_argument("--base-port", type=int, default=18100, help="first worker port (default 18100)")
    parser.add_argument("--db", default="ticketing_bench", help="PostgreSQL database (default ticketing_bench)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--server", choices=("uvicorn", "daphne"), default="uvicorn", help="config.serve --server (default uvicorn)"
    )
    parser.add_argument("--log-level", default="WARNING", help="server LOG_LEVEL (INFO logs every stream)")
    parser.add_argument("--log-dir", default="/tmp/list_stream_fanout", help="where the server logs go")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--find-max", action="store_true", help="ramp the stream count; report the largest held")
    parser.add_argument("--ramp", default="2000,4000,8000,12000,16000", help="stream counts for --find-max")
    parser.add_argument("--max-p99", type=float, default=1.0, help="p99 limit in seconds for --find-max")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--edge",
        action="store_true",
        help="hold the streams in the stream edge: one Pushpin routing every request to ONE worker "
        "(SSE_EDGE=pushpin; --workers must be 1) and `manage.py publish_to_edge`; streams and writer go "
        "through Pushpin, and server CPU/RSS count the worker, the publisher and all Pushpin processes",
    )
    parser.add_argument(
        "--edge-nodes",
        type=int,
        default=1,
        help="with --edge: this many Pushpins side by side in front of the worker, the streams and the writer "
        "spread over them and the publisher publishing to each (default 1)",
    )
    parser.add_argument(
        "--edge-link-seconds",
        type=int,
        default=None,
        help="SSE_EDGE_LINK_SECONDS for --edge: how often Pushpin calls back per stream (default: the service's)",
    )
    args = parser.parse_args()
    if args.workers is None:
        args.workers = 1 if args.edge else 2
    if args.edge and args.workers != 1:
        # Pushpin's route file names one upstream here: other workers would get no traffic.
        parser.error("--edge runs one worker behind Pushpin: use --workers 1")

    # Soft limit to the hard one, before any child starts: the clients hold thousands of
    # sockets each, and with --edge Pushpin's condure holds every stream in one process and
    # inherits this limit. Above the hard limit only a privileged process may go: tried,
    # for --edge streams that would not fit under it.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = max(int(c) for c in args.ramp.split(",")) if args.find_max else args.streams
    if args.edge_nodes < 1 or (args.edge_nodes > 1 and not args.edge):
        parser.error("--edge-nodes is a positive count, with --edge")
    wanted = max(hard, -(-most // args.edge_nodes) + 4096) if args.edge else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if args.edge:
        print(f"RLIMIT_NOFILE for Pushpin: {nofile}", flush=True)
        if nofile < wanted:
            print(
                f"  warning: Pushpin's condure holds all streams in one process; {nofile} file descriptors "
                f"may not fit {-(-most // args.edge_nodes)} streams plus its own sockets (hard limit, not raisable "
                "here; --edge-nodes spreads them over several Pushpins)",
                flush=True,
            )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    print(f"load before: {loadavg()}", flush=True)
    prepare_database(args)
    tenancy = load_tenancy(args)
    print(f"tenant {tenancy.tenant_id}: {len(tenancy.tickets)} tickets", flush=True)

    runs: list[dict[str, Any]] = []
    if args.find_max:
        best = 0
        for count in [int(c) for c in args.ramp.split(",")]:
            figures = one_run(args, tenancy, count)
            runs.append(figures)
            held = figures["_ok"] and figures["_rate_kept"] and figures["_p99"] <= args.max_p99
            print(
                f"  -> {count} streams: p99 {figures['commit->receipt p99 ms']} ms, lost {figures['lost']}, "
                f"{figures['writes/s achieved']} writes/s, {'held' if held else 'NOT held'}",
                flush=True,
            )
            if not held:
                break
            best = count
        print_table("list stream fan-out: ramp", runs, args)
        print(
            f"largest stream count held with p99 <= {args.max_p99 * 1000:.0f} ms, no loss "
            f"and {args.rate:g} changes/s kept: {best}"
        )
    else:
        runs.append(one_run(args, tenancy, args.streams))
        print_table("list stream fan-out", runs, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "args": vars(args), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
