"""The hand-written reads of the change path (core.statements) give what the ORM gives:
the same rows as the same Python values, on whichever database the suite runs (SQLite
stores UUIDs, datetimes and JSON as text), and lock where the database has row locks."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.db.models import Model
from django.db.utils import OperationalError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core import statements
from events.ids import new_event_id
from events.models import Event
from notifications.models import NotificationCounter
from sla.models import TicketSla
from tenants.callers import caller_for_user
from tenants.models import TenantUser
from tenants.selectors import tenant_user_by_id_or_username
from tests.builders import World
from ticketing import services
from ticketing.models import Ticket, TicketProduct


def values(instance: Model) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


@pytest.fixture
def ticket(acme: World) -> Ticket:
    admin = caller_for_user(acme.users["admin"])
    ticket = services.create_ticket(
        caller=admin,
        data={"subject": "Printer", "assignee": acme.users["carol"], "requester": acme.users["bob"]},
    )
    TicketProduct.objects.create(ticket=ticket, sku="B-2", name="Toner", quantity=2)
    TicketProduct.objects.create(ticket=ticket, sku="A-1", name="Drum")
    return ticket


@pytest.mark.django_db
def test_rows_come_back_as_the_orm_reads_them(acme: World, ticket: Ticket):
    now = timezone.now()
    TicketSla.objects.create(
        ticket=ticket,
        tenant=acme.tenant,
        response_due=now + timedelta(hours=1),
        response_warn_at=now + timedelta(minutes=45),
        resolution_due=now + timedelta(hours=8),
        resolution_warn_at=now + timedelta(hours=6),
    )
    NotificationCounter.objects.create(
        user=acme.users["alice"], tenant=acme.tenant, total=3, unread=2, unread_by_type={"comment": 2}
    )
    for model, pk in [
        (Ticket, ticket.pk),  # UUIDs, foreign keys, datetimes, nulls
        (TenantUser, acme.users["alice"].pk),  # JSON lists
        (TicketSla, ticket.pk),  # a one-to-one primary key, many datetimes
        (NotificationCounter, acme.users["alice"].pk),  # JSON objects
    ]:
        pk_column = model._meta.pk.column
        (row,) = statements.select(model, f"{pk_column} = %s", [statements.value_for(model, model._meta.pk.name, pk)])
        assert type(row) is model
        assert values(row) == values(model.objects.get(pk=pk)), model.__name__
        assert row._state.adding is False  # saving it updates the row, as an ORM instance would


@pytest.mark.django_db
def test_a_list_of_ids_reads_each_row_once_and_no_ids_read_nothing(acme: World, ticket: Ticket):
    users = [acme.users["alice"], acme.users["bob"]]
    where, params = statements.where_in(TenantUser, "id", [u.pk for u in users])
    assert sorted(u.username for u in statements.select(TenantUser, where, params)) == ["alice", "bob"]
    where, params = statements.where_in(TenantUser, "id", [])
    assert statements.select(TenantUser, where, params) == []


@pytest.mark.django_db
def test_a_locked_ticket_comes_with_its_people_and_its_products_in_sku_order(acme: World, ticket: Ticket):
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        locked = services.lock_ticket(Ticket(pk=ticket.pk))
        people = (locked.assignee.username, locked.requester.username)
        products = [p.sku for p in locked.products.all()]
    assert people == ("carol", "bob")
    assert products == ["A-1", "B-2"]
    # The row lock, the users, the products: reading the relations afterwards asked nothing more.
    assert len(captured.captured_queries) == 3
    lock = "FOR NO KEY UPDATE" if connection.features.has_select_for_no_key_update else "FOR UPDATE"
    assert (lock in captured.captured_queries[0]["sql"]) is connection.features.has_select_for_update


# SQLite has no row locks (one writer at a time): there the locked-ticket test above holds
# that no lock clause is sent. CI runs this one on PostgreSQL.
@pytest.mark.skipif(not connection.features.has_select_for_update, reason="SQLite has no row locks")
@pytest.mark.django_db(transaction=True)
def test_the_lock_holds_the_row_until_the_transaction_ends(acme: World, ticket: Ticket):
    """Another writer of the row waits; a foreign-key check of a row pointing at it (FOR
    KEY SHARE, as PostgreSQL runs for a child ticket at COMMIT) does not."""
    other_result: list[str] = []

    def other_writer() -> None:
        # Another connection, as another request would have.
        for clause in ("FOR UPDATE NOWAIT", "FOR KEY SHARE NOWAIT"):
            try:
                with transaction.atomic(), connections["default"].cursor() as cursor:
                    cursor.execute(f"SELECT id FROM ticketing_ticket WHERE id = %s {clause}", [ticket.pk])  # noqa: S608 (a constant)
                other_result.append("got it")
            except OperationalError:
                other_result.append("locked")
        connections["default"].close()

    with transaction.atomic():
        services.lock_ticket(Ticket(pk=ticket.pk))
        thread = threading.Thread(target=other_writer)
        thread.start()
        thread.join()
    assert other_result == ["locked", "got it"]


@pytest.mark.django_db
def test_a_deleted_ticket_cannot_be_locked(acme: World, ticket: Ticket):
    pk = ticket.pk
    Ticket.objects.filter(pk=pk).delete()
    with transaction.atomic():
        assert services.lock_tickets([pk]) == []


@pytest.mark.django_db
def test_a_user_named_in_a_body_by_id_or_username_only_in_the_callers_tenant(acme: World, globex: World):
    alice, bob = acme.users["alice"], acme.users["bob"]
    assert tenant_user_by_id_or_username(acme.tenant.pk, str(alice.pk)) == alice
    assert tenant_user_by_id_or_username(acme.tenant.pk, " alice ") == alice
    assert tenant_user_by_id_or_username(acme.tenant.pk, "nobody") is None
    assert tenant_user_by_id_or_username(acme.tenant.pk, str(uuid.uuid4())) is None
    # Another tenant's alice, by id or by name, is nobody here.
    assert tenant_user_by_id_or_username(acme.tenant.pk, str(globex.users["alice"].pk)) is None
    assert tenant_user_by_id_or_username(globex.tenant.pk, "alice") == globex.users["alice"]
    # A username that reads as another user's id: the id wins.
    TenantUser.objects.filter(pk=bob.pk).update(username=str(alice.pk))
    assert tenant_user_by_id_or_username(acme.tenant.pk, str(alice.pk)) == alice


@pytest.mark.django_db
def test_inserted_rows_read_back_as_the_orm_would_have_written_them(acme: World, ticket: Ticket):
    at = timezone.now()
    payload = {"ticket": {"id": str(ticket.pk), "subject": "Printer \u2603", "tags": ["a", "b"]}, "n": 1.5}
    events = [
        Event(
            id=new_event_id(),
            tenant_id=acme.tenant.pk,
            type="ticketing.ticket.updated",
            occurred_at=at,
            ticket_id=ticket.pk,
            payload=payload,
            changes={"status": {"from": "open", "to": "pending"}},
            actor=acme.users["alice"],
            audience=Event.Audience.PARTNER,
        )
        for _ in range(3)
    ]
    statements.insert(Event, events)
    assert all(not event._state.adding for event in events)
    for event in events:
        stored = Event.objects.get(pk=event.pk)
        assert values(stored) == values(event)
        assert stored.payload == payload


@pytest.mark.django_db
def test_an_insert_that_ignores_conflicts_leaves_existing_rows_as_they_are(acme: World):
    alice, bob = acme.users["alice"], acme.users["bob"]
    NotificationCounter.objects.create(user=alice, tenant=acme.tenant, total=3, unread=2)
    statements.insert(
        NotificationCounter,
        [NotificationCounter(user=user, tenant=acme.tenant) for user in (alice, bob)],
        ignore_conflicts=True,
    )
    assert NotificationCounter.objects.get(pk=alice.pk).total == 3
    assert NotificationCounter.objects.get(pk=bob.pk).total == 0


@pytest.mark.django_db
def test_rows_without_a_primary_key_are_refused_before_anything_is_written(ticket: Ticket):
    with pytest.raises(ValueError, match="primary key"):
        statements.insert(TicketProduct, [TicketProduct(ticket=ticket, sku="C-3", name="Cable")])
    assert not TicketProduct.objects.filter(sku="C-3").exists()


@pytest.mark.django_db
def test_a_unit_with_thousands_of_events_is_inserted_in_statements_the_database_takes(acme: World):
    # 7,000 events of 11 columns: 77,000 parameters, more than one statement may bind.
    at = timezone.now()
    events = [
        Event(id=new_event_id(), tenant_id=acme.tenant.pk, type="test.bulk", occurred_at=at, payload={"i": i})
        for i in range(7000)
    ]
    statements.insert(Event, events)
    assert Event.objects.filter(tenant_id=acme.tenant.pk, type="test.bulk").count() == 7000
