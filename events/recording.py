"""The one way a change reaches the event log: a unit of work.

A service that changes something runs in `unit_of_work()` (a transaction) and says what
happened with `record_event(...)`. Nothing is written to the log then: the event is
handed to the handlers subscribed to its type (other apps' reactions, inside the same
transaction) and kept in the unit. When the outermost unit ends, its events are numbered
and inserted together, just before COMMIT:

    request ─► view ─► unit_of_work ─► service: lock rows, change them, record_event(...)
                                          └─► handlers (notifications, SLA, ...): more writes,
                                              more deferred writes, more events
               end of the unit: deferred writes (e.g. notification counters, one sorted lock)
                                ─► the tenant's log lock ─► ids ─► one INSERT ─► COMMIT
                                ─► after commit: "log grew", with the events, to every
                                  worker (channel layer, events.announcements)

Lock order, the same for every writer, so writers never wait for each other in a circle:
1. rows of the business change (a ticket row first: every ticket change starts by locking
   it; two tickets in primary-key order), then rows that belong to it (its SLA clock);
2. at the end of the unit, deferred writes in a fixed order, each locking its rows in one
   sorted statement (notification counters by user id);
3. last, the tenant's log lock (PostgreSQL advisory lock, held until COMMIT, which follows
   at once). Ids are chosen under it, above the tenant's newest id, so they increase in
   commit order: a reader paging with `after_id` can never miss a late commit.
SQLite has a single writer, which gives the same order.

Events recorded inside a savepoint that is rolled back are dropped with it (the unit asks
Django's own list of on-commit callbacks, which savepoint rollbacks prune)."""

from __future__ import annotations

import logging
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from core import statements
from core.metrics import EVENTS_WRITTEN
from events.announcements import announce_commit, carried_events
from events.ids import new_event_id
from events.models import Event
from events.selectors import last_event_id
from tenants.models import Tenant, TenantUser

T = TypeVar("T")
logger = logging.getLogger(__name__)

# The advisory-lock namespace of the event log (first key of the two-key form).
_EVENT_LOCK_CLASS = 0x45564E54 - 2**31  # "EVNT", as a signed int4
# Where a connection keeps its open unit (one per connection, like its transaction).
_UNIT_ATTRIBUTE = "recording_unit"


@dataclass
class Recorded:
    """An event as handlers receive it: the row that will be written (its id is chosen at
    commit) and, in process only, what the recording service knew (`message`, e.g. the
    ticket before and after), so handlers need not read it again."""

    event: Event
    message: Any = None


Handler = Callable[[Recorded], None]
_handlers: dict[str, list[Handler]] = defaultdict(list)


def subscribe(table: Mapping[Handler, Iterable[str]]) -> None:
    """Call each handler of an app's table for every recorded event of its types, inside
    the recording transaction (so its writes commit or roll back with the change). Wired
    once, in the reacting app's `AppConfig.ready()`; handlers run in the order they were
    wired."""
    for handler, types in table.items():
        for type_ in types:
            if handler not in _handlers[type_]:
                _handlers[type_].append(handler)


def _alive_marker() -> Callable[[], None]:
    def marker() -> None:
        """Does nothing after commit; its presence in the on-commit list before commit
        says the savepoint it was registered in was not rolled back."""

    transaction.on_commit(marker)
    return marker


@dataclass
class _Unit:
    events: list[tuple[Callable[[], None], Recorded]] = field(default_factory=list)
    # Deferred writes by key: (write function, [(marker, item), ...]); run in key order.
    deferred: dict[str, tuple[Callable[[list[Any]], None], list[tuple[Callable[[], None], Any]]]] = field(
        default_factory=dict
    )
    markers: set[int] = field(default_factory=set)

    def marker(self) -> Callable[[], None]:
        marker = _alive_marker()
        self.markers.add(id(marker))
        return marker

    def finish(self, conn: BaseDatabaseWrapper) -> None:
        alive = {id(callback) for _, callback, _ in conn.run_on_commit}
        # Deferred writes may record events (and defer more): drain until nothing is left.
        while self.deferred:
            key = min(self.deferred)
            write, items = self.deferred.pop(key)
            live_items = [item for marker, item in items if id(marker) in alive]
            if live_items:
                write(live_items)
                alive = {id(callback) for _, callback, _ in conn.run_on_commit}
        recorded = [r.event for marker, r in self.events if id(marker) in alive]
        # The markers have told what they had to: leave the on-commit list as Django's.
        conn.run_on_commit = [entry for entry in conn.run_on_commit if id(entry[1]) not in self.markers]
        if recorded:
            _number_and_insert(recorded)


def _open_unit() -> _Unit:
    unit = getattr(connection, _UNIT_ATTRIBUTE, None)
    if unit is None:
        raise RuntimeError("events are recorded inside unit_of_work(), the transaction of the change they record")
    return unit


