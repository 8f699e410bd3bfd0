"""The live ticket list: `POST /api/v2/ticketing/ticket/sse/list/updates`.

Gap-free start: the stream subscribes to the tenant's feed first (so it buffers every
event committed from then on), then reads the snapshot (or the missed events) together
with the log position they cover, then sends buffered events above that position."""

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import serializers

from core.aio import in_background
from core.http import ApiError, error_response, iso_now
from core.json_input import read_json_body
from core.serializers import StrictObjectSerializer
from core.views import validated
from events.hub import LogEvent, fetch_missed, run_db
from events.ids import event_id_to_str
from events.selectors import at_log_position
from events.sse import EventStream, StreamArguments, error_frame, serve_stream, sse_frame, stream_view
from tenants.callers import Caller
from tenants.policy import authorized_caller
from ticketing import presence
from ticketing.events import STATE_EVENTS, TicketEvent
from ticketing.models import Ticket
from ticketing.selectors import (
    Scope,
    TicketQuery,
    get_visible_ticket,
    list_tickets,
    merged_into_id,
    ticket_comments,
    ticket_query,
    ticket_query_from,
)
from ticketing.serializers import (
    TicketListBodySerializer,
    approval_to_dict,
    comment_to_dict,
    ticket_detail,
    user_ref,
)

logger = logging.getLogger(__name__)

# The enum members as plain strings: a class attribute lookup on an Enum is several times
# slower than a global, and these run once per frame.
_CREATED = str(TicketEvent.CREATED)
_DELETED = str(TicketEvent.DELETED)


def states_of(event: LogEvent) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """The ticket as it was before and after the event (worked out once per event)."""
    states = event.memo.get("states")
    if states is None:
        states = event.memo["states"] = _states_of(event)
    return states


