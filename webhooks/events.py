"""The webhooks app's event vocabulary: operational events it writes to the log."""

from enum import StrEnum


class WebhookEvent(StrEnum):
    # An endpoint was turned off by the deliverer (410 Gone, or failing for too long).
    ENDPOINT_DISABLED = "webhooks.endpoint.disabled"


# Never delivered to webhooks (a ping is sent directly, not through the log).
PING_TYPE = "webhooks.ping"
