"""After a commit: tell every worker process that a tenant's log has grown.

The message (`log.committed`, to the tenant's channel-layer group) is a wake-up: the
hub's feeds and the webhook deliverer read the log from their own cursor, and they also
poll it, so a lost or late announcement delays nothing for long and loses nothing.
That lets the sending be cheap:

- In a served request the commit runs in a worker thread of the ASGI event loop. The
  announcement is handed to that loop and the request goes on: it does not wait for
  Redis (a round trip or two of `group_send` on every change, in the thread of the
  request, before the response could leave).
- On the loop, announcements waiting to be sent are merged per tenant: while one
  `group_send` is in flight, further commits of the tenant become one message. Under a
  burst of writes a tenant's group gets a few messages a second instead of one per
  change. The message carries the *oldest* id not yet announced, so a receiver's lag (the
  age of the oldest event it knows of and has not read, core.metrics.HUB_FEED_LAG) stays
  true, and the newest, so a receiver knows where the log has got to.
- With no serving loop (management commands, the synchronous test client, a WSGI
  server) it is sent at once, as before.

A commit's events also travel with its announcement (`carried_events`), with the id of
the event before them in the tenant's log, read under the tenant's log lock: a feed whose
cursor is that id has the events as they were written, without reading them back from
the log, and every worker process would otherwise read each commit once. Any other case
(a cursor elsewhere, a commit too big to carry, an announcement lost or out of order) is
a gap, and the receiver reads the log as before (events.hub.TenantFeed.catch_up).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from core.aio import serving_loop
from core.metrics import BROADCAST_FAILURES
from events.ids import event_id_to_str
from events.models import Event
from events.serializers import event_to_dict

logger = logging.getLogger(__name__)


def tenant_group(tenant_id: uuid.UUID | str) -> str:
    """The channel-layer group a tenant's commit announcements (and notes) go to."""
    return f"events.{uuid.UUID(str(tenant_id)).hex}"


# A message on a tenant's group that is not a commit: news for the streams following its
# `topic` (who is viewing a ticket, the saved views changed), handed to them without
# reading the log (events.hub). A lost note is tolerated: each topic's sender sends again
# or its streams read again on their own, so sending one is bounded and never raises.
NOTE_MESSAGE = "stream.note"
NOTE_SEND_SECONDS = 2.0
# Notes handed to the serving loop, held until sent (the loop keeps only weak references).
_notes_in_flight: set[asyncio.Task[None]] = set()


async def send_note(tenant_id: uuid.UUID, topic: str, **fields: Any) -> None:
    """Send a note on `topic` (with `fields`) to the tenant's streams on every worker."""
    message = {"type": NOTE_MESSAGE, "tenant": str(tenant_id), "topic": topic, **fields}
    try:
        async with asyncio.timeout(NOTE_SEND_SECONDS):
            await get_channel_layer().group_send(tenant_group(tenant_id), message)
    except Exception:
        BROADCAST_FAILURES.labels("note").inc()
        logger.warning("event=note_failed tenant=%s topic=%s", tenant_id, topic, exc_info=True)


def announce_note(tenant_id: uuid.UUID, topic: str, **fields: Any) -> None:
    """`send_note` from synchronous code (after COMMIT), as `announce_commit` sends: handed
    to the serving loop, so that the request does not wait for Redis; sent from here where
    there is no loop."""
    loop = serving_loop()
    if loop is not None:
        try:
            loop.call_soon_threadsafe(_start_note, tenant_id, topic, fields, context=contextvars.Context())
            return
        except RuntimeError:  # the loop closed meanwhile (shutdown)
            pass
    async_to_sync(send_note)(tenant_id, topic, **fields)


def _start_note(tenant_id: uuid.UUID, topic: str, fields: dict[str, Any]) -> None:
    task = asyncio.get_running_loop().create_task(send_note(tenant_id, topic, **fields), name="send-note")
    _notes_in_flight.add(task)
    task.add_done_callback(_notes_in_flight.discard)


# A commit whose events take more than this as JSON (a bulk change of many tickets) is
# announced without them: the receivers read it from the log.
CARRIED_MAX_BYTES = 32_768
# And the commits one merged message carries, in all.
CARRIED_MAX_MESSAGE_BYTES = 262_144


