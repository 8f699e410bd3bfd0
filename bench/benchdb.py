"""Shared set-up of the benchmarks: Django on the configured database, or on a separate
PostgreSQL database, migrated, so a benchmark never touches development or test data."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent

# A benchmark sends far more requests per user than any rate limit allows: the limits are
# off for benchmarks (and the servers they start) unless the environment says otherwise
# (RATE_LIMITS_ENABLED=1 with RATE_LIMIT_PER_* measures them).
os.environ.setdefault("RATE_LIMITS_ENABLED", "0")


def use_bench_database(name: str, *, base_url: str = "postgres://postgres@127.0.0.1:5432") -> str:
    """Create (if needed) and migrate database `name`, configure Django for it, return its URL."""
    url = f"{base_url}/{name}"
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench-only-secret")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import psycopg

    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, check=True, env=os.environ.copy()
    )
    import django

    django.setup()
    return url


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = int(next(row for row in meminfo if row.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return f"{os.cpu_count()} cores, {cpu}, {mem_kb // 1024 // 1024} GiB RAM"


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far (/proc/<pid>/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}")
    print(f"{'metric'.ljust(width)} | value")
    print(f"{'-' * width}-+-{'-' * 30}")
    for key, value in rows:
        print(f"{key.ljust(width)} | {value}")


def django_setup() -> None:
    """Django on the database the environment names (DATABASE_URL)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # Persistent connections, as docker-compose.yml runs the service (DB_CONN_MAX_AGE=60).
    os.environ.setdefault("DB_CONN_MAX_AGE", "60")
    import django

    django.setup()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class DemoRealm(Protocol):
    """What a benchmark knows of the demo tenant's HS256 realm (read once from its database)."""

    tenant_id: str
    secret: str
    issuer: str
    audience: str
    teams_claim: str


def realm_token(realm: DemoRealm, username: str, *, roles: Sequence[str], teams: Sequence[str], ttl: int) -> str:
    """A token of the demo realm, signed as its identity provider would sign it.

    The benchmarks' load clients run without Django, so they sign with PyJWT directly
    instead of calling `tenants.services.issue_token`; the claims are the same."""
    import jwt

    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(uuid.uuid5(uuid.UUID(realm.tenant_id), username)),
        "preferred_username": username,
        "name": username.title(),
        "email": f"{username}@demo.example",
        "realm_access": {"roles": list(roles)},
        realm.teams_claim: list(teams),
        "iat": now,
        "exp": now + ttl,
        "typ": "Bearer",
    }
    if realm.issuer:
        claims["iss"] = realm.issuer
    if realm.audience:
        claims["aud"] = realm.audience
    return jwt.encode(claims, realm.secret, algorithm="HS256")


def stop_process_groups(procs: Sequence[subprocess.Popen[Any]], timeout: float = 10.0) -> None:
    """Stop servers started in process groups of their own (`start_new_session`): SIGTERM
    to each group still running, then, once `timeout` seconds have passed for them all,
    SIGKILL to any group not yet gone (a server's workers are its children)."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
