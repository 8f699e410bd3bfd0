"""Read queries on the event log."""

import json
import uuid
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, F, Func, QuerySet, TextField, UUIDField, Value
from django.db.models.functions import Cast
from django.utils import timezone

from core import statements
from events.ids import event_id_time, event_id_to_str, first_event_id_at
from events.models import Event
from events.serializers import iso
from tenants.models import Tenant, TenantUser

T = TypeVar("T")


class _OfTenant(Func):
    """`tenant_id = ANY(ARRAY[<id>])` on PostgreSQL, a plain equality elsewhere.

    Same rows as `tenant_id = <id>`, but the planner no longer treats the tenant column as
    a constant (it folds `IN (<id>)` into an equality, so `__in=[id]` would not do). With
    an equality, `ORDER BY id` is "provided" by the primary key too, and when the tenant's
    rows are scattered among a bigger tenant's the planner walks the primary key and
    filters out everyone else's rows (issue 12: 259 ms instead of about 15 ms for one page
    of a small tenant on 1.3M events). With the tenant a real sort key, only the (tenant, ...) indexes
    provide the order, and the ANY is still an index condition that bounds the scan to
    the tenant's range (a `tenant BETWEEN x AND x` range does not: the planner then reads
    the whole tenant through the single-column index and sorts)."""

    conditional = True
    output_field = BooleanField()
    arity = 2
    template = "(%(expressions)s)"
    arg_joiner = " = "

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template="(%(expressions)s]))", arg_joiner=" = ANY(ARRAY[", **extra)


def tenant_log(tenant: Tenant | uuid.UUID) -> QuerySet[Event]:
    """The tenant's events oldest first, read along the tenant's range of a composite index.

    Every reader of the log starts here, and orders by the index's leading columns
    (tenant, id) so that PostgreSQL cannot answer it from the primary key (see `_OfTenant`;
    held by tests/events/test_log_query_plans.py)."""
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
    return Event.objects.filter(_OfTenant(F("tenant_id"), Value(tenant_id, output_field=UUIDField()))).order_by(
        "tenant_id", "id"
    )


def log_after(
    tenant: Tenant | uuid.UUID,
    after: uuid.UUID | None = None,
    *,
    audience: str | None = None,
    types: Collection[str] = (),
    recipient: uuid.UUID | None = None,
    shared: bool = False,
) -> QuerySet[Event]:
    """The tenant's events after a cursor (all of them without one), oldest first: of one
    audience, of some types, addressed to one user, or `shared` (to nobody in particular).
    The one reader of the log after a cursor: the hub, the streams, the partner socket,
    the REST pages and the commands."""
    events = tenant_log(tenant)
    if after is not None:
        events = events.filter(id__gt=after)
    if audience is not None:
        events = events.filter(audience=audience)
    if types:
        events = events.filter(type__in=types)
    if recipient is not None:
        events = events.filter(recipient_id=recipient)
    if shared:  # addressed to nobody in particular (no notification events)
        events = events.filter(recipient_id__isnull=True).order_by("tenant_id", "recipient_id", "id")
    return events


def tenant_events(
    tenant: Tenant | uuid.UUID,
    *,
    after_id: uuid.UUID | None = None,
    occurred_after: datetime | None = None,
    type: str | None = None,
) -> QuerySet[Event]:
    """The tenant's partner events oldest first, optionally after a cursor, a time or of one type."""
    events = log_after(tenant, after_id, audience=Event.Audience.PARTNER, types=(type,) if type else ())
    if occurred_after is not None:
        events = events.filter(occurred_at__gt=occurred_after)
    return events.select_related("actor")


