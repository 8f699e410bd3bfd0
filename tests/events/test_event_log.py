"""The event log: written with the change, announced only after commit, ordered by commit."""

import asyncio
import json
import threading
import time
import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import connection, transaction
from ulid import ULID

from core.aio import serving_loop
from events.announcements import CARRIED_MAX_MESSAGE_BYTES, announce_commit, tenant_group
from events.ids import new_event_id
from events.models import Event
from events.recording import record_event, unit_of_work
from tenants.callers import caller_for_user
from tests.builders import World
from ticketing import services
from ticketing.models import Ticket


class Listener:
    """A channel in a tenant's announcement group; lives on one event loop (the layer's
    queues are bound to the loop that first uses them), so a test runs as one scenario."""

    def __init__(self, tenant_id: uuid.UUID) -> None:
        self.tenant_id = tenant_id
        self.layer = get_channel_layer()
        self.channel = ""

    async def start(self) -> "Listener":
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(tenant_group(self.tenant_id), self.channel)
        return self

    async def receive_within(self, seconds: float) -> dict | None:
        try:
            return await asyncio.wait_for(self.layer.receive(self.channel), seconds)
        except TimeoutError:
            return None


@pytest.mark.django_db
class TestRecording:
    def test_a_ticket_change_writes_one_event_with_exact_changes(self, acme: World):
        alice = caller_for_user(acme.users["alice"])
        ticket = services.create_ticket(caller=alice, data={"subject": "Disk full", "priority": "low"})
        services.update_ticket(caller=alice, ticket=ticket, data={"priority": "high", "assignee": acme.users["carol"]})
        created, assigned = Event.objects.filter(ticket_id=ticket.id).order_by("id")
        assert created.type == "tickets.ticket.created" and created.changes is None
        assert created.payload["ticket"]["subject"] == "Disk full"
        assert set(created.payload) == {"ticket", "parent_ticket", "customer"}
        assert assigned.type == "tickets.ticket.assigned"
        assert assigned.changes["priority"] == {"from": "low", "to": "high"}
        assert assigned.changes["assignee"] == {
            "from": None,
            "to": {"id": str(acme.users["carol"].id), "name": "Carol"},
        }
        assert set(assigned.changes) == {"priority", "assignee", "updatedAt"}
        assert assigned.actor_id == acme.users["alice"].id

    def test_status_changes_get_their_lifecycle_type(self, acme: World):
        alice = caller_for_user(acme.users["alice"])
        ticket = services.create_ticket(caller=alice, data={"subject": "x"})
        for status in ("closed", "open", "cancelled"):
            services.update_ticket(caller=alice, ticket=ticket, data={"status": status})
        types = list(Event.objects.filter(ticket_id=ticket.id).order_by("id").values_list("type", flat=True))
        assert types == [
            "tickets.ticket.created",
            "tickets.ticket.closed",
            "tickets.ticket.reopened",
            "tickets.ticket.cancelled",
        ]

    def test_a_save_without_changes_records_nothing(self, acme: World):
        alice = caller_for_user(acme.users["alice"])
        ticket = services.create_ticket(caller=alice, data={"subject": "x"})
        services.update_ticket(caller=alice, ticket=ticket, data={"subject": "x"})
        assert Event.objects.filter(ticket_id=ticket.id).count() == 1

    def test_a_rolled_back_change_leaves_no_event(self, acme: World):
        alice = caller_for_user(acme.users["alice"])
        with pytest.raises(RuntimeError), transaction.atomic():
            services.create_ticket(caller=alice, data={"subject": "never"})
            raise RuntimeError("boom")
        assert Ticket.objects.count() == 0
        assert Event.objects.count() == 0

    def test_support_requests_are_marked_on_their_events(self, acme: World):
        support = caller_for_user(acme.users["admin"], support=True)
        services.create_ticket(caller=support, data={"subject": "on behalf of a customer"})
        assert Event.objects.get().support is True


@pytest.mark.django_db
def test_announced_only_after_commit(acme: World, django_capture_on_commit_callbacks):
    alice = caller_for_user(acme.users["alice"])

    def change() -> list:
        # The test runs inside a transaction that never commits: on_commit callbacks are
        # captured instead of run, exactly what a not-yet-committed change looks like.
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            services.create_ticket(caller=alice, data={"subject": "x"})
        return callbacks

    async def scenario() -> None:
        listener = await Listener(acme.tenant.id).start()
        callbacks = await sync_to_async(change)()
        assert len(callbacks) == 1
        assert await listener.receive_within(0.3) is None  # nothing until the commit
        await sync_to_async(callbacks[0])()
        message = await listener.receive_within(2)
        assert message["type"] == "log.committed"
        assert message["id"] == message["newest"] == await sync_to_async(lambda: Event.objects.get().ulid)()
        # It carries the commit's event, after nothing (the tenant's first).
        [carried] = [json.loads(text) for text in message["carried"]]
        assert carried["before"] is None
        assert [item["api"]["id"] for item in carried["events"]] == [message["id"]]

    async_to_sync(scenario)()


