"""The webhooks app's event vocabulary: operational events it writes to the log, and the
types an endpoint's `eventTypes` may name."""

from enum import StrEnum

from sla.events import SlaEvent
from ticketing.events import TicketEvent


class WebhookEvent(StrEnum):
    # An endpoint was turned off by the deliverer (410 Gone, or failing for too long).
    ENDPOINT_DISABLED = "webhooks.endpoint.disabled"


# Never delivered to webhooks (a ping is sent directly, not through the log).
PING_TYPE = "webhooks.ping"

# Every type the partner log carries, and so every type a webhook can ever receive: the
# partner vocabularies as declared (docs/events.md is held to the same three). Per-user
# events (notifications) are declared apart, in their app, because they are never sent to
# webhooks: an endpoint filtering on one would silently receive nothing.
PARTNER_EVENT_TYPES: frozenset[str] = frozenset(
    str(event_type) for vocabulary in (TicketEvent, SlaEvent, WebhookEvent) for event_type in vocabulary
)


def is_deliverable_type_pattern(pattern: str) -> bool:
    """Whether an `eventTypes` entry can take any partner event: `*`, an exact partner type,
    or a prefix wildcard (`tickets.*`) that at least one partner type starts with."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        return any(event_type.startswith(prefix) for event_type in PARTNER_EVENT_TYPES)
    return pattern in PARTNER_EVENT_TYPES
