"""Websocket routes (Channels consumers)."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from events.consumers import CLOSE_NOT_FOUND, PartnerEventsConsumer


class NoSuchSocketConsumer(AsyncWebsocketConsumer):
    """A websocket handshake on a path that has none (the API's, a stream's): closed at
    once with `4404`, the code a client of the partner socket already reads. Channels'
    router raised for it, and the server answered a plain-text 500."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND, reason="NOT_FOUND")


websocket_urlpatterns = [
    path("v2/system/events/ws", PartnerEventsConsumer.as_asgi()),
    path("api/v2/system/events/ws", PartnerEventsConsumer.as_asgi()),
    re_path(r"", NoSuchSocketConsumer.as_asgi()),  # last: every other path
]
