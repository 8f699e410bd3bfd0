"""Migrations ticketing 0010 and sla 0002: the SLA policies and ticket clocks move from
the ticketing app to the sla app. Rows recorded before keep existing, the models read them
under their new app, and admin permissions stay attached to them."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.migrating import migrate, migrate_to_latest

BEFORE = [("ticketing", "0009_saved_views"), ("sla", "0001_initial"), ("contenttypes", "0002_remove_content_type_name")]
AFTER = [("sla", "0002_sla_policy_and_ticket_clock")]


@pytest.mark.django_db(transaction=True)
def test_policies_clocks_and_their_permissions_move_to_the_sla_app():
    try:
        old = migrate(BEFORE)
        tenant = old.get_model("tenants", "Tenant").objects.create(id=uuid.uuid4(), name="Acme", slug="acme-move")
        ticket = old.get_model("ticketing", "Ticket").objects.create(
            id=uuid.uuid4(), tenant=tenant, number="TKT-2026-000001", subject="Printer"
        )
        old.get_model("ticketing", "SlaPolicy").objects.create(
            tenant=tenant, priority="high", response_minutes=30, resolution_minutes=240
        )
        due = timezone.now() + timedelta(hours=1)
        old.get_model("ticketing", "TicketSla").objects.create(
            ticket=ticket,
            tenant=tenant,
            response_due=due,
            response_warn_at=due,
            resolution_due=due,
            resolution_warn_at=due,
        )
        ContentType = old.get_model("contenttypes", "ContentType")
        Permission = old.get_model("auth", "Permission")
        policy_type, _ = ContentType.objects.get_or_create(app_label="ticketing", model="slapolicy")
        Permission.objects.get_or_create(
            content_type=policy_type, codename="change_slapolicy", defaults={"name": "Can change SLA policy"}
        )

        new = migrate(AFTER)
        policies = new.get_model("sla", "SlaPolicy").objects.filter(tenant_id=tenant.id)
        assert [(p.priority, p.response_minutes) for p in policies] == [("high", 30)]
        assert new.get_model("sla", "TicketSla").objects.get(ticket_id=ticket.id).response_due == due
        moved = new.get_model("contenttypes", "ContentType").objects.get(pk=policy_type.pk)
        assert (moved.app_label, moved.model) == ("sla", "slapolicy")
        permission = new.get_model("auth", "Permission").objects.get(codename="change_slapolicy")
        assert permission.content_type_id == policy_type.pk
    finally:
        migrate_to_latest()
