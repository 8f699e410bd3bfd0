"""SLA clocks and the monitor: warnings and breaches to the assignee or the team, each
exactly once per ticket and target, also with two monitors running at once."""

import os
import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db.models import Q
from django.utils import timezone

from events.models import Event
from notifications.models import Notification
from sla.models import SlaPolicy, TicketSla
from sla.services import _claim_sla_stage, claim_due_sla_stages
from tests import conftest
from tests.builders import World
from tests.notifications.support import as_user, make_ticket, told
from ticketing import services

ROOT = Path(__file__).resolve().parents[2]


def policy(world: World, priority: str = "high", response: int = 60, resolution: int = 240, warn: int = 75) -> None:
    SlaPolicy.objects.create(
        tenant=world.tenant,
        priority=priority,
        response_minutes=response,
        resolution_minutes=resolution,
        warning_percent=warn,
    )


def shift_clock(ticket, minutes: float) -> None:
    """Move the ticket's SLA clock into the past, as if `minutes` had passed."""
    sla = TicketSla.objects.get(pk=ticket.pk)
    delta = timedelta(minutes=minutes)
    for name in ("response_due", "response_warn_at", "resolution_due", "resolution_warn_at"):
        setattr(sla, name, getattr(sla, name) - delta)
    sla.save()


@pytest.mark.django_db
class TestMonitor:
    def test_a_ticket_gets_its_clock_from_the_policy_of_its_priority(self, acme: World):
        policy(acme, "high", response=60, resolution=240, warn=75)
        ticket = make_ticket(acme, by="bob", priority="high")
        sla = TicketSla.objects.get(pk=ticket.pk)
        assert sla.response_due - ticket.created_at == timedelta(minutes=60)
        assert sla.response_warn_at - ticket.created_at == timedelta(minutes=45)
        assert sla.resolution_due - ticket.created_at == timedelta(minutes=240)
        assert not TicketSla.objects.filter(pk=make_ticket(acme, by="bob", priority="low").pk).exists()

    def test_warning_then_breach_go_once_to_the_assignee_without_actor(self, acme: World):
        policy(acme)
        ticket = make_ticket(
            acme, by="admin", priority="high", assignee=acme.users["alice"], requester=acme.users["bob"]
        )
        assert claim_due_sla_stages() == 0
        shift_clock(ticket, 50)  # 10 minutes left to respond
        assert claim_due_sla_stages() == 1
        assert claim_due_sla_stages() == 0
        (warning,) = told(acme, "slaWarning")["alice"]
        assert warning.actor is None and warning.priority == "high"
        assert warning.metadata["slaType"] == "response"
        assert 540 <= warning.metadata["timeRemaining"] <= 600
        sla = TicketSla.objects.get(pk=ticket.pk)
        assert warning.metadata["slaTarget"] == sla.response_due.isoformat().replace("+00:00", "Z")
        assert warning.message in {f"SLA response time warning: {m} minutes remaining" for m in (9, 10)}

        shift_clock(ticket, 15)
        assert claim_due_sla_stages() == 1
        (breach,) = told(acme, "slaBreach")["alice"]
        assert breach.priority == "urgent" and breach.actor is None
        assert breach.metadata["slaType"] == "response" and breach.metadata["timeRemaining"] < 0
        assert set(told(acme)) == {"alice"}  # the requester hears nothing of SLAs
        assert claim_due_sla_stages() == 0
        # Partners see both stages in the log, in order, with the target and no actor.
        stages = Event.objects.filter(ticket_id=ticket.id, type__startswith="tickets.ticket.sla_").order_by("id")
        assert [(e.type, e.payload["sla"]["target"], e.actor_id) for e in stages] == [
            ("tickets.ticket.sla_warning", "response", None),
            ("tickets.ticket.sla_breached", "response", None),
        ]

    def test_a_ticket_deleted_before_its_stage_is_claimed_is_skipped(self, acme: World):
        policy(acme)
        ticket = make_ticket(acme, by="admin", priority="high", assignee=acme.users["alice"])
        shift_clock(ticket, 70)
        pending = Q(pk=ticket.pk)
        ticket_id = ticket.pk
        services.delete_ticket(caller=as_user(acme, "admin"), ticket=ticket)
        # As if the monitor had listed it just before the deletion committed.
        assert (
            _claim_sla_stage(
                ticket_id=ticket_id,
                pending=pending,
                stamp="response_breached_at",
                target="response",
                breached=True,
                now=timezone.now(),
            )
            is False
        )
        assert claim_due_sla_stages() == 0

    def test_an_unassigned_ticket_warns_the_agents_of_its_team(self, acme: World):
        policy(acme)
        ticket = make_ticket(acme, by="alice", priority="high", team="network", requester=acme.users["bob"])
        shift_clock(ticket, 50)
        claim_due_sla_stages()
        assert set(told(acme, "slaWarning")) == {"carol", "admin"}

    def test_a_met_target_sends_nothing(self, acme: World):
        policy(acme)
        ticket = make_ticket(acme, by="bob", priority="high")
        services.add_comment(caller=as_user(acme, "alice"), ticket=ticket, body="Looking into it")
        services.update_ticket(
            caller=as_user(acme, "alice"), ticket=ticket, data={"status": "resolved", "assignee": acme.users["alice"]}
        )
        shift_clock(ticket, 500)
        assert claim_due_sla_stages() == 0
        assert not Notification.objects.filter(type__in=["slaWarning", "slaBreach"]).exists()

    def test_a_monitor_that_was_down_sends_the_breach_not_a_late_warning(self, acme: World):
        policy(acme)
        ticket = make_ticket(acme, by="admin", priority="high", assignee=acme.users["alice"])
        services.add_comment(caller=as_user(acme, "alice"), ticket=ticket, body="ack")  # response met
        shift_clock(ticket, 300)  # resolution target long gone
        assert claim_due_sla_stages() == 1
        sla_notes = Notification.objects.filter(type__startswith="sla")
        assert [(n.type, n.metadata["slaType"]) for n in sla_notes] == [("slaBreach", "resolution")]

    def test_a_priority_change_moves_the_targets(self, acme: World):
        policy(acme, "high", response=60, resolution=240)
        policy(acme, "urgent", response=15, resolution=60)
        ticket = make_ticket(acme, by="bob", priority="high")
        services.update_ticket(caller=as_user(acme, "alice"), ticket=ticket, data={"priority": "urgent"})
        sla = TicketSla.objects.get(pk=ticket.pk)
        assert sla.response_due - ticket.created_at == timedelta(minutes=15)

    def test_a_warning_with_seconds_left_says_less_than_a_minute(self, acme: World):
        policy(acme, "high", response=60, resolution=240, warn=99)  # warned at 59.4 minutes
        ticket = make_ticket(acme, by="admin", priority="high", assignee=acme.users["alice"])
        shift_clock(ticket, 59.5)  # 30 seconds left to respond
        assert claim_due_sla_stages() == 1
        (warning,) = told(acme, "slaWarning")["alice"]
        assert warning.message == "SLA response time warning: less than a minute remaining"

    def test_the_command_runs_once(self, acme: World):
        policy(acme)
        ticket = make_ticket(acme, by="admin", priority="high", assignee=acme.users["carol"])
        shift_clock(ticket, 61)
        out = StringIO()
        call_command("sla_monitor", "--once", stdout=out)
        assert [n.type for n in told(acme)["carol"]] == ["assignment", "slaBreach"]
        assert out.getvalue().startswith("Checked the SLA clocks: recorded 1 breach (")
        again = StringIO()
        call_command("sla_monitor", "--once", stdout=again)
        assert again.getvalue() == "Checked the SLA clocks: no warning or breach was due.\n"


