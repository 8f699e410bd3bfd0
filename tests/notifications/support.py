"""Builders for the notification tests: callers, tickets, and who was told what."""

from __future__ import annotations

from typing import Any

from notifications.models import Notification
from tenants.callers import Caller, caller_for_user
from tests.builders import World
from ticketing import services
from ticketing.models import Ticket


def as_user(world: World, username: str) -> Caller:
    return caller_for_user(world.users[username])


def make_ticket(world: World, by: str = "bob", **fields: Any) -> Ticket:
    return services.create_ticket(caller=as_user(world, by), data={"subject": "VPN Connection Issue", **fields})


def told(world: World, type: str | None = None) -> dict[str, list[Notification]]:
    """username -> that user's notifications (of one type), oldest first."""
    rows = Notification.objects.filter(tenant=world.tenant).select_related("recipient").order_by("created_at", "id")
    if type is not None:
        rows = rows.filter(type=type)
    result: dict[str, list[Notification]] = {}
    for row in rows:
        result.setdefault(row.recipient.username, []).append(row)
    return result


def recipients(world: World, type: str) -> set[str]:
    return set(told(world, type))
