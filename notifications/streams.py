"""The live notification stream: `GET /api/v2/ticketing/ticket/sse/notifications`.

Built on the shared stream machinery (events.sse, events.hub): the stream subscribes to
the hub for the caller's private events only, then sends `connected` and either the
events missed since `Last-Event-ID` (read from the log by the caller's (tenant,
recipient, id) index, rendered exactly as live ones) or the current counts. Live events
at or below that position are dropped, so nothing is sent twice or skipped.

Frames: `notification` (with the event id as SSE `id:`) followed by `count` for a new
notification; `count` alone (with `id:`) when notifications are read (`reason: "read"`,
or `"withdrawn"` for `queued` notices someone else took) or deleted."""

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from core.http import iso_now
from events.hub import LogEvent, fetch_missed, run_db
from events.ids import event_id_to_str
from events.selectors import at_log_position
from events.sse import EventStream, StreamArguments, serve_stream, sse_frame, stream_view
from notifications.selectors import notification_counts
from notifications.serializers import counts_to_dict
from notifications.services import CREATED, DELETED, READ
from tenants.callers import Caller

STREAM_KIND = "notifications"
COUNT_REASONS = {CREATED: "created", READ: "read", DELETED: "deleted"}


def counts_at_position(caller: Caller) -> tuple[uuid.UUID | None, dict[str, Any]]:
    """The log position and the counts it covers, read from one consistent snapshot."""
    return at_log_position(caller.tenant.id, lambda: counts_to_dict(notification_counts(caller.user)))


class NotificationStream(EventStream):
    kind = STREAM_KIND
    edge_held = True

    async def opening(self) -> AsyncIterator[bytes]:
        yield sse_frame(
            "connected",
            {"message": "Connected to notification stream", "userId": str(self.caller.user.id), "timestamp": iso_now()},
        )
        if self.last_event_id is not None:
            # None: not an event of the tenant, or too much was missed (start afresh).
            missed = await run_db(
                fetch_missed,
                self.caller.tenant.id,
                self.last_event_id,
                settings.SSE_RESUME_MAX_EVENTS,
                recipient=self.caller.user.id,
            )
            if missed is not None:
                self.note_resume(resumed=True)
                self.position = self.last_event_id
                for event in missed:
                    frame = self.accept(event)
                    if frame is not None:
                        yield frame
                return
        position, counts = await run_db(counts_at_position, self.caller)
        self.position = position
        data = {**counts, "reason": "snapshot"}
        if self.last_event_id is not None:
            self.note_resume(resumed=False)
            data["reset"] = True  # the missed events could not be replayed: reload the list
        yield sse_frame("count", data, id=event_id_to_str(position) if position else None)

    def render(self, event: LogEvent) -> bytes | None:
        return notification_frames(event, self.caller.user.id)

    def edge_channel(self) -> tuple[str, dict[str, Any]]:
        """One Pushpin channel per user: every notification stream of the user is on it."""
        user = self.caller.user.id
        return f"notifications.{self.caller.tenant.id}.{user}", {"user": str(user)}


def notification_frames(event: LogEvent, user_id: uuid.UUID) -> bytes | None:
    """What the user's notification streams get for the event, or None."""
    reason = COUNT_REASONS.get(event.type)
    if reason is None or event.recipient_id != user_id:
        return None
    return event.frame("notification", lambda: _frames(event, reason))


def _frames(event: LogEvent, reason: str) -> bytes:
    counts = {**((event.changes or {}).get("counts") or {}).get("to", {}), "reason": reason}
    if reason != "created":
        # A withdrawn `queued` notice (someone took the ticket) is a read with its own reason.
        counts["reason"] = event.payload.get("reason", reason)
        counts["ids"] = event.payload.get("ids")
        return sse_frame("count", counts, id=event.resume_id)
    return sse_frame("notification", event.payload, id=event.resume_id) + sse_frame("count", counts)


def user_of_spec(spec: Mapping[str, Any]) -> uuid.UUID:
    return uuid.UUID(spec["user"])


def _notification_request(request: HttpRequest, caller: Caller) -> StreamArguments:
    """Only where the stream resumes: the `lastEventId` query parameter, for clients that
    cannot set the header."""
    return StreamArguments({}, resume_from=request.GET.get("lastEventId"))


@stream_view
@csrf_exempt
async def notification_stream(request: HttpRequest) -> HttpResponse:
    return await serve_stream(
        request,
        NotificationStream,
        method="GET",
        limit=settings.SSE_MAX_NOTIFICATION_STREAMS_PER_USER,
        private=True,  # only the events addressed to the caller
        read_request=_notification_request,
    )
