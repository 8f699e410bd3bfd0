"""Websocket routes (Channels consumers)."""

from django.urls import path

from events.consumers import PartnerEventsConsumer

websocket_urlpatterns = [
    path("v2/system/events/ws", PartnerEventsConsumer.as_asgi()),
    path("api/v2/system/events/ws", PartnerEventsConsumer.as_asgi()),
]
