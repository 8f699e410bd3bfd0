"""Every reader of the event log walks the tenant's range of a composite index on PostgreSQL,
whatever the mix of tenants.

The table is skewed the way production is: one big tenant whose id sorts in the middle of
the uuid space, and small tenants whose events are interleaved with its events in time. On
such a table PostgreSQL, asked for `tenant_id = X ... ORDER BY id LIMIT n`, walks the
primary key and throws away the other tenants' rows (the small tenant's scattered rows make
the composite index look expensive), which costs a small tenant's partner hundreds of
milliseconds a page on a large log. The test reads the plan of the very SQL each reader
runs (captured while it runs), so a reader that drifts back to that shape fails here."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from django.db import connection

from events import hub, selectors
from events.management.commands._selection import keyset_pages, selected_events
from events.models import Event
from tenants.models import Tenant, TenantUser

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's query plans"),
]

ROWS = 120_000
BIG = uuid.UUID("80000000-0000-0000-0000-000000000000")
SMALL = [uuid.UUID(int=n) for n in (1, 2, 3)]
PARTNER = Event.Audience.PARTNER
# The composite indexes that start with the tenant (events/models.py): reading one of
# them visits only the tenant's rows.
TENANT_INDEXES = {"event_tenant_id", "event_tenant_audience_id", "event_tenant_type_id", "event_tenant_recipient_id"}


@pytest.fixture
def skewed_log(db) -> dict[str, Any]:
    """120,000 events: 90,000 of the big tenant, 10,000 of each small one, interleaved
    (every fourth event is a small tenant's; every tenth of those is a notification)."""
    Tenant.objects.create(id=BIG, slug="big", name="Big")
    users = []
    for n, tenant_id in enumerate(SMALL):
        Tenant.objects.create(id=tenant_id, slug=f"small-{n}", name=f"Small {n}")
        users.append(TenantUser.objects.create(tenant_id=tenant_id, subject=f"u{n}", username=f"u{n}"))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO events_event (id, tenant_id, type, occurred_at, payload, support, audience, recipient_id)
            SELECT lpad(to_hex(n), 32, '0')::uuid,
                   CASE WHEN n %% 4 = 0 THEN (%s::uuid[])[(n / 4) %% 3 + 1] ELSE %s::uuid END,
                   CASE WHEN n %% 40 = 0 THEN 'notifications.notification.created'
                        WHEN n %% 3 = 0 THEN 'tickets.ticket.created' ELSE 'tickets.ticket.updated' END,
                   now(), '{"n": 1}'::jsonb, false,
                   CASE WHEN n %% 40 = 0 THEN 'user' ELSE 'partner' END,
                   CASE WHEN n %% 40 = 0 THEN (%s::uuid[])[(n / 4) %% 3 + 1] END
            FROM generate_series(1, %s) n
            """,
            [SMALL, BIG, [u.id for u in users], ROWS],
        )
        cursor.execute("ANALYZE events_event")
    small = SMALL[0]
    # A cursor in the middle of the small tenant's history, and one in the big tenant's.
    return {
        "small": (small, _nth_id(small, 5_000), users[0]),
        "big": (BIG, _nth_id(BIG, 45_000), None),
    }


def _nth_id(tenant_id: uuid.UUID, n: int) -> uuid.UUID:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM events_event WHERE tenant_id = %s ORDER BY id OFFSET %s LIMIT 1", [tenant_id, n])
        return cursor.fetchone()[0]


def _scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "Relation Name" in plan:
        yield plan
    for child in plan.get("Plans", []):
        yield from _scans(child)


def _indexes(plan: dict[str, Any]) -> set[str]:
    """Every index a plan node reads (a bitmap heap scan reads its children's)."""
    names = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", []):
        names |= _indexes(child)
    return names


def on_tenant_index(scan: dict[str, Any]) -> bool:
    """An ordered walk of a (tenant, ...) index, or a bitmap built only from such indexes
    (the planner's choice when it expects few rows: it reads only the tenant's matching
    rows, then sorts them). Never the primary key, a single-column index or the table."""
    if scan["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan"):
        return bool(_indexes(scan)) and _indexes(scan) <= TENANT_INDEXES
    return False


def event_scans(read: Callable[[], Any], *, generic: bool = False) -> list[dict[str, Any]]:
    """Run a reader, then the plan of every query it ran on the event table.

    `generic`: the plan made without the parameters' values, which PostgreSQL may settle
    on for a prepared statement after a few runs (plan_cache_mode `auto`; the workers
    prepare what they run often, config/settings.py), whichever tenant ran it first."""
    statements: list[tuple[str, Any]] = []

    def capture(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        read()
    scans = []
    for sql, params in statements:
        if '"events_event"' not in sql:
            continue
        plan = _generic_plan(sql, params) if generic else _plan(connection.ops.compose_sql(sql, params))
        scans += [s for s in _scans(plan[0]["Plan"]) if s["Relation Name"] == "events_event"]
    assert scans, "the reader ran no query on the event table"
    return scans


def _plan(statement: str) -> Any:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement)
        plan = cursor.fetchone()[0]
    return json.loads(plan) if isinstance(plan, str) else plan


# The types psycopg sends these parameters as (its dumpers), for PREPARE.
PARAM_TYPES = ((uuid.UUID, "uuid"), (bool, "boolean"), (int, "bigint"), (str, "text"), (datetime, "timestamptz"))


def _param_type(value: Any) -> str:
    return next(name for cls, name in PARAM_TYPES if isinstance(value, cls))


def _generic_plan(sql: str, params: Any) -> Any:
    params = list(params or ())
    numbered = iter(range(1, len(params) + 1))
    body = re.sub(r"%s|%%", lambda m: f"${next(numbered)}" if m.group() == "%s" else "%", sql)
    types = ", ".join(_param_type(p) for p in params)
    values = connection.ops.compose_sql(", ".join(["%s"] * len(params)), params)
    with connection.cursor() as cursor:
        cursor.execute(f"PREPARE generic_plan ({types}) AS {body}" if params else f"PREPARE generic_plan AS {body}")
        try:
            cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            plan = _plan(f"EXECUTE generic_plan({values})" if params else "EXECUTE generic_plan")
            # A generic plan keeps the parameters' places ($1...) in its conditions.
            assert not params or "$1" in json.dumps(plan), plan
            return plan
        finally:
            cursor.execute("RESET plan_cache_mode")
            cursor.execute("DEALLOCATE generic_plan")


def _readers(tenant_id: uuid.UUID, cursor: uuid.UUID, user: TenantUser | None) -> dict[str, Callable[[], Any]]:
    readers: dict[str, Callable[[], Any]] = {
        "REST page after a cursor": lambda: selectors.partner_page_json(
            selectors.tenant_events(tenant_id, after_id=cursor), 1000
        ),
        "REST first page": lambda: selectors.partner_page_json(selectors.tenant_events(tenant_id), 1000),
        "REST page of one type": lambda: selectors.partner_page_json(
            selectors.tenant_events(tenant_id, after_id=cursor, type="tickets.ticket.created"), 1000
        ),
        "hub catch-up / list stream resume": lambda: hub.fetch_log(tenant_id, cursor, 500),
        "last event id (writers, hub start, stream snapshots)": lambda: selectors.last_event_id(tenant_id),
        "partner socket catch-up": lambda: hub.fetch_log(tenant_id, cursor, 500, audience=PARTNER),
        "partner socket catch-up, some types": lambda: hub.fetch_log(
            tenant_id, cursor, 500, audience=PARTNER, types={"tickets.ticket.created", "tickets.ticket.updated"}
        ),
        "partner socket start position": lambda: selectors.last_event_id(tenant_id, audience=PARTNER),
        "stream edge: shared chain head": lambda: selectors.last_event_id(tenant_id, shared=True, at_most=cursor),
        "stream edge: shared chain after a cursor": lambda: hub.fetch_log(tenant_id, cursor, 500, shared=True),
        "export/replay command page": lambda: next(
            keyset_pages(selected_events({"tenant": str(tenant_id), "after_id": str(cursor)})[1], 1000)
        ),
    }
    if user is not None:
        readers["notification stream resume"] = lambda: hub.fetch_log(tenant_id, cursor, 500, recipient=user.id)
        readers["stream edge: a user's last event at a position"] = lambda: selectors.last_event_id(
            tenant_id, recipient=user.id, at_most=cursor
        )
    return readers


@pytest.mark.parametrize("plan", ["for the values", "generic"])
@pytest.mark.parametrize("which", ["small", "big"])
def test_every_log_reader_walks_the_tenants_composite_index(skewed_log, which, plan):
    tenant_id, cursor, user = skewed_log[which]
    wrong = {}
    for name, read in _readers(tenant_id, cursor, user).items():
        scans = event_scans(read, generic=plan == "generic")
        bad = [f"{s['Node Type']} on {sorted(_indexes(s)) or 'the table'}" for s in scans if not on_tenant_index(s)]
        if bad:
            wrong[name] = bad
    assert not wrong, f"readers not on the tenant's index for the {which} tenant ({plan} plan): {wrong}"


def test_replaying_chosen_events_looks_them_up_by_id(skewed_log):
    """The hub's replay reads a handful of named events: a lookup by primary key, never a
    walk over the tenant's log."""
    tenant_id, cursor, _ = skewed_log["small"]
    ids = list(Event.objects.filter(tenant_id=tenant_id, id__gt=cursor).values_list("id", flat=True)[:5])
    scans = event_scans(lambda: hub.fetch_by_ids(tenant_id, ids))
    assert [s["Node Type"] for s in scans] in (["Index Scan"], ["Bitmap Heap Scan"]), scans
    conditions = json.dumps(scans)
    assert "id = ANY" in conditions, conditions
