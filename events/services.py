"""Write operations of the events app itself (recording changes: events.recording)."""

import uuid

from events.ids import event_id_to_str
from events.models import REPLAY_TYPE, Event
from events.recording import record_event, unit_of_work
from tenants.models import Tenant, TenantUser


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
