"""ASGI entry point: HTTP (Django, including the SSE streams) and websockets (Channels)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from config.websockets import websocket_urlpatterns  # noqa: E402
from events.sse import StreamAwareASGIHandler  # noqa: E402

application = ProtocolTypeRouter({"http": StreamAwareASGIHandler(), "websocket": URLRouter(websocket_urlpatterns)})