def carried_events(before: uuid.UUID | None, events: Sequence[Event]) -> str | None:
    """A commit's events as its announcement carries them (JSON: the id before them in the
    tenant's log, then each event as the partner API shows it and its recipient), or None
    when too big. Made after COMMIT, from the rows as inserted; JSON, so that a receiver
    gets what reading the rows back would give (a tuple in a payload becomes a list)."""
    text = json.dumps(
        {
            "before": event_id_to_str(before) if before is not None else None,
            "events": [
                {"api": event_to_dict(event), "recipient": str(event.recipient_id) if event.recipient_id else None}
                for event in events
            ],
        },
        separators=(",", ":"),
    )
    return text if len(text) <= CARRIED_MAX_BYTES else None


def announce_commit(tenant_id: uuid.UUID, event_id: uuid.UUID, *, carried: str | None = None) -> None:
    """Announce that the tenant's log has grown to `event_id` (called after COMMIT), with
    the commit's events when `carried` (`carried_events`)."""
    loop = serving_loop()
    if loop is None:
        _send_now(tenant_id, event_id, carried)
        return
    try:
        # A fresh context: the sending task outlives the request, whose context would
        # tie it to the request's finished thread (core.request_threads).
        loop.call_soon_threadsafe(_announcer_of(loop).add, tenant_id, event_id, carried, context=contextvars.Context())
    except RuntimeError:  # the loop closed meanwhile (shutdown): send it from here
        _send_now(tenant_id, event_id, carried)


@dataclass
class _Pending:
    """A tenant's commits not announced yet: the oldest id, the newest, the carried events."""

    oldest: uuid.UUID
    newest: uuid.UUID
    carried: list[str] = field(default_factory=list)
    carried_bytes: int = 0

    @classmethod
    def of(cls, event_id: uuid.UUID, carried: str | None) -> _Pending:
        pending = cls(event_id, event_id)
        pending.add(event_id, carried)
        return pending

    def add(self, event_id: uuid.UUID, carried: str | None) -> None:
        # Commits reach the loop in the order their threads got there, not always in
        # commit order.
        self.newest = max(self.newest, event_id)
        # A burst of big commits while Redis is slow would make one huge message: past
        # the bound, the rest go uncarried (receivers read them from the log).
        if carried is not None and self.carried_bytes + len(carried) <= CARRIED_MAX_MESSAGE_BYTES:
            self.carried.append(carried)
            self.carried_bytes += len(carried)

    def message(self, tenant_id: uuid.UUID) -> dict[str, Any]:
        message = {
            "type": "log.committed",
            "tenant": str(tenant_id),
            "id": event_id_to_str(self.oldest),
            "newest": event_id_to_str(self.newest),
        }
        if self.carried:
            message["carried"] = self.carried
        return message


def _failed(tenant_id: uuid.UUID, event_id: uuid.UUID) -> None:
    # The events are safe in the log; receivers catch up on their next poll.
    BROADCAST_FAILURES.labels("announce").inc()
    logger.warning("event=announce_failed tenant=%s id=%s", tenant_id, event_id_to_str(event_id), exc_info=True)


def _send_now(tenant_id: uuid.UUID, event_id: uuid.UUID, carried: str | None) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(
            tenant_group(tenant_id), _Pending.of(event_id, carried).message(tenant_id)
        )
    except Exception:
        _failed(tenant_id, event_id)


class _LoopAnnouncer:
    """Announcements waiting to be sent from one event loop, one per tenant, and the task
    sending them (touched only from that loop)."""

    def __init__(self) -> None:
        self.pending: dict[uuid.UUID, _Pending] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, tenant_id: uuid.UUID, event_id: uuid.UUID, carried: str | None = None) -> None:
        # The oldest unannounced id of the tenant stays (see the module docstring).
        pending = self.pending.get(tenant_id)
        if pending is None:
            self.pending[tenant_id] = _Pending.of(event_id, carried)
        else:
            pending.add(event_id, carried)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain(), name="announce-commits")

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, {}
            layer = get_channel_layer()
            for tenant_id, pending in batch.items():
                try:
                    await layer.group_send(tenant_group(tenant_id), pending.message(tenant_id))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    _failed(tenant_id, pending.oldest)


_announcers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopAnnouncer] = weakref.WeakKeyDictionary()


def _announcer_of(loop: asyncio.AbstractEventLoop) -> _LoopAnnouncer:
    # Called from other threads, but a dict lookup/insert of one key is atomic under the
    # GIL, and two racing inserts for a new loop would only lose one empty announcer.
    announcer = _announcers.get(loop)
    if announcer is None:
        announcer = _announcers.setdefault(loop, _LoopAnnouncer())
    return announcer
