"""The long operator commands (export, replay, prune, load_demo): a progress bar when
their stderr is a terminal, only a one-line summary when it is not (cron, pipes, logs)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from events.ids import first_event_id_at
from events.models import Event
from tests.builders import World
from tests.events.test_partner_feed import add_events

pytestmark = pytest.mark.django_db


class Terminal(StringIO):
    """What a command writes to an interactive terminal."""

    def isatty(self) -> bool:
        return True


def test_export_off_a_terminal_says_only_how_many_it_wrote(acme: World, tmp_path: Path):
    add_events(acme, 1_201)
    err = StringIO()
    call_command("export_events", tenant="acme", output=str(tmp_path / "x.jsonl"), batch=500, stderr=err)
    assert err.getvalue() == "exported 1201 events of tenant acme\n"
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 1_201


def test_export_on_a_terminal_draws_a_bar_then_the_summary(acme: World, tmp_path: Path):
    add_events(acme, 1_000)
    err = Terminal()
    call_command("export_events", tenant="acme", output=str(tmp_path / "x.jsonl"), batch=250, stderr=err)
    drawn = err.getvalue()
    assert "\r" in drawn and "export" in drawn and "1000/1000" in drawn
    assert drawn.endswith("exported 1000 events of tenant acme\n")


def test_replay_off_a_terminal_prints_one_line(acme: World):
    add_events(acme, 450)
    out, err = StringIO(), StringIO()
    call_command("replay_events", tenant="acme", batch=200, stdout=out, stderr=err)
    assert out.getvalue() == "replayed 450 events of tenant acme\n"
    assert err.getvalue() == ""


def test_prune_off_a_terminal_prints_one_line_and_one_event_reads_singular(acme: World):
    add_events(acme, 3)
    old_id = first_event_id_at(timezone.now() - timedelta(days=40))
    Event.objects.create(
        id=old_id, tenant=acme.tenant, type="tickets.ticket.created", occurred_at=timezone.now(), payload={}
    )
    out, err = StringIO(), StringIO()
    call_command("prune_events", older_than="30d", stdout=out, stderr=err)
    assert out.getvalue().startswith("deleted 1 event older than ")
    assert out.getvalue().count("\n") == 1
    assert err.getvalue() == ""
    assert Event.objects.filter(tenant=acme.tenant).count() == 3


def test_load_demo_off_a_terminal_summarises_and_its_issuer_follows_the_base_url(settings):
    from tenants.models import AllowedOrigin, Realm

    settings.DEBUG = True
    out, err = StringIO(), StringIO()
    call_command("load_demo", tickets=3, base_url="http://127.0.0.1:8123", stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo tenant ready: 3 new tickets, id=")
    assert err.getvalue() == ""
    realm = Realm.objects.get(tenant__slug="demo", name="demo")
    assert realm.issuer == "http://127.0.0.1:8123/realms/demo"
    assert AllowedOrigin.objects.filter(tenant=realm.tenant, origin="http://127.0.0.1:8123").exists()

    # Served on another port later: the issuer moves with it; without --base-url it stays.
    again = StringIO()
    call_command("load_demo", tickets=3, base_url="http://127.0.0.1:8124/", stdout=again, stderr=StringIO())
    assert again.getvalue().splitlines()[0] == "3 tickets already there"
    call_command("load_demo", tickets=3, stdout=StringIO(), stderr=StringIO())
    realm.refresh_from_db()
    assert realm.issuer == "http://127.0.0.1:8124/realms/demo"


def test_load_demo_on_a_terminal_draws_a_bar(settings):
    settings.DEBUG = True
    err = Terminal()
    call_command("load_demo", tickets=2, stdout=StringIO(), stderr=err)
    assert "demo tickets" in err.getvalue() and "2/2" in err.getvalue()
