"""The live ticket list: `POST /api/v2/ticketing/ticket/sse/list/updates`.

Gap-free start: the stream subscribes to the tenant's feed first (so it buffers every
event committed from then on), then reads the snapshot (or the missed events) together
with the log position they cover, then sends buffered events above that position."""

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from core.http import ApiError, iso_now
from core.json_input import read_json_body
from core.views import validated
from events.hub import LogEvent, fetch_log, run_db
from events.ids import event_id_to_str
from events.selectors import at_log_position, event_exists
from events.sse import EventStream, StreamArguments, serve_stream, sse_frame, stream_view
from tenants.callers import Caller
from ticketing.events import STATE_EVENTS, TicketEvent
from ticketing.selectors import TicketQuery, list_tickets, ticket_query_from
from ticketing.serializers import TicketListBodySerializer


def states_of(event: LogEvent) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """The ticket as it was before and after the event (worked out once per event)."""
    states = event.memo.get("states")
    if states is None:
        states = event.memo["states"] = _states_of(event)
    return states


def _states_of(event: LogEvent) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    ticket = event.payload.get("ticket")
    if event.type == TicketEvent.CREATED:
        return None, ticket
    if event.type == TicketEvent.DELETED:
        return ticket, None
    before = dict(ticket)
    for name, change in (event.changes or {}).items():
        before[name] = change["from"]
    return before, ticket


def membership(event: LogEvent, query: TicketQuery) -> tuple[bool, bool]:
    """Whether the event's ticket was in the query's list before it and is after it. Worked
    out once per event and distinct list: streams with the same filter share the answer."""
    answers = event.memo.setdefault("membership", {})
    answer = answers.get(query.match_key)
    if answer is None:
        before, after = states_of(event)
        answer = answers[query.match_key] = (query.matches(before), query.matches(after))
    return answer


def snapshot_at_position(caller: Caller, query: TicketQuery) -> tuple[uuid.UUID | None, dict[str, Any]]:
    """The log position and the page it covers, read from one consistent snapshot."""
    return at_log_position(caller.tenant.id, lambda: list_tickets(caller, query).as_data())


class TicketListStream(EventStream):
    kind = "list"

    def __init__(self, *, query: TicketQuery, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.query = query

    async def opening(self) -> AsyncIterator[bytes]:
        yield sse_frame("connected", {"connectionId": self.connection_id, "timestamp": iso_now()})
        tenant_id = self.caller.tenant.id
        if self.last_event_id is not None and await run_db(event_exists, tenant_id, self.last_event_id):
            limit = settings.SSE_RESUME_MAX_EVENTS
            missed = await run_db(fetch_log, tenant_id, self.last_event_id, limit + 1)
            if len(missed) <= limit:
                self.note_resume(resumed=True)
                self.position = self.last_event_id
                for event in missed:
                    frame = self.accept(event)
                    if frame is not None:
                        yield frame
                return
        if self.last_event_id is not None:
            self.note_resume(resumed=False)
        yield await self.snapshot(reset=self.last_event_id is not None)

    async def snapshot(self, *, reset: bool) -> bytes:
        position, data = await run_db(snapshot_at_position, self.caller, self.query)
        self.position = position
        if reset:
            data["reset"] = True
        return sse_frame("snapshot", data, id=event_id_to_str(position) if position else None)

    def interested(self, event: LogEvent) -> bool:
        """Whether the event can concern this list at all (checked before waking it)."""
        if event.type not in STATE_EVENTS:
            return False
        was_in, is_in = membership(event, self.query)
        return was_in or is_in

    def render(self, event: LogEvent) -> bytes | None:
        if event.type not in STATE_EVENTS:
            return None
        before, after = states_of(event)
        was_in, is_in = membership(event, self.query)
        real_create = event.type == TicketEvent.CREATED
        real_delete = event.type == TicketEvent.DELETED
        replayed = event.replayed
        if is_in and not was_in:
            key = ("created", real_create, replayed)
            return event.frame(
                key, lambda: sse_frame("created", self._created(event, after, real_create), id=event.ulid)
            )
        if was_in and is_in:
            key = ("updated", replayed)
            return event.frame(key, lambda: sse_frame("updated", self._updated(event, after), id=event.ulid))
        if was_in and not is_in:
            key = ("deleted", real_delete, replayed)
            return event.frame(
                key, lambda: sse_frame("deleted", self._deleted(event, before, real_delete), id=event.ulid)
            )
        return None

    @staticmethod
    def _created(event: LogEvent, after: Mapping[str, Any], real: bool) -> dict[str, Any]:
        data = dict(after)
        if not real:
            data["reason"] = "scope"
        if event.replayed:
            data["replayed"] = True
        return data

    @staticmethod
    def _updated(event: LogEvent, after: Mapping[str, Any]) -> dict[str, Any]:
        data = dict(after)
        data["changes"] = event.changes or {}
        if event.replayed:
            data["replayed"] = True
        return data

    @staticmethod
    def _deleted(event: LogEvent, before: Mapping[str, Any], real: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": before["id"],
            "ticketNumber": before.get("ticketNumber"),
            "deletedAt": before.get("deletedAt") or event.occurred_at,
        }
        if not real:
            data["reason"] = "scope"
        if event.replayed:
            data["replayed"] = True
        return data


def _list_request(request: HttpRequest, caller: Caller) -> StreamArguments:
    """The list's query string (`module`, `type`) and body: the list it follows, and where
    it resumes (`lastEventId`)."""
    module = request.GET.get("module")
    if module != "ticketing":
        raise ApiError(400, "INVALID_QUERY", "module must be `ticketing`.", {"module": module})
    if not request.GET.get("type"):
        raise ApiError(400, "INVALID_QUERY", "type is required (user, agent or template).")
    raw = read_json_body(request, default={})  # 400 INVALID_JSON / 413, as on the DRF views
    body = validated(TicketListBodySerializer(data=raw))
    query = ticket_query_from(caller, request.GET["type"], body)
    return StreamArguments({"query": query}, resume_from=body.get("lastEventId"))


@stream_view
@csrf_exempt
async def ticket_list_updates(request: HttpRequest) -> HttpResponse:
    return await serve_stream(
        request,
        TicketListStream,
        method="POST",
        limit=settings.SSE_MAX_LIST_STREAMS_PER_USER,
        read_request=_list_request,
    )