@pytest.mark.django_db(transaction=True)
def test_two_monitors_at_once_send_each_warning_and_breach_exactly_once(acme: World):
    policy(acme, "high", response=60, resolution=240)
    tickets = [
        make_ticket(acme, by="admin", priority="high", assignee=acme.users["alice"], requester=acme.users["bob"])
        for _ in range(30)
    ]
    for i, ticket in enumerate(tickets):
        shift_clock(ticket, 50 if i % 2 else 61)  # half warnings, half breaches
    env = {"DATABASE_URL": conftest.test_database_url(), "SECRET_KEY": "test-only-secret-key", "LOG_LEVEL": "WARNING"}
    monitors = [
        subprocess.Popen(
            [sys.executable, "manage.py", "sla_monitor", "--once", "--batch", "5"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    claims = 0
    for monitor in monitors:
        out, err = monitor.communicate(timeout=120)
        assert monitor.returncode == 0, err.decode()[-2000:]
        # "Checked the SLA clocks: recorded 3 breaches and 2 warnings (…)."
        claims += sum(int(n) for n in re.findall(r"(\d+) (?:breach|breaches|warning|warnings)\b", out.decode()))
    # Both saw the same due tickets; a --once run with a small batch may leave some for later.
    while claimed := claim_due_sla_stages(batch=5):
        claims += claimed
    assert claims == 30  # 15 warnings + 15 breaches: no stage claimed twice
    notes = Notification.objects.filter(recipient=acme.users["alice"], type__in=["slaWarning", "slaBreach"])
    per_ticket = {}
    for note in notes:
        per_ticket.setdefault((note.ticket_id, note.type, note.metadata["slaType"]), []).append(note)
    assert all(len(v) == 1 for v in per_ticket.values()), {k: len(v) for k, v in per_ticket.items() if len(v) > 1}
    assert sum(1 for (_, type, _) in per_ticket if type == "slaWarning") == 15
    assert sum(1 for (_, type, _) in per_ticket if type == "slaBreach") == 15
    assert not Notification.objects.filter(recipient=acme.users["bob"], type__startswith="sla").exists()
