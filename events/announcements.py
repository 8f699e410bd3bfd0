"""After a commit: tell every worker process that a tenant's log has grown.

The message (`log.committed`, to the tenant's channel-layer group) is only a wake-up:
the hub's feeds and the webhook deliverer read the log from their own cursor, and they
also poll it, so a lost or late announcement delays nothing for long and loses nothing.
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
  true.
- With no serving loop (management commands, the synchronous test client, a WSGI
  server) it is sent at once, as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
import weakref
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from core.aio import serving_loop
from core.metrics import BROADCAST_FAILURES
from events.ids import event_id_to_str

logger = logging.getLogger(__name__)


def tenant_group(tenant_id: uuid.UUID | str) -> str:
    """The channel-layer group a tenant's commit announcements go to."""
    return f"events.{uuid.UUID(str(tenant_id)).hex}"


def announce_commit(tenant_id: uuid.UUID, event_id: uuid.UUID) -> None:
    """Announce that the tenant's log has grown to `event_id` (called after COMMIT)."""
    loop = serving_loop()
    if loop is None:
        _send_now(tenant_id, event_id)
        return
    try:
        # A fresh context: the sending task outlives the request, whose context would
        # tie it to the request's finished thread (core.request_threads).
        loop.call_soon_threadsafe(_announcer_of(loop).add, tenant_id, event_id, context=contextvars.Context())
    except RuntimeError:  # the loop closed meanwhile (shutdown): send it from here
        _send_now(tenant_id, event_id)


def _message(tenant_id: uuid.UUID, event_id: uuid.UUID) -> dict[str, Any]:
    return {"type": "log.committed", "tenant": str(tenant_id), "id": event_id_to_str(event_id)}


def _failed(tenant_id: uuid.UUID, event_id: uuid.UUID) -> None:
    # The events are safe in the log; receivers catch up on their next poll.
    BROADCAST_FAILURES.labels("announce").inc()
    logger.warning("event=announce_failed tenant=%s id=%s", tenant_id, event_id_to_str(event_id), exc_info=True)


def _send_now(tenant_id: uuid.UUID, event_id: uuid.UUID) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(tenant_group(tenant_id), _message(tenant_id, event_id))
    except Exception:
        _failed(tenant_id, event_id)


class _LoopAnnouncer:
    """Announcements waiting to be sent from one event loop, one per tenant, and the task
    sending them (touched only from that loop)."""

    def __init__(self) -> None:
        self.pending: dict[uuid.UUID, uuid.UUID] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, tenant_id: uuid.UUID, event_id: uuid.UUID) -> None:
        # The oldest unannounced id of the tenant stays (see the module docstring).
        self.pending.setdefault(tenant_id, event_id)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain(), name="announce-commits")

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, {}
            layer = get_channel_layer()
            for tenant_id, event_id in batch.items():
                try:
                    await layer.group_send(tenant_group(tenant_id), _message(tenant_id, event_id))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    _failed(tenant_id, event_id)


_announcers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopAnnouncer] = weakref.WeakKeyDictionary()


def _announcer_of(loop: asyncio.AbstractEventLoop) -> _LoopAnnouncer:
    # Called from other threads, but a dict lookup/insert of one key is atomic under the
    # GIL, and two racing inserts for a new loop would only lose one empty announcer.
    announcer = _announcers.get(loop)
    if announcer is None:
        announcer = _announcers.setdefault(loop, _LoopAnnouncer())
    return announcer
