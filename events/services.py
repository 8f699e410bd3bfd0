"""Write operations of the events app itself (recording changes: events.recording)."""

import uuid

from django.db import transaction

from events.ids import event_id_to_str
from events.models import REPLAY_TYPE, Event
from events.recording import record_event, unit_of_work
from tenants.models import Tenant, TenantUser
from webhooks.models import Delivery
from webhooks.selectors import owed_to_an_endpoint


@unit_of_work()
def request_replay(
    *, tenant: Tenant, event_ids: list[uuid.UUID], actor: TenantUser | None = None, support: bool = False
) -> Event:
    """Ask every live stream to send these stored events again (marked replayed).

    The request is itself a row of the log, so it reaches every worker process the way
    any event does (even without Redis, and even if a broadcast is lost), at its place
    in the order; partners never see it."""
    return record_event(
        tenant=tenant,
        type=REPLAY_TYPE,
        payload={"ids": [event_id_to_str(i) for i in event_ids]},
        audience=Event.Audience.SYSTEM,
        actor=actor,
        support=support,
    )


def delete_events(event_ids: list[uuid.UUID]) -> int:
    """Delete these events (pruning), except those a webhook delivery is still owed for;
    answers how many were deleted. Their delivered or failed deliveries go with them.

    The deliveries of these events are locked first, so a resend or "recover" that makes
    one pending again either committed before (and the event is kept) or waits for this
    commit; the check is in the DELETE's own query, not in an earlier read."""
    with transaction.atomic():
        list(Delivery.objects.select_for_update().filter(event_id__in=event_ids).values_list("id", flat=True))
        _, deleted = Event.objects.filter(id__in=event_ids).filter(~owed_to_an_endpoint()).delete()
    # `delete()`'s total counts the cascaded deliveries and attempts too.
    return deleted.get(Event._meta.label, 0)