def test_a_served_request_hands_its_announcement_to_the_event_loop():
    """A commit in the thread of a request served over ASGI does not wait for the channel
    layer: the thread finds the loop it works for, and the loop sends the message."""
    tenant_id, event_id = uuid.uuid4(), new_event_id()

    async def scenario() -> None:
        listener = await Listener(tenant_id).start()
        found = await sync_to_async(serving_loop)()
        assert found is asyncio.get_running_loop()
        await sync_to_async(announce_commit)(tenant_id, event_id)
        message = await listener.receive_within(2)
        ulid = str(ULID.from_uuid(event_id))
        assert message == {"type": "log.committed", "tenant": str(tenant_id), "id": ulid, "newest": ulid}

    async_to_sync(scenario)()
    assert serving_loop() is None  # a plain thread (management command) sends at once


def test_announcements_waiting_on_the_loop_are_merged_per_tenant_keeping_the_oldest_id():
    first, second = uuid.uuid4(), uuid.uuid4()
    ids = [new_event_id() for _ in range(5)]

    async def scenario() -> None:
        one, two = await Listener(first).start(), await Listener(second).start()
        # Five commits of `first` (the last two reaching the loop in the other order, the
        # fourth too big to carry) and one of `second`, before the loop sends anything.
        for n in (0, 1, 2, 4, 3):
            announce_commit(first, ids[n], carried=None if n == 3 else f"commit {n}")
        announce_commit(second, ids[-1])
        merged = await one.receive_within(2)
        assert merged["id"] == str(ULID.from_uuid(ids[0]))  # the first to reach the loop
        assert merged["newest"] == str(ULID.from_uuid(ids[4]))
        assert merged["carried"] == ["commit 0", "commit 1", "commit 2", "commit 4"]
        assert (await two.receive_within(2))["id"] == str(ULID.from_uuid(ids[-1]))
        assert await one.receive_within(0.3) is None  # one message for the five

    async_to_sync(scenario)()


