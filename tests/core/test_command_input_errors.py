"""Operator input the commands could not work with ends in a usage error naming the
option (or a one-line error), never a traceback or a silent "0": `prune_events
--older-than 99999999d` (OverflowError), `--tenant nosuch` ("would delete 0"),
`create_api_key --name ""` (a nameless key) or a 500-character name (DataError),
`replay_events --occurred-after 2026-12-05` (a naive-datetime RuntimeWarning), `--type
nosuch.type` (0 events, as if none had happened), and a database that cannot be reached
(`replay_events --dry-run`, `sla_monitor --once`: tracebacks)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from events.ids import first_event_id_at, new_event_id
from events.models import Event
from tenants.models import ApiKey
from tests.builders import World
from tests.conftest import ROOT


def old_event(world: World, days: int) -> Event:
    moment = timezone.now() - timedelta(days=days)
    return Event.objects.create(
        id=first_event_id_at(moment), tenant=world.tenant, type="tickets.ticket.created", occurred_at=moment, payload={}
    )


@pytest.mark.parametrize("value", ["99999999d", "999999999999999999999d", "99999999999h", "30x", "-1d", "d"])
def test_prune_refuses_an_age_it_cannot_work_with(value: str):
    with pytest.raises(CommandError, match="argument --older-than: "):
        call_command("prune_events", "--older-than", value)


@pytest.mark.django_db
def test_prune_says_an_unknown_tenant_and_takes_a_tenant_id(acme: World, globex: World):
    with pytest.raises(CommandError, match=r"No tenant 'nosuch'\."):
        call_command("prune_events", "--tenant", "nosuch", "--dry-run", stdout=StringIO())
    old_event(acme, 40)
    kept = old_event(globex, 41)
    out = StringIO()
    call_command("prune_events", "--tenant", str(acme.tenant.id), stdout=out)
    assert out.getvalue().startswith("deleted 1 event older than ")
    assert list(Event.objects.filter(id__lt=first_event_id_at(timezone.now() - timedelta(days=30)))) == [kept]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "says"), [("", "not empty"), ("   ", "not empty"), ("k" * 500, "at most 200")])
def test_create_api_key_refuses_an_empty_or_too_long_name(acme: World, name: str, says: str):
    with pytest.raises(CommandError, match=f"argument --name: .*{says}"):
        call_command("create_api_key", "--tenant", "acme", "--name", name, stdout=StringIO(), stderr=StringIO())
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_create_api_key_takes_the_tenant_slug_or_id_and_says_an_unknown_one(acme: World):
    call_command(
        "create_api_key", "--tenant", str(acme.tenant.id), "--name", " crm ", stdout=StringIO(), stderr=StringIO()
    )
    assert ApiKey.objects.get(tenant=acme.tenant).name == "crm"
    with pytest.raises(CommandError, match=r"No tenant 'nosuch'\."):
        call_command("create_api_key", "--tenant", "nosuch", "--name", "crm", stdout=StringIO(), stderr=StringIO())


@pytest.mark.django_db
def test_replay_reads_a_date_or_a_time_without_offset_as_utc(acme: World):
    for when in ("2026-12-04T23:30:00Z", "2026-12-05T00:30:00Z", "2026-12-05T02:30:00Z"):
        moment = datetime.fromisoformat(when)
        Event.objects.create(
            id=new_event_id(), tenant=acme.tenant, type="tickets.ticket.created", occurred_at=moment, payload={}
        )
    counts = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for value in ("2026-12-05", "2026-12-05T01:00", "2026-12-05T01:00+01:00"):
            out = StringIO()
            call_command("replay_events", "--tenant", "acme", "--occurred-after", value, "--dry-run", stdout=out)
            counts[value] = out.getvalue().split(" of tenant")[0]
    assert counts == {
        "2026-12-05": "would replay 2 events",
        "2026-12-05T01:00": "would replay 1 event",
        "2026-12-05T01:00+01:00": "would replay 2 events",
    }


@pytest.mark.parametrize(("option", "value"), [("--occurred-after", "yesterday"), ("--occurred-after", "2026-02-30")])
@pytest.mark.parametrize("command", ["replay_events", "export_events"])
def test_event_commands_refuse_a_time_they_cannot_read(command: str, option: str, value: str):
    with pytest.raises(CommandError, match=f"argument {option}: .*not an ISO 8601"):
        call_command(command, "--tenant", "acme", option, value)


@pytest.mark.parametrize("command", ["replay_events", "export_events"])
def test_event_commands_refuse_an_unknown_event_type(command: str):
    with pytest.raises(CommandError, match=r"argument --type: 'nosuch\.type' is not an event type; one of: .*tickets"):
        call_command(command, "--tenant", "acme", "--type", "tickets.ticket.created", "--type", "nosuch.type")


@pytest.mark.django_db
def test_replay_takes_a_known_event_type(acme: World):
    out = StringIO()
    call_command("replay_events", "--tenant", "acme", "--type", "tickets.ticket.sla_breached", "--dry-run", stdout=out)
    assert out.getvalue().startswith("would replay 0 events of tenant acme")


def without_database(*command: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # Nothing listens on port 1: every connection is refused at once.
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere",
        "DB_POOL_TIMEOUT_SECONDS": "1",
        "SECRET_KEY": "t",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "command", [("replay_events", "--tenant", "demo", "--dry-run"), ("sla_monitor", "--once")], ids=lambda c: c[0]
)
def test_an_unreachable_database_is_one_line_and_a_failing_exit(command: tuple[str, ...]):
    result = without_database(*command)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    # Above it, only the log lines of the connection attempts (JSON, on stderr too).
    said = [line for line in result.stderr.splitlines() if not line.startswith('{"time"')]
    assert len(said) == 1, result.stderr
    assert said[0].startswith("CommandError: The database is unavailable")
    assert "run the command again" in said[0] and "Send the same request" not in said[0]