def last_event_id(
    tenant: Tenant | uuid.UUID,
    *,
    audience: str | None = None,
    recipient: uuid.UUID | None = None,
    shared: bool = False,
    at_most: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """The id of the tenant's newest event (of one audience, addressed to one user, or
    `shared`: to nobody in particular; at or before `at_most`), None for an empty log.
    The one reader of the log's position: the writers numbering events, the hub's and the
    partner socket's start, the streams' snapshots (`at_log_position`), the stream edge's
    chains of items (events.edge).

    A hand-written statement (core.statements): every change's numbering runs it. It
    reads the tenant's range of a composite index as `tenant_log` does, backwards."""
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
    tenant_condition = "tenant_id = ANY(ARRAY[%s]::uuid[])" if connection.vendor == "postgresql" else "tenant_id = %s"
    where, params = [tenant_condition], [statements.value_for(Event, "tenant", tenant_id)]
    order = "tenant_id DESC, id DESC"
    if audience is not None:
        where.append("audience = %s")
        params.append(audience)
    if recipient is not None or shared:
        order = "tenant_id DESC, recipient_id DESC, id DESC"  # the (tenant, recipient, id) index
        if recipient is not None:
            where.append("recipient_id = %s")
            params.append(statements.value_for(Event, "recipient", recipient))
        if shared:
            where.append("recipient_id IS NULL")
    if at_most is not None:
        where.append("id <= %s")
        params.append(statements.value_for(Event, "id", at_most))
    sql = f"SELECT id FROM {statements.table(Event)} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT 1"  # noqa: S608 (literal conditions, values as parameters)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else Event._meta.pk.to_python(row[0])


def at_log_position(tenant: Tenant | uuid.UUID, read: Callable[[], T]) -> tuple[uuid.UUID | None, T]:
    """`read()` and the log position it covers, from one consistent snapshot (on
    PostgreSQL; SQLite has one writer anyway): a stream's opening state, so that live
    events above the position are exactly the ones the state does not show yet."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        position = last_event_id(tenant)
        return position, read()


def event_exists(tenant_id: uuid.UUID, event_id: uuid.UUID) -> bool:
    return Event.objects.filter(tenant_id=tenant_id, id=event_id).exists()


def events_by_ids(tenant_id: uuid.UUID, ids: Collection[uuid.UUID]) -> QuerySet[Event]:
    """A handful of named events (a replay), oldest first: looked up by primary key, not by
    walking the tenant's log (tests/events/test_log_query_plans.py)."""
    return Event.objects.filter(tenant_id=tenant_id, id__in=ids).select_related("actor").order_by("id")


def ticket_history(tenant: Tenant, ticket_id: uuid.UUID) -> QuerySet[Event]:
    return (
        Event.objects.filter(tenant=tenant, ticket_id=ticket_id, audience=Event.Audience.PARTNER)
        .select_related("actor")
        .order_by("id")
    )


def cursor_is_expired(after_id: uuid.UUID) -> bool:
    """A cursor minted before the retention window points into pruned history."""
    return event_id_time(after_id) < timezone.now() - timedelta(days=settings.EVENTS_RETENTION_DAYS)


_PG_ISO_UTC = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def _text(occurred_at: Any) -> str:
    return occurred_at if isinstance(occurred_at, str) else iso(occurred_at)


def partner_page_query(events: QuerySet[Event], limit: int) -> QuerySet:
    """The rows of one page for `partner_page_json`, payloads and changes as JSON text."""
    occurred: Any = F("occurred_at")
    if connection.vendor == "postgresql":
        # Formatted by the database, exactly as events.serializers.iso does it: parsing
        # a timestamp into Python only to format it again is a fifth of the page's time.
        occurred = Func(F("occurred_at"), template=_PG_ISO_UTC, output_field=TextField())
    return (
        events.select_related(None)
        .annotate(
            payload_text=Cast("payload", TextField()),
            changes_text=Cast("changes", TextField()),
            occurred_text=occurred,
        )
        .values_list("id", "type", "occurred_text", "payload_text", "changes_text", "actor_id", "support")[:limit]
    )


def partner_page_json(events: QuerySet[Event], limit: int) -> tuple[str, int]:
    """One page of events as the JSON text of the REST `result` list, and its length.

    The hot path of partners paging through the log: payloads are read as JSON text and
    spliced in unparsed, and actor names are read once per page, which is several times
    faster than decoding every payload into Python only to encode it again. The shape is
    exactly `events.serializers.event_to_dict` (a test holds them together)."""
    rows = list(partner_page_query(events, limit))
    actor_ids = {row[5] for row in rows if row[5] is not None}
    names = {u.id: u.display_name for u in TenantUser.objects.filter(id__in=actor_ids)} if actor_ids else {}
    actors = {i: json.dumps({"id": str(i), "name": name}) for i, name in names.items()}
    types: dict[str, str] = {}
    items = []
    for event_id, type_, occurred_at, payload, changes, actor_id, support in rows:
        type_json = types.get(type_) or types.setdefault(type_, json.dumps(type_))
        changes_part = f',"changes":{changes}' if changes is not None and changes != "null" else ""
        items.append(
            f'{{"id":"{event_id_to_str(event_id)}","type":{type_json},"occurred_at":"{_text(occurred_at)}",'
            f'"payload":{payload}{changes_part},"actor":{actors.get(actor_id, "null")},'
            f'"support":{"true" if support else "false"}}}'
        )
    return "[" + ",".join(items) + "]", len(rows)


def events_older_than(cutoff: datetime, tenant: Tenant | None = None) -> QuerySet[Event]:
    """Events that occurred before `cutoff` (of one tenant, or of all): what pruning takes."""
    # Ids start with their time, so "older than" is "id below the first id of the cutoff".
    old = Event.objects.filter(id__lt=first_event_id_at(cutoff))
    return old.filter(tenant=tenant) if tenant is not None else old