def test_a_merged_announcement_carries_commits_up_to_its_bound_and_names_the_newest_id():
    tenant_id = uuid.uuid4()
    ids = [new_event_id() for _ in range(12)]
    big = "x" * (CARRIED_MAX_MESSAGE_BYTES // 10)

    async def scenario() -> None:
        listener = await Listener(tenant_id).start()
        for event_id in ids:
            announce_commit(tenant_id, event_id, carried=big)
        message = await listener.receive_within(2)
        assert len(message["carried"]) == 10  # the last two are left to the log
        assert message["newest"] == str(ULID.from_uuid(ids[-1]))

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
class TestBroadcast:
    def test_recording_outside_a_transaction_is_refused(self, acme: World):
        with pytest.raises(RuntimeError):
            record_event(tenant=acme.tenant, type="tickets.ticket.updated", payload={})
        assert Event.objects.count() == 0

    def test_rollback_announces_nothing(self, acme: World):
        alice = caller_for_user(acme.users["alice"])

        def change() -> None:
            with pytest.raises(RuntimeError), transaction.atomic():
                services.create_ticket(caller=alice, data={"subject": "x"})
                raise RuntimeError

        async def scenario() -> None:
            listener = await Listener(acme.tenant.id).start()
            await sync_to_async(change)()
            assert await listener.receive_within(0.5) is None

        async_to_sync(scenario)()
        assert Event.objects.count() == 0

    def test_an_idle_receive_survives_more_than_ten_seconds(self, acme: World):
        # channels-redis + newer redis-py used to cut idle blocking receives after 5 s.
        async def scenario() -> dict | None:
            listener = await Listener(acme.tenant.id).start()

            async def late_send() -> None:
                await asyncio.sleep(11)
                await listener.layer.group_send(tenant_group(acme.tenant.id), {"type": "log.committed", "id": "x"})

            sender = asyncio.create_task(late_send())
            message = await listener.receive_within(20)
            await sender
            return message

        started = time.monotonic()
        message = async_to_sync(scenario)()
        assert message is not None and message["id"] == "x"
        assert time.monotonic() - started >= 10.5


# Concurrent writers while a partner pages the log with after_id (every committed event
# seen once, in order) run through the real server, on shared tickets, with the other
# many-writer tests: tests/ticketing/test_concurrent_writers.py.


@pytest.mark.django_db(transaction=True)
def test_ticket_numbers_stay_unique_under_concurrent_creation(acme: World):
    numbers: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        try:
            caller = caller_for_user(acme.users["alice"])
            for _ in range(10):
                ticket = services.create_ticket(caller=caller, data={"subject": "race"})
                with lock:
                    numbers.append(ticket.number)
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(numbers) == 40 and len(set(numbers)) == 40


@pytest.mark.django_db
class TestEventsApi:
    URL = "/v2/system/events"

    def make_events(self, acme: World, count: int) -> list[Event]:
        alice = caller_for_user(acme.users["alice"])
        for i in range(count):
            services.create_ticket(caller=alice, data={"subject": f"t{i}"})
        return list(Event.objects.order_by("id"))

    def test_pages_oldest_first_with_after_id_and_echoes_the_query(self, api, acme: World):
        events = self.make_events(acme, 5)
        first = api.get(self.URL, {"limit": 2}, headers=acme.headers("alice")).json()
        assert first["query"] == {"limit": 2}
        assert [e["id"] for e in first["result"]] == [events[0].ulid, events[1].ulid]
        rest = api.get(self.URL, {"after_id": first["result"][-1]["id"]}, headers=acme.headers("alice")).json()
        assert rest["query"] == {"limit": 25, "after_id": events[1].ulid}
        assert [e["id"] for e in rest["result"]] == [e.ulid for e in events[2:]]
        assert set(rest["result"][0]) >= {"id", "type", "occurred_at", "payload"}

    def test_after_id_accepts_the_same_id_written_as_a_uuid(self, api, acme: World):
        events = self.make_events(acme, 3)
        as_uuid = str(ULID.from_str(events[0].ulid).to_uuid())
        result = api.get(self.URL, {"after_id": as_uuid}, headers=acme.headers("alice")).json()["result"]
        assert [e["id"] for e in result] == [e.ulid for e in events[1:]]

    def test_type_and_occurred_after_filter(self, api, acme: World):
        events = self.make_events(acme, 3)
        alice = caller_for_user(acme.users["alice"])
        ticket = Ticket.objects.first()
        services.update_ticket(caller=alice, ticket=ticket, data={"status": "closed"})
        closed = api.get(self.URL, {"type": "tickets.ticket.closed"}, headers=acme.headers("alice")).json()
        assert [e["type"] for e in closed["result"]] == ["tickets.ticket.closed"]
        after = events[1].occurred_at.isoformat()
        later = api.get(self.URL, {"occurred_after": after}, headers=acme.headers("alice")).json()["result"]
        assert [e["id"] for e in later][:1] == [events[2].ulid]

    def test_limit_zero_returns_no_events(self, api, acme: World):
        self.make_events(acme, 2)
        assert api.get(self.URL, {"limit": 0}, headers=acme.headers("alice")).json()["result"] == []

    @pytest.mark.parametrize(
        "params",
        [
            {"limit": 1001},
            {"limit": -1},
            {"limit": "many"},
            {"limit": "1_0"},  # int() reads these; a query's integer is its ASCII digits
            {"limit": "\u0663"},
            {"after_id": "not-an-id"},
            {"occurred_after": "yesterday"},
        ],
    )
    def test_bad_params_are_400_in_the_envelope(self, api, acme: World, params):
        response = api.get(self.URL, params, headers=acme.headers("alice"))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "INVALID_QUERY"

    def test_served_under_api_prefix_too(self, api, acme: World):
        self.make_events(acme, 1)
        assert len(api.get("/api" + self.URL, headers=acme.headers("alice")).json()["result"]) == 1

    def test_private_user_events_are_not_on_the_partner_feed(self, api, acme: World):
        with unit_of_work():
            record_event(
                tenant=acme.tenant, type="notifications.notification.created", payload={}, recipient=acme.users["bob"]
            )
        assert api.get(self.URL, headers=acme.headers("alice")).json()["result"] == []


@pytest.mark.django_db
def test_the_paging_fast_path_shows_events_exactly_as_the_event_serializer(api, acme: World):
    from events.serializers import event_to_dict

    alice = caller_for_user(acme.users["alice"])
    support = caller_for_user(acme.users["admin"], support=True)
    ticket = services.create_ticket(caller=alice, data={"subject": 'Quotes " and \\ backslashes', "customer": "Ünï"})
    services.update_ticket(caller=support, ticket=ticket, data={"status": "closed", "assignee": acme.users["carol"]})
    services.add_comment(caller=alice, ticket=ticket, body="done")
    result = api.get("/v2/system/events", headers=acme.headers("alice")).json()["result"]
    partner_events = Event.objects.filter(audience=Event.Audience.PARTNER).select_related("actor").order_by("id")
    expected = [event_to_dict(e) for e in partner_events]
    assert result == expected
    assert result[1]["support"] is True and result[1]["actor"]["name"] == "Admin"


def test_event_id_text_is_the_ulid_of_its_bits():
    from hypothesis import given
    from hypothesis import strategies as st

    from events.ids import MAX_ID_MILLISECONDS, event_id_to_str, parse_event_id

    @given(st.integers(min_value=0, max_value=2**128 - 1))
    def check(bits: int) -> None:
        value = uuid.UUID(int=bits)
        text = event_id_to_str(value)
        assert text == str(ULID.from_uuid(value))
        if bits >> 80 <= MAX_ID_MILLISECONDS:
            assert parse_event_id(text) == value
        else:  # an id of a time past the year 9999 was never minted (400 for a client)
            with pytest.raises(ValueError):
                parse_event_id(text)

    check()
