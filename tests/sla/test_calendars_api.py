"""SLA calendars and business-time clocks through the running server: the calendar API
(agents read, admins write, tenants apart, bad input refused whole), policies that name a
calendar, and `slaDueAt` / `slaState` on tickets, in list filters and in the live list."""

from datetime import timedelta

import httpx
import psycopg
import pytest

from sla.business_time import ten_years_after
from sla.models import Calendar, SlaPolicy, TicketSla
from sla.services import claim_due_sla_stages
from tests.builders import World
from tests.conftest import test_database_url
from tests.envelopes import assert_envelope
from tests.lockhold import InFlight, holding, wait_for_lock_waiters
from tests.sse_client import list_updates_url, open_stream
from tests.waiting import wait_for

API = "/api/v2/ticketing"
ALL_WEEK = [{"day": d, "start": "00:00", "end": "24:00"} for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")]
BERLIN_OFFICE = {
    "name": "Berlin office",
    "timeZone": "Europe/Berlin",
    "workingHours": [
        {"day": "mon", "start": "09:00", "end": "12:00"},
        {"day": "mon", "start": "13:00", "end": "17:00"},
        {"day": "fri", "start": "09:00", "end": "17:00"},
    ],
    "holidays": [{"date": "2026-12-25", "name": "Christmas", "yearly": True}],
}


def call(server, world: World, user: str, method: str, path: str, body=None) -> httpx.Response:
    return httpx.request(method, f"{server.url}{API}{path}", headers=world.headers(user), json=body, timeout=15)


def test_calendar_crud_roles_and_tenant_isolation(server, acme: World, globex: World):
    created = call(server, acme, "admin", "POST", "/sla/calendars", BERLIN_OFFICE)
    assert created.status_code == 201, created.text
    calendar = created.json()["data"]
    assert calendar["timeZone"] == "Europe/Berlin"
    assert calendar["workingHours"] == BERLIN_OFFICE["workingHours"]
    assert calendar["holidays"] == BERLIN_OFFICE["holidays"]
    one = f"/sla/calendars/{calendar['id']}"

    # Agents read; end users do not; only admins write.
    assert call(server, acme, "alice", "GET", one).json()["data"] == calendar
    assert [c["id"] for c in call(server, acme, "alice", "GET", "/sla/calendars").json()["data"]] == [calendar["id"]]
    assert call(server, acme, "bob", "GET", "/sla/calendars").status_code == 403
    assert call(server, acme, "alice", "POST", "/sla/calendars", {**BERLIN_OFFICE, "name": "x"}).status_code == 403
    assert call(server, acme, "alice", "PATCH", one, {"name": "Mine"}).status_code == 403
    assert call(server, acme, "alice", "DELETE", one).status_code == 403

    # The other tenant sees nothing and can touch nothing.
    assert call(server, globex, "admin", "GET", "/sla/calendars").json()["data"] == []
    for method in ("GET", "PATCH", "DELETE"):
        refused = call(server, globex, "admin", method, one, {"name": "stolen"} if method == "PATCH" else None)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "CALENDAR_NOT_FOUND"

    changed = call(server, acme, "admin", "PATCH", one, {"timeZone": "America/New_York", "holidays": []})
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["timeZone"] == "America/New_York" and changed.json()["data"]["holidays"] == []
    assert changed.json()["data"]["workingHours"] == BERLIN_OFFICE["workingHours"]

    # A policy names it; another tenant's calendar cannot be named; in use, it cannot go.
    policy = {"priority": "high", "responseMinutes": 60, "resolutionMinutes": 480, "calendar": calendar["id"]}
    saved = call(server, acme, "admin", "PUT", "/sla/policy", policy)
    assert saved.status_code == 200 and saved.json()["data"]["calendar"] == calendar["id"]
    foreign = call(server, globex, "admin", "PUT", "/sla/policy", policy)
    assert foreign.status_code == 400 and "calendar" in foreign.json()["error"]["details"]
    in_use = call(server, acme, "admin", "DELETE", one)
    assert in_use.status_code == 409 and in_use.json()["error"]["code"] == "CALENDAR_IN_USE"
    call(server, acme, "admin", "PUT", "/sla/policy", {**policy, "calendar": None})
    assert call(server, acme, "admin", "DELETE", one).status_code == 204
    assert not Calendar.objects.exists()


def test_a_calendar_patch_that_changes_nothing_keeps_its_updated_at(server, acme: World):
    calendar = call(server, acme, "admin", "POST", "/sla/calendars", BERLIN_OFFICE).json()["data"]
    one = f"/sla/calendars/{calendar['id']}"
    for unchanged in (
        {},
        {"name": BERLIN_OFFICE["name"], "timeZone": BERLIN_OFFICE["timeZone"]},
        # The holidays as they are (it moved updatedAt): as sent, and as the API shows them.
        {"holidays": BERLIN_OFFICE["holidays"]},
        {"holidays": calendar["holidays"], "workingHours": calendar["workingHours"]},
    ):
        answered = call(server, acme, "admin", "PATCH", one, unchanged)
        assert answered.status_code == 200 and answered.json()["data"]["updatedAt"] == calendar["updatedAt"], unchanged
    renamed = call(server, acme, "admin", "PATCH", one, {"name": "Berlin HQ"}).json()["data"]
    assert renamed["updatedAt"] > calendar["updatedAt"]
    holiday = {"date": "2026-12-26", "name": "Boxing Day", "yearly": True}
    more = call(server, acme, "admin", "PATCH", one, {"holidays": [*calendar["holidays"], holiday]}).json()["data"]
    assert more["updatedAt"] > renamed["updatedAt"] and more["holidays"][-1] == holiday
    renamed_again = call(server, acme, "admin", "PATCH", one, {"holidays": [{**holiday, "name": "St Stephen"}]})
    assert renamed_again.json()["data"]["holidays"] == [{**holiday, "name": "St Stephen"}]


def test_a_policy_resolved_before_its_first_response_is_400_and_saves_nothing(server, acme: World):
    policy = {"priority": "high", "responseMinutes": 60, "resolutionMinutes": 30}
    refused = call(server, acme, "admin", "PUT", "/sla/policy", policy)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "INVALID_BODY" and "resolutionMinutes" in error["details"], error
    assert not SlaPolicy.objects.exists()
    # Equal is fine: resolved with the first response.
    assert call(server, acme, "admin", "PUT", "/sla/policy", {**policy, "resolutionMinutes": 60}).status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"timeZone": "Mars/Olympus_Mons"}, "timeZone"),
        ({"timeZone": ""}, "timeZone"),
        # Debian's zoneinfo folder has `localtime` (a link to the host's /etc/localtime),
        # and zoneinfo.available_timezones() lists it: not an IANA name.
        ({"timeZone": "localtime"}, "timeZone"),
        (
            {
                "workingHours": [
                    {"day": "mon", "start": "09:00", "end": "12:00"},
                    {"day": "mon", "start": "11:00", "end": "17:00"},
                ]
            },
            "workingHours",
        ),
        ({"workingHours": [{"day": "mon", "start": "17:00", "end": "09:00"}]}, "workingHours"),
        ({"workingHours": [{"day": "mon", "start": "9am", "end": "17:00"}]}, "workingHours"),
        ({"workingHours": [{"day": "someday", "start": "09:00", "end": "17:00"}]}, "workingHours"),
        ({"workingHours": []}, "workingHours"),
        ({"holidays": [{"date": "2026-02-30"}]}, "holidays"),
        ({"holidays": [{"date": "25.12.2026"}]}, "holidays"),
        # ISO 8601 too, but not YYYY-MM-DD (Python 3.11's date.fromisoformat reads them).
        ({"holidays": [{"date": "20261225"}]}, "holidays"),
        ({"holidays": [{"date": "2026-W52-5"}]}, "holidays"),
        ({"holidays": [{"date": "2026-12-25"}, {"date": "2026-12-25", "yearly": True}]}, "holidays"),
        ({"holidays": [{"date": "2026-12-25", "yearly": "yes"}]}, "holidays"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_calendars_are_400_in_the_envelope_and_change_nothing(server, acme: World, change, field):
    refused = call(server, acme, "admin", "POST", "/sla/calendars", {**BERLIN_OFFICE, **change})
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["success"] is False and body["error"]["code"] == "INVALID_BODY"
    assert field in body["error"]["details"]
    assert not Calendar.objects.exists()


def test_ticket_carries_its_business_time_due_and_state_through_pause_and_resume(server, acme: World):
    calendar = call(server, acme, "admin", "POST", "/sla/calendars", {**BERLIN_OFFICE, "workingHours": ALL_WEEK})
    policy = {"priority": "high", "responseMinutes": 60, "resolutionMinutes": 480}
    call(server, acme, "admin", "PUT", "/sla/policy", {**policy, "calendar": calendar.json()["data"]["id"]})
    ticket = call(server, acme, "alice", "POST", "/ticket", {"subject": "VPN down", "priority": "high"}).json()["data"]
    sla = TicketSla.objects.get(pk=ticket["id"])
    assert ticket["slaState"] == "ok"
    assert ticket["slaDueAt"] == sla.response_due.isoformat(timespec="microseconds").replace("+00:00", "Z")

    held = call(server, acme, "alice", "PATCH", f"/ticket/{ticket['id']}", {"status": "on_hold"}).json()["data"]
    assert held["slaState"] == "paused" and held["slaDueAt"] == ticket["slaDueAt"]
    paused_list = call(
        server,
        acme,
        "alice",
        "POST",
        "/ticket/list",
        {"filter": {"op": "AND", "operand": [{"id": "1", "op": "EQ", "column": "slaState", "operand": "paused"}]}},
    ).json()["data"]
    assert [t["id"] for t in paused_list["tickets"]] == [ticket["id"]]

    # The monitor leaves a paused clock alone, however late it is.
    assert TicketSla.objects.get(pk=ticket["id"]).paused_at is not None
    assert claim_due_sla_stages(now=sla.resolution_due + timedelta(days=1)) == 0

    resumed = call(server, acme, "alice", "PATCH", f"/ticket/{ticket['id']}", {"status": "open"}).json()["data"]
    assert resumed["slaState"] == "ok" and resumed["slaDueAt"] > ticket["slaDueAt"]  # moved by the pause

    # The first agent comment the requester sees meets the response target: next due is resolution.
    call(server, acme, "carol", "POST", f"/ticket/{ticket['id']}/comments", {"body": "On it"})
    after = call(server, acme, "alice", "GET", f"/ticket/{ticket['id']}").json()["data"]
    sla = TicketSla.objects.get(pk=ticket["id"])
    assert after["slaDueAt"] == sla.resolution_due.isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_a_target_the_calendar_cannot_reach_within_ten_years_still_lets_tickets_be_created_and_changed(
    server, acme: World
):
    # 8 working hours a week and the largest resolution target: 21 years of calendar time,
    # past the span a due time is searched in. Both settings are valid; tickets must not fail.
    saturday = {
        "name": "Saturday desk",
        "timeZone": "Europe/Berlin",
        "workingHours": [{"day": "sat", "start": "09:00", "end": "17:00"}],
    }
    calendar = call(server, acme, "admin", "POST", "/sla/calendars", saturday)
    assert calendar.status_code == 201, calendar.text
    policy = {
        "priority": "low",
        "responseMinutes": 60,
        "resolutionMinutes": 525_600,
        "calendar": calendar.json()["data"]["id"],
    }
    assert call(server, acme, "admin", "PUT", "/sla/policy", policy).status_code == 200

    created = call(server, acme, "bob", "POST", "/ticket", {"subject": "Printer", "priority": "low"})
    assert created.status_code == 201, created.text
    ticket = created.json()["data"]
    sla = TicketSla.objects.get(pk=ticket["id"])
    assert ticket["slaState"] == "ok" and sla.response_due < sla.resolution_due
    # As good as never: ten years after the clock starts (docs/api.md; it was 3,660 days).
    assert sla.resolution_due == ten_years_after(sla.ticket.created_at)

    other = call(server, acme, "bob", "POST", "/ticket", {"subject": "Screen", "priority": "high"}).json()["data"]
    changed = call(server, acme, "alice", "PATCH", f"/ticket/{other['id']}", {"priority": "low"})
    assert changed.status_code == 200, changed.text
    assert TicketSla.objects.filter(pk=other["id"]).exists()
    for status in ("on_hold", "open"):  # paused and resumed
        assert call(server, acme, "alice", "PATCH", f"/ticket/{ticket['id']}", {"status": status}).status_code == 200


def test_a_ticket_turning_warning_and_breached_by_time_alone_updates_the_live_list(server, acme: World):
    SlaPolicy.objects.create(
        tenant=acme.tenant, priority="urgent", response_minutes=60, resolution_minutes=600, warning_percent=50
    )
    ticket = call(server, acme, "alice", "POST", "/ticket", {"subject": "Outage", "priority": "urgent"}).json()["data"]
    sla = TicketSla.objects.get(pk=ticket["id"])
    body = {
        "top": 10,
        "offset": 0,
        "filter": {
            "op": "AND",
            "operand": [{"id": "w", "op": "IN", "column": "slaState", "operand": ["warning", "breached"]}],
        },
    }
    with open_stream("POST", list_updates_url(server.url), headers=acme.headers("alice"), json_body=body) as stream:
        assert stream.next().event == "connected"
        assert stream.next().data["tickets"] == []
        # No write to the ticket: the monitor alone finds the warning, then the breach.
        assert claim_due_sla_stages(now=sla.response_warn_at + timedelta(seconds=1)) == 1
        entered = stream.next()
        assert entered.event == "created" and entered.data["reason"] == "scope"
        assert entered.data["id"] == ticket["id"] and entered.data["slaState"] == "warning"
        assert claim_due_sla_stages(now=sla.response_due + timedelta(seconds=1)) == 1
        breached = stream.next()
        assert breached.event == "updated" and breached.data["slaState"] == "breached"
        assert breached.data["changes"]["slaState"] == {"from": "warning", "to": "breached"}
    assert claim_due_sla_stages(now=sla.response_due + timedelta(seconds=2)) == 0


def test_a_priority_lowered_after_a_breach_shows_the_new_targets_state_and_is_breached_again_at_them(
    server, acme: World
):
    """A ticket breached at `urgent` and lowered to `low` stayed `breached` with a due time
    hours ahead (the dashboard showed Breached beside a countdown), and its new targets were
    never warned of nor breached: the old stamps stood for them."""
    SlaPolicy.objects.create(
        tenant=acme.tenant, priority="urgent", response_minutes=1, resolution_minutes=2, warning_percent=50
    )
    SlaPolicy.objects.create(
        tenant=acme.tenant, priority="low", response_minutes=600, resolution_minutes=1500, warning_percent=50
    )
    ticket = call(server, acme, "bob", "POST", "/ticket", {"subject": "Outage", "priority": "urgent"}).json()["data"]
    sla = TicketSla.objects.get(pk=ticket["id"])
    assert claim_due_sla_stages(now=sla.resolution_due + timedelta(seconds=1)) == 2  # both breached
    assert call(server, acme, "alice", "GET", f"/ticket/{ticket['id']}").json()["data"]["slaState"] == "breached"

    lowered = call(server, acme, "alice", "PATCH", f"/ticket/{ticket['id']}", {"priority": "low"})
    assert lowered.status_code == 200, lowered.text
    data = lowered.json()["data"]
    sla.refresh_from_db()
    assert data["slaDueAt"] == sla.response_due.isoformat().replace("+00:00", "Z")
    assert data["slaState"] == "ok"
    shown = call(server, acme, "alice", "GET", f"/ticket/{ticket['id']}").json()["data"]
    assert (shown["slaDueAt"], shown["slaState"]) == (data["slaDueAt"], "ok")

    # The new targets are warned of and breached at their own times, once each.
    assert claim_due_sla_stages(now=sla.response_warn_at + timedelta(seconds=1)) == 1
    assert claim_due_sla_stages(now=sla.response_due + timedelta(seconds=1)) == 1
    assert claim_due_sla_stages(now=sla.response_due + timedelta(seconds=2)) == 0
    shown = call(server, acme, "alice", "GET", f"/ticket/{ticket['id']}").json()["data"]
    assert shown["slaState"] == "breached"


def test_a_priority_without_a_policy_keeps_the_clock_and_one_with_a_policy_starts_it(server, acme: World):
    # docs/api.md, "SLAs on business time": a commitment already made is never erased by
    # a move to a priority the tenant has no policy for.
    SlaPolicy.objects.filter(tenant=acme.tenant).delete()
    policy = {"priority": "high", "responseMinutes": 60, "resolutionMinutes": 480}
    assert call(server, acme, "admin", "PUT", "/sla/policy", policy).status_code == 200
    ticket = call(server, acme, "alice", "POST", "/ticket", {"subject": "VPN down", "priority": "high"}).json()["data"]
    assert ticket["slaDueAt"] is not None
    lowered = call(server, acme, "alice", "PATCH", f"/ticket/{ticket['id']}", {"priority": "low"})
    assert lowered.status_code == 200, lowered.text
    assert (lowered.json()["data"]["slaDueAt"], lowered.json()["data"]["slaState"]) == (
        ticket["slaDueAt"],
        ticket["slaState"],
    )
    unclocked = call(server, acme, "alice", "POST", "/ticket", {"subject": "Mouse", "priority": "low"}).json()["data"]
    assert unclocked["slaDueAt"] is None
    raised = call(server, acme, "alice", "PATCH", f"/ticket/{unclocked['id']}", {"priority": "high"})
    assert raised.status_code == 200, raised.text
    assert raised.json()["data"]["slaDueAt"] is not None


@pytest.fixture
def held_calendar(server_without_write_slots, acme: World) -> tuple[object, str]:
    created = call(server_without_write_slots, acme, "admin", "POST", "/sla/calendars", BERLIN_OFFICE)
    assert created.status_code == 201, created.text
    return server_without_write_slots, created.json()["data"]["id"]


def test_a_change_of_a_calendar_deleted_while_it_waited_is_404(held_calendar, acme: World):
    """The PATCH read the calendar, then waited for its row while a DELETE held it and
    committed (it was a 500, `DoesNotExist`)."""
    server, calendar_id = held_calendar
    with psycopg.connect(test_database_url()) as conn:
        conn.execute("SELECT 1 FROM sla_calendar WHERE id = %s FOR UPDATE", [calendar_id])
        change = InFlight(lambda: call(server, acme, "admin", "PATCH", f"/sla/calendars/{calendar_id}", {"name": "x"}))
        wait_for_lock_waiters(1)
        conn.execute("DELETE FROM sla_holiday WHERE calendar_id = %s", [calendar_id])
        conn.execute("DELETE FROM sla_calendar WHERE id = %s", [calendar_id])
        conn.commit()
    assert_envelope(change.answer(), 404, "CALENDAR_NOT_FOUND")


@pytest.mark.parametrize("first", ["policy", "deletion"])
def test_a_policy_naming_a_calendar_and_its_deletion_at_once(held_calendar, acme: World, first: str):
    """Whichever takes the calendar first wins, and the other is told: the deletion sees
    the new policy (409), or the policy finds the calendar gone (400). Before, the
    deletion counted no policy while one was being written (the policy's foreign key
    then failed at COMMIT, or the deletion hit it: a 500 either way)."""
    server, calendar_id = held_calendar
    policy = {"priority": "high", "responseMinutes": 60, "resolutionMinutes": 480, "calendar": calendar_id}

    def put_policy() -> httpx.Response:
        return call(server, acme, "admin", "PUT", "/sla/policy", policy)

    def delete() -> httpx.Response:
        return call(server, acme, "admin", "DELETE", f"/sla/calendars/{calendar_id}")

    with holding("SELECT 1 FROM sla_calendar WHERE id = %s FOR UPDATE", [calendar_id]):
        one = InFlight(put_policy if first == "policy" else delete)
        wait_for_lock_waiters(1)
        other = InFlight(delete if first == "policy" else put_policy)
        wait_for_lock_waiters(2)
    saved, deleted = (one.answer(), other.answer()) if first == "policy" else (other.answer(), one.answer())

    if first == "policy":
        assert saved.status_code == 200, saved.text
        assert_envelope(deleted, 409, "CALENDAR_IN_USE")
        assert SlaPolicy.objects.get(tenant=acme.tenant, priority="high").calendar_id is not None
    else:
        assert deleted.status_code == 204, deleted.text
        assert_envelope(saved, 400, "INVALID_BODY")
        assert "calendar" in saved.json()["error"]["details"]
        assert not SlaPolicy.objects.filter(tenant=acme.tenant, priority="high").exists()
        assert not Calendar.objects.filter(pk=calendar_id).exists()


@pytest.mark.parametrize("other", ["create", "rename"])
def test_concurrent_calendars_of_one_name_are_one_saved_and_the_other_409(server_without_write_slots, acme, other):
    """Two admins create (or one renames to) the same name at once: both found the name
    free, and the unique constraint failed the later one with a 500 (IntegrityError)."""
    server = server_without_write_slots
    renamed = None
    # The admin's user row is refreshed on a first request: done here, so neither request
    # below waits for the other's refresh instead of reaching the name.
    assert call(server, acme, "admin", "GET", "/sla/calendars").status_code == 200
    if other == "rename":
        renamed = call(server, acme, "admin", "POST", "/sla/calendars", {**BERLIN_OFFICE, "name": "Old"}).json()["data"]

    def create() -> httpx.Response:
        return call(server, acme, "admin", "POST", "/sla/calendars", BERLIN_OFFICE)

    def rename() -> httpx.Response:
        return call(server, acme, "admin", "PATCH", f"/sla/calendars/{renamed['id']}", {"name": BERLIN_OFFICE["name"]})

    # An uncommitted row of that name, from outside: both requests find the name free
    # and wait at the unique index, then race for it once the row is gone.
    with holding(
        "INSERT INTO sla_calendar (id, tenant_id, name, time_zone, working_hours, created_at, updated_at)"
        " VALUES (gen_random_uuid(), %s, %s, 'UTC', '{}', now(), now())",
        [str(acme.tenant.id), BERLIN_OFFICE["name"]],
    ) as holder:
        first = InFlight(create)
        second = InFlight(create if other == "create" else rename)
        wait_for_blocked_by(holder.info.backend_pid, 2)
    answers = [first.answer(), second.answer()]
    assert sorted(a.status_code for a in answers) in ([201, 409], [200, 409]), [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        assert_envelope(refused, 409, "CALENDAR_EXISTS")
    assert Calendar.objects.filter(tenant=acme.tenant, name=BERLIN_OFFICE["name"]).count() == 1


def wait_for_blocked_by(pid: int, count: int) -> None:
    """Until `count` sessions wait for session `pid` (not merely for some lock)."""
    with psycopg.connect(test_database_url(), autocommit=True) as conn:

        def enough() -> bool:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
            return conn.execute(sql, [pid]).fetchone()[0] >= count

        wait_for(enough, timeout=20, interval=0.05, message=f"fewer than {count} requests waited for session {pid}")