def _states_of(event: LogEvent) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    ticket = event.payload.get("ticket")
    if event.type == _CREATED:
        return None, ticket
    if event.type == _DELETED:
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
    edge_held = True

    def __init__(self, *, query: TicketQuery, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.query = query

    async def opening(self) -> AsyncIterator[bytes]:
        yield sse_frame("connected", {"connectionId": self.connection_id, "timestamp": iso_now()})
        tenant_id = self.caller.tenant.id
        if self.last_event_id is not None:
            missed = await run_db(fetch_missed, tenant_id, self.last_event_id, settings.SSE_RESUME_MAX_EVENTS)
            if missed is not None:
                self.note_resume(resumed=True)
                self.position = self.last_event_id
                for event in missed:
                    frame = self.accept(event)
                    if frame is not None:
                        yield frame
                return
            self.note_resume(resumed=False)
        yield await self.snapshot(reset=self.last_event_id is not None)

    async def snapshot(self, *, reset: bool) -> bytes:
        position, data = await run_db(snapshot_at_position, self.caller, self.query)
        self.position = position
        if reset:
            data["reset"] = True
        return sse_frame("snapshot", data, id=event_id_to_str(position) if position else None)

    def interested(self, event: LogEvent) -> bool:
        """Whether the event can concern this list at all (checked before waking it): it
        has a frame for it. Worked out once per event and distinct list, so `render`
        right after is a dictionary lookup."""
        return list_frame(event, self.query) is not None

    def render(self, event: LogEvent) -> bytes | None:
        return list_frame(event, self.query)

    def edge_channel(self) -> tuple[str, dict[str, Any]]:
        """The Pushpin channel of this list and what the edge publisher rebuilds it from."""
        spec = query_spec(self.query)
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
        return f"list.{self.caller.tenant.id}.{digest}", spec


def list_frame(event: LogEvent, query: TicketQuery) -> bytes | None:
    """The frame a list following `query` gets for the event, or None: the same bytes for
    every stream of the list. Decided once per event and distinct list (`match_key`) and
    built once per event and frame shape; every other stream of the list gets the
    answer from one dictionary lookup (it runs once per stream and event)."""
    answers = event.memo.get("list_frames")
    if answers is None:
        answers = event.memo["list_frames"] = {}
    key = query.match_key
    try:
        return answers[key]
    except KeyError:
        frame = answers[key] = _list_frame(event, query)
        return frame


def _list_frame(event: LogEvent, query: TicketQuery) -> bytes | None:
    if event.type not in STATE_EVENTS:
        return None
    before, after = states_of(event)
    was_in, is_in = membership(event, query)
    real_create = event.type == _CREATED
    real_delete = event.type == _DELETED
    replayed = event.replayed
    if is_in and not was_in:
        key = ("created", real_create, replayed)
        return event.frame(key, lambda: sse_frame("created", _created(event, after, real_create), id=event.resume_id))
    if was_in and is_in:
        if not event.changes:
            # Nothing a list shows moved: a merge's own event, after the status change
            # that closed the ticket (its own frame), was an `updated` with `changes: {}`.
            return None
        key = ("updated", replayed)
        return event.frame(key, lambda: sse_frame("updated", _updated(event, after), id=event.resume_id))
    if was_in and not is_in:
        key = ("deleted", real_delete, replayed)
        return event.frame(key, lambda: sse_frame("deleted", _deleted(event, before, real_delete), id=event.resume_id))
    return None


def _created(event: LogEvent, after: Mapping[str, Any], real: bool) -> dict[str, Any]:
    data = dict(after)
    if not real:
        data["reason"] = "scope"
    if event.replayed:
        data["replayed"] = True
    return data


def _updated(event: LogEvent, after: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(after)
    data["changes"] = event.changes or {}
    if event.replayed:
        data["replayed"] = True
    return data


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


def query_spec(query: TicketQuery) -> dict[str, Any]:
    """What selects a list's tickets (scope, filter, search; not order or page), as JSON:
    equal for streams that see the same tickets, and enough to rebuild the query."""
    scope = query.scope
    return {
        "scope": ["template"] if scope.kind == "template" else [scope.kind, str(scope.user_id), list(scope.teams)],
        "filter": query.raw_filter,
        "search": query.raw_search,
    }


def query_from_spec(spec: Mapping[str, Any]) -> TicketQuery:
    kind, *who = spec["scope"]
    user_id, teams = (uuid.UUID(who[0]), tuple(who[1])) if who else (uuid.UUID(int=0), ())
    return ticket_query(Scope(kind, user_id, teams), spec.get("filter"), spec.get("search"))


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


# --- one ticket, everything that happens to it ------------------------------------------

TICKET_EVENT_PREFIX = "tickets.ticket."


def concerns_ticket(event: LogEvent, ticket_id: str, *, merges_into: bool = True) -> bool:
    """Whether a public event is about the ticket: its own lifecycle, comments, watchers,
    approvals, products and SLA stages, and (`merges_into`) another ticket merged into it."""
    if event.recipient_id is not None or not event.type.startswith(TICKET_EVENT_PREFIX):
        return False
    payload = event.payload
    if (payload.get("ticket") or {}).get("id") == ticket_id:
        return True
    return merges_into and (payload.get("mergedInto") or {}).get("id") == ticket_id


def ticket_with_activity(ticket: Ticket) -> dict[str, Any]:
    """What a ticket page shows: the ticket, its comments, watchers and approvals."""
    return {
        "ticket": ticket_detail(ticket, merged_into_id(ticket)),
        "comments": [comment_to_dict(c) for c in ticket_comments(ticket)],
        "watchers": [user_ref(u) for u in ticket.watchers.order_by("username")],
        "approvals": [approval_to_dict(a) for a in ticket.approvals.select_related("approver", "requested_by")],
    }


def ticket_activity_at_position(caller: Caller, ticket_id: str) -> tuple[uuid.UUID | None, dict[str, Any]]:
    """The ticket page's whole state and the log position it covers, from one snapshot."""
    return at_log_position(caller.tenant.id, lambda: ticket_with_activity(get_visible_ticket(caller, ticket_id)))


def missed_ticket_events(
    tenant_id: uuid.UUID, after: uuid.UUID, ticket_id: str, limit: int, *, merges_into: bool
) -> list[LogEvent] | None:
    """The ticket's events after `after`, or None when `after` is not an event of the
    tenant or more than `limit` events of the tenant came since (the stream starts afresh)."""
    events = fetch_missed(tenant_id, after, limit)
    if events is None:
        return None
    return [e for e in events if concerns_ticket(e, ticket_id, merges_into=merges_into)]


class TicketActivityStream(EventStream):
    """`GET /api/v2/ticketing/ticket/{id}/sse`: a snapshot of the ticket with its comments,
    watchers and approvals, then every event about it as it commits (`activity` frames,
    each the event as the partner API shows it), so a ticket page needs no polling."""

    kind = "ticket"

    def __init__(self, *, ticket_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ticket_id = ticket_id
        # A ticket merged into this one is another requester's: only agents see it.
        self.merges_into = self.caller.is_agent
        # An end user sees the ticket while they are its requester (get_visible_ticket):
        # each live event says who that is now (`render`).
        self.while_requester = str(self.caller.user.id) if not self.caller.is_agent else None
        self.live_phase = False
        # This stream is a viewer of the ticket (ticketing.presence).
        self.subscriber.topic = presence.topic(ticket_id)
        self.viewer = presence.Presence(
            self.connection_id, str(self.caller.user.id), self.caller.user.display_name, expires_at=0.0
        )
        self.viewers_sent: list[dict[str, Any]] | None = None
        self.renew_at = 0.0  # time.monotonic() of the next renewal of this viewer's entry
        self.renewal: asyncio.Future[None] | None = None  # the renewal under way
        self.stale_at = float("inf")  # time.time() at which the roster last sent goes stale

    async def opening(self) -> AsyncIterator[bytes]:
        yield sse_frame(
            "connected", {"connectionId": self.connection_id, "ticketId": self.ticket_id, "timestamp": iso_now()}
        )
        if self.last_event_id is not None:
            limit = settings.SSE_RESUME_MAX_EVENTS
            tenant_id = self.caller.tenant.id
            missed = await run_db(
                missed_ticket_events, tenant_id, self.last_event_id, self.ticket_id, limit, merges_into=self.merges_into
            )
            if missed is not None:
                self.note_resume(resumed=True)
                self.position = self.last_event_id
                for event in missed:
                    frame = self.accept(event)
                    if frame is not None:
                        yield frame
        if self.position is None:
            try:
                position, data = await run_db(ticket_activity_at_position, self.caller, self.ticket_id)
            except ApiError as error:  # deleted between the request's check and now
                self.end_reason = error.code.lower()
                yield error_frame(error.code, error.message)
                self.finished = True
                return
            self.position = position
            if self.last_event_id is not None:
                self.note_resume(resumed=False)
                data["reset"] = True  # the missed events could not be replayed: take this state
            yield sse_frame("snapshot", data, id=event_id_to_str(position) if position else None)
        async for frame in self.join_viewers():
            yield frame
        self.live_phase = True

    # --- presence: who else is on the ticket ---------------------------------------------

    async def join_viewers(self) -> AsyncIterator[bytes]:
        self.viewer = dataclasses.replace(self.viewer, expires_at=time.time() + settings.PRESENCE_TTL_SECONDS)
        try:
            roster = await presence.bounded(presence.join(self.caller.tenant.id, self.ticket_id, self.viewer))
        except Exception as error:
            # Redis away or slow: the stream goes on without the roster for now (it failed
            # here, after `connected`, with a broken response). Its next renewal writes
            # its entry, and the roster is read again then.
            logger.warning("event=presence_join_failed conn=%s error=%r", self.connection_id, error)
            self.renew_at = time.monotonic() + settings.PRESENCE_RENEW_SECONDS
            self.stale_at = time.time() + settings.PRESENCE_RENEW_SECONDS
            self._schedule()
            return
        self.renew_at = time.monotonic() + settings.PRESENCE_RENEW_SECONDS
        frame = self._viewers_frame(roster.as_list(), roster.stale_at())
        self._schedule()
        if frame is not None:
            yield frame

    def render_note(self, note: dict[str, Any]) -> bytes | None:
        frame = self._viewers_frame(note["viewers"], note.get("staleAt") or float("inf"))
        self._schedule()
        return frame

    async def tick(self) -> AsyncIterator[bytes]:
        tenant_id = self.caller.tenant.id
        if time.monotonic() >= self.renew_at:
            self.viewer = dataclasses.replace(self.viewer, expires_at=time.time() + settings.PRESENCE_TTL_SECONDS)
            # In the background: the stream writes no events while it waits, and a paused
            # Redis held them for as long as the call's retries lasted. One at a time; a
            # renewal that fails is made up for by the next one.
            if self.renewal is None or self.renewal.done():
                self.renewal = in_background(presence.renew(tenant_id, self.ticket_id, self.viewer))
            self.renew_at = time.monotonic() + settings.PRESENCE_RENEW_SECONDS
        if time.time() >= self.stale_at:
            # An entry lapsed (a viewer whose worker died) or a typing mark ran out: read again.
            try:
                roster = await presence.bounded(presence.read_roster(tenant_id, self.ticket_id))
            except Exception:
                self.stale_at = time.time() + settings.PRESENCE_RENEW_SECONDS
            else:
                frame = self._viewers_frame(roster.as_list(), roster.stale_at())
                if frame is not None:
                    yield frame
        self._schedule()

    async def closed(self) -> None:
        if self.renew_at:  # joined
            await presence.leave(self.caller.tenant.id, self.ticket_id, self.connection_id)

    def _viewers_frame(self, viewers: list[dict[str, Any]], stale_at: float) -> bytes | None:
        """A `presence` frame when the roster differs from the one this client has."""
        self.stale_at = stale_at
        if viewers == self.viewers_sent:
            return None
        self.viewers_sent = viewers
        data = {"ticketId": self.ticket_id, "you": self.connection_id, "viewers": viewers, "timestamp": iso_now()}
        return sse_frame("presence", data)

    def _schedule(self) -> None:
        until_stale = max(0.0, self.stale_at - time.time()) if self.stale_at != float("inf") else float("inf")
        self.next_tick = min(self.renew_at, time.monotonic() + until_stale)

    def interested(self, event: LogEvent) -> bool:
        return concerns_ticket(event, self.ticket_id, merges_into=self.merges_into)

    def render(self, event: LogEvent) -> bytes | None:
        if self.finished or not self.interested(event):
            return None
        if self.while_requester is not None and not self._shows_caller_as_requester(event):
            if not self.live_phase:
                # A missed event from a time the ticket was someone else's (it is the
                # caller's again, or the stream would not have opened): not for them.
                return None
            # The ticket was given to another requester: the caller may no longer see it,
            # nor this change or anything after it. Ended as a new request would be
            # answered (404 TICKET_NOT_FOUND), and woken so it closes now.
            self.finished = True
            self.end_reason = "ticket_not_found"
            self.subscriber.wake()
            return error_frame("TICKET_NOT_FOUND", "This ticket is no longer yours to see.")
        return event.frame("activity", lambda: sse_frame("activity", event.api, id=event.resume_id))

    def _shows_caller_as_requester(self, event: LogEvent) -> bool:
        ticket = event.payload.get("ticket") or {}
        return (ticket.get("requester") or {}).get("id") == self.while_requester


async def _ticket_request(request: HttpRequest, caller: Caller) -> StreamArguments:
    """The ticket of the path, which the caller must be able to open (404 otherwise)."""
    ticket_id = request.resolver_match.kwargs["ticket_id"] if request.resolver_match else ""
    ticket = await run_db(get_visible_ticket, caller, ticket_id)
    return StreamArguments({"ticket_id": str(ticket.id)}, resume_from=request.GET.get("lastEventId"))


@stream_view
@csrf_exempt
async def ticket_activity_stream(request: HttpRequest, ticket_id: str) -> HttpResponse:
    return await serve_stream(
        request,
        TicketActivityStream,
        method="GET",
        limit=settings.SSE_MAX_TICKET_STREAMS_PER_USER,
        read_request=_ticket_request,
    )


# --- announcing presence (typing), for the viewers the ticket streams above show --------


class PresenceWriteSerializer(StrictObjectSerializer):
    clientId = serializers.RegexField(r"^[A-Za-z0-9_.:-]{1,64}$", help_text="`connectionId` of your ticket stream")
    state = serializers.ChoiceField(choices=presence.STATES)


@csrf_exempt  # a session caller's CSRF token is checked by authorized_caller
async def ticket_presence(request: HttpRequest, ticket_id: str) -> HttpResponse:
    """`POST /api/v2/ticketing/ticket/{id}/presence {clientId, state}`: the caller, viewing
    the ticket through the stream `clientId`, is typing (for PRESENCE_TYPING_SECONDS) or
    back to viewing. Answers the roster as it is now."""
    # Django counts the query's parameters only when request.GET is first read, and this
    # view reads none: 1,200 of them were taken (core.errors answers TooManyFieldsSent).
    request.GET  # noqa: B018
    if request.method != "POST":
        return error_response(ApiError(405, "METHOD_NOT_ALLOWED", "Use POST.", headers={"Allow": "POST"}))
    try:
        caller = await run_db(authorized_caller, request)
        ticket = await run_db(get_visible_ticket, caller, ticket_id)
        data = validated(PresenceWriteSerializer(data=read_json_body(request)))
        roster = await presence.set_state(
            caller.tenant.id, str(ticket.id), data["clientId"], str(caller.user.id), data["state"]
        )
        if roster is None:
            raise ApiError(404, "VIEWER_NOT_FOUND", "clientId is not one of your open streams of this ticket.")
    except ApiError as error:
        return error_response(error)
    body = {"success": True, "data": {"ticketId": str(ticket.id), "viewers": roster.as_list()}, "timestamp": iso_now()}
    return JsonResponse(body)
