"""`prune_events` and webhooks: an event a delivery is still owed for (pending, retrying,
or a disabled endpoint's backlog) is kept, with its delivery and attempts; deleting it
deleted them too (`Delivery.event` cascades), so the endpoint never received it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from events.ids import first_event_id_at
from events.models import Event
from tests.builders import World
from webhooks.models import Delivery, DeliveryAttempt, Endpoint
from webhooks.services import create_endpoint

pytestmark = pytest.mark.django_db


def old_event(world: World, days: int) -> Event:
    moment = timezone.now() - timedelta(days=days)
    return Event.objects.create(
        id=first_event_id_at(moment), tenant=world.tenant, type="tickets.ticket.created", occurred_at=moment, payload={}
    )


def delivery(endpoint: Endpoint, event: Event, state: str, attempts: int) -> Delivery:
    owed = Delivery.objects.create(
        endpoint=endpoint,
        event=event,
        event_type=event.type,
        state=state,
        attempts=attempts,
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )
    for number in range(1, attempts + 1):
        DeliveryAttempt.objects.create(
            endpoint=endpoint,
            delivery=owed,
            event_id=event.id,
            event_type=event.type,
            webhook_id=f"msg_{uuid.uuid4().hex}",
            attempt=number,
            started_at=timezone.now(),
            outcome=DeliveryAttempt.Outcome.NETWORK_ERROR,
        )
    return owed


def prune(**options: object) -> str:
    out = StringIO()
    call_command("prune_events", older_than="30d", stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def test_prune_keeps_events_whose_delivery_is_still_owed_and_says_so(acme: World):
    endpoint, _ = create_endpoint(tenant=acme.tenant, url="https://hooks.invalid/hook", event_types=[], ordered=False)
    disabled, _ = create_endpoint(
        tenant=acme.tenant, url="https://hooks.invalid/off", event_types=[], enabled=False, ordered=False
    )
    retrying = delivery(endpoint, old_event(acme, 40), Delivery.State.PENDING, attempts=1)
    backlog = delivery(disabled, old_event(acme, 41), Delivery.State.PENDING, attempts=0)
    delivered = delivery(endpoint, old_event(acme, 42), Delivery.State.DELIVERED, attempts=1)
    failed = delivery(endpoint, old_event(acme, 43), Delivery.State.FAILED, attempts=2)
    lone = old_event(acme, 44)

    dry = prune(dry_run=True)
    assert dry.startswith("would delete 3 events older than ")
    assert "; kept 2 events a webhook delivery is still owed for (pending or retrying" in dry
    assert Event.objects.filter(id=lone.id).exists()

    done = prune()
    assert done.startswith("deleted 3 events older than ")  # events, not also their deliveries and attempts
    assert "; kept 2 events a webhook delivery is still owed for" in done
    assert done.count("\n") == 1
    assert set(
        Event.objects.filter(id__lt=first_event_id_at(timezone.now() - timedelta(days=30))).values_list("id", flat=True)
    ) == {retrying.event_id, backlog.event_id}
    assert set(Delivery.objects.values_list("id", flat=True)) == {retrying.id, backlog.id}
    assert DeliveryAttempt.objects.filter(delivery=retrying).count() == 1
    assert not DeliveryAttempt.objects.filter(delivery_id__in=[delivered.id, failed.id]).exists()

    # Once delivered, the next prune takes it (the backlog still waits).
    Delivery.objects.filter(id=retrying.id).update(state=Delivery.State.DELIVERED)
    assert prune().startswith("deleted 1 event older than ")
    assert set(Delivery.objects.values_list("id", flat=True)) == {backlog.id}


def test_prune_without_owed_deliveries_says_nothing_about_them(acme: World):
    old_event(acme, 40)
    assert "kept" not in prune(dry_run=True)
    assert "kept" not in prune()
