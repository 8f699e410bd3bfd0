"""Websocket routes (Channels consumers)."""

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