@contextmanager
def unit_of_work() -> Iterator[None]:
    """One transaction whose recorded events are written at its end (see the module
    docstring).

    Nested units join the outermost one without a savepoint: an error inside fails the
    whole unit (catching it and carrying on would only end in a silent rollback). The
    outermost unit may itself run inside a plain `transaction.atomic()` (a test); it still
    writes its events at its own end, and the tenant's log lock is then held until that
    outer transaction commits: never start a second unit in the same transaction (it
    would take row locks after the log lock), put both in one unit instead."""
    if getattr(connection, _UNIT_ATTRIBUTE, None) is not None:
        # Joining the open unit: no savepoint of its own (two round trips per service
        # call). A failure inside fails the whole unit, which is what a request wants.
        with transaction.atomic(savepoint=False):
            yield
        return
    with transaction.atomic():
        unit = _Unit()
        setattr(connection, _UNIT_ATTRIBUTE, unit)
        try:
            yield
            if not connection.needs_rollback:
                unit.finish(connection)
        finally:
            setattr(connection, _UNIT_ATTRIBUTE, None)


def record_event(
    *,
    tenant: Tenant | uuid.UUID,
    type: str,
    payload: dict[str, Any],
    changes: dict[str, Any] | None = None,
    ticket_id: uuid.UUID | None = None,
    actor: TenantUser | None = None,
    support: bool = False,
    recipient: TenantUser | None = None,
    audience: str | None = None,
    message: Any = None,
) -> Event:
    """Record that something happened, in the current unit of work: the handlers of its
    type run now, and the row is written when the unit ends (its `id` is set then). An event with a `recipient`
    is private to that user (audience "user"): it reaches only their streams and never
    the partner feed."""
    unit = _open_unit()
    event = Event(
        tenant_id=tenant.pk if isinstance(tenant, Tenant) else tenant,
        type=type,
        occurred_at=timezone.now(),
        ticket_id=ticket_id,
        payload=payload,
        changes=changes,
        actor=actor,
        support=support,
        audience=audience or (Event.Audience.USER if recipient is not None else Event.Audience.PARTNER),
        recipient=recipient,
    )
    recorded = Recorded(event=event, message=message)
    unit.events.append((unit.marker(), recorded))
    for handler in _handlers.get(type, ()):
        handler(recorded)
    return event


def defer_write(key: str, item: T, write: Callable[[list[T]], None]) -> None:
    """Keep `item` for one call of `write(items)` when the unit ends, before its events are
    numbered: for writes that lock shared rows (one sorted lock for the whole unit instead
    of one per change) or that are cheaper in one statement. `write` may record events."""
    unit = _open_unit()
    _, items = unit.deferred.setdefault(key, (write, []))
    items.append((unit.marker(), item))


def tenant_log_lock_keys(tenant_id: uuid.UUID) -> tuple[int, int]:
    """The two keys of the tenant's log lock (PostgreSQL's two-key advisory lock)."""
    return _EVENT_LOCK_CLASS, zlib.crc32(tenant_id.bytes) - 2**31


def lock_tenant_log(tenant_id: uuid.UUID) -> None:
    """Serialize this transaction with every other writer of the tenant's log until it
    ends (PostgreSQL; SQLite has one writer anyway). The last lock a writer takes."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", list(tenant_log_lock_keys(tenant_id)))


def _number_and_insert(events: list[Event]) -> None:
    by_tenant: dict[uuid.UUID, list[Event]] = defaultdict(list)
    for event in events:
        by_tenant[event.tenant_id].append(event)
    before: dict[uuid.UUID, uuid.UUID | None] = {}
    for tenant_id in sorted(by_tenant, key=lambda t: t.bytes):  # several tenants: always in one order
        lock_tenant_log(tenant_id)
        last = before[tenant_id] = last_event_id(tenant_id)
        for event in by_tenant[tenant_id]:
            event.id = last = new_event_id(after=last)
    statements.insert(Event, events)
    for tenant_id, own in by_tenant.items():
        transaction.on_commit(partial(committed, tenant_id, before[tenant_id], own))


def committed(tenant_id: uuid.UUID, before: uuid.UUID | None, events: list[Event]) -> None:
    """After COMMIT: count the tenant's new events (core.metrics), then announce them, with
    the id before them in the tenant's log (under its lock, nothing came between)."""
    for audience, count in Counter(event.audience for event in events).items():
        EVENTS_WRITTEN.labels(audience).inc(count)
    try:
        carried = carried_events(before, events)
    except Exception:
        # The change is committed whatever happens here: announced without its events,
        # it is read from the log by the receivers.
        logger.warning("event=carried_events_failed tenant=%s", tenant_id, exc_info=True)
        carried = None
    announce_commit(tenant_id, events[-1].id, carried=carried)
