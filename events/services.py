"""Recording events in the transaction of the change, and announcing them after commit.

Ordering guarantee: within a tenant, event ids increase in commit order. On PostgreSQL a
transaction-scoped advisory lock per tenant is taken before the id is chosen and held
until commit, so the next writer of that tenant picks its id only after this one is
visible; the id is also forced above the tenant's last id, whatever the clocks say.
SQLite has a single writer, which gives the same order.
"""

import logging
import uuid
import zlib
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.utils import timezone

from events.context import current_acting
from events.ids import event_id_to_str, new_event_id
from events.models import REPLAY_TYPE, Event
from events.selectors import last_event_id
from tenants.models import Tenant, TenantUser

logger = logging.getLogger(__name__)

# The advisory-lock namespace of the event log (first key of the two-key form).
_EVENT_LOCK_CLASS = 0x45564E54 - 2**31  # "EVNT", as a signed int4


def tenant_group(tenant_id: uuid.UUID | str) -> str:
    """The channel-layer group a tenant's commit announcements go to."""
    return f"events.{uuid.UUID(str(tenant_id)).hex}"


def lock_tenant_log(tenant_id: uuid.UUID) -> None:
    """Serialize this transaction with every other writer of the tenant's log until it
    ends (PostgreSQL; SQLite has one writer anyway). Take it before any other lock a
    writer of the log may also take, so two writers never wait for each other."""
    if connection.vendor == "postgresql":
        key = zlib.crc32(tenant_id.bytes) - 2**31
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_EVENT_LOCK_CLASS, key])


def record_event(
    *,
    tenant: Tenant,
    type: str,
    payload: dict[str, Any],
    changes: dict[str, Any] | None = None,
    ticket_id: uuid.UUID | None = None,
    actor: TenantUser | None = None,
    support: bool | None = None,
    recipient: TenantUser | None = None,
    audience: str | None = None,
) -> Event:
    """Insert one event in the current transaction and announce it once it commits.

    `actor` and `support` default to the surrounding `acting_as(...)` context. An event
    with a `recipient` is private to that user (audience "user"): it reaches only their
    streams and never the partner feed."""
    if not connection.in_atomic_block:
        raise RuntimeError("record_event must run inside the transaction of the change it records")
    acting = current_acting()
    lock_tenant_log(tenant.id)
    last_id = last_event_id(tenant.id)
    event = Event.objects.create(
        id=new_event_id(after=last_id),
        tenant=tenant,
        type=type,
        occurred_at=timezone.now(),
        ticket_id=ticket_id,
        payload=payload,
        changes=changes,
        actor=actor if actor is not None else acting.actor,
        support=acting.support if support is None else support,
        audience=audience or (Event.Audience.USER if recipient is not None else Event.Audience.PARTNER),
        recipient=recipient,
    )
    transaction.on_commit(lambda: announce_commit(tenant.id, event.id))
    return event


@transaction.atomic
def request_replay(*, tenant: Tenant, event_ids: list[uuid.UUID]) -> Event:
    """Ask every live stream to send these stored events again (marked replayed).

    The request is itself a row of the log, so it reaches every worker process the way
    any event does (even without Redis, and even if a broadcast is lost), at its place
    in the order; partners never see it."""
    return record_event(
        tenant=tenant,
        type=REPLAY_TYPE,
        payload={"ids": [event_id_to_str(i) for i in event_ids]},
        audience=Event.Audience.SYSTEM,
    )


def announce_commit(tenant_id: uuid.UUID, event_id: uuid.UUID) -> None:
    """Tell every worker process that the tenant's log has grown. Loss is tolerated:
    hubs also poll the log."""
    message: dict[str, Any] = {"type": "log.committed", "tenant": str(tenant_id), "id": event_id_to_str(event_id)}
    try:
        async_to_sync(get_channel_layer().group_send)(tenant_group(tenant_id), message)
    except Exception:
        # The event is safe in the log; streams catch up on their next poll.
        logger.warning("event=announce_failed tenant=%s id=%s", tenant_id, message.get("id"), exc_info=True)
