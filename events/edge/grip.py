"""GRIP, the protocol between the workers and Pushpin: whether a request came through
Pushpin, the headers that hand a stream to it, and the signed link it calls back."""

from __future__ import annotations

from typing import Any

import jwt
from django.conf import settings
from django.core import signing
from django.http import HttpRequest

# Every held stream is also on this channel: the publisher sends the heartbeat frames on
# it (one publish reaches every connection).
HEARTBEAT_CHANNEL = "edge.heartbeat"
# And on one channel of its own, on which nothing is published: Pushpin resets a stream's
# call-back timer only when all its channels had news, so with this one it calls back on
# time however busy the list is (token expiry, idle timeout, lease renewal).
CONNECTION_CHANNEL_PREFIX = "edge.conn."
_LINK_SALT = "events.edge.link"
_CONNECTION_SALT = "events.edge.connection"
# The item id that stands for "before the tenant's first event": every chain of items
# starts somewhere, so a stream opened on an empty log is recovered like any other.
LOG_START_ID = "0" * 26


def from_edge(request: HttpRequest) -> bool:
    """Whether the request came through Pushpin: signed with its `sig_key` (a JWT in
    Grip-Sig). A request straight to a worker is served by the worker, as without the edge."""
    if settings.SSE_EDGE != "pushpin":
        return False
    signature = request.headers.get("grip-sig")
    if not signature:
        return False
    try:
        jwt.decode(signature, settings.PUSHPIN_SIG_KEY, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.PyJWTError:
        return False
    return True


def last_ids(request: HttpRequest) -> dict[str, str]:
    """The `Grip-Last` header of a call-back: the last item id each channel got."""
    found: dict[str, str] = {}
    for entry in request.headers.get("grip-last", "").split(","):
        channel, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "last-id" and channel:
                found[channel.strip()] = value.strip()
    return found


def hold_headers(
    *, channel: str, prev_id: str, connection_id: str, connection_state: str, link: str, link_timeout: int
) -> dict[str, str]:
    """Hold the connection as a stream on `channel` after `prev_id`, with the heartbeat and
    the connection's own channel, and call `link` back after `link_timeout` seconds.

    `link` is the same for every connection of the channel: Pushpin paces its call-backs
    (ten a second) per link, up to a hundred connections at a time, so a link per
    connection would leave thousands of connections waiting minutes for a repair. What is
    the connection's own (`connection_state`, signed) rides as the "previous id" of its
    own channel, which Pushpin sends back in `Grip-Last` with every call-back."""
    channels = [
        f"{channel}; prev-id={prev_id}",
        HEARTBEAT_CHANNEL,
        f"{CONNECTION_CHANNEL_PREFIX}{connection_id}; prev-id={connection_state}",
    ]
    # Should the publisher stop, Pushpin's own keep-alive (an SSE comment) still keeps
    # proxies from closing the connection.
    keep_alive = max(1, int(settings.SSE_HEARTBEAT_SECONDS * 2))
    return {
        "Grip-Hold": "stream",
        "Grip-Channel": ", ".join(channels),
        "Grip-Keep-Alive": f":\\n\\n; format=cstring; timeout={keep_alive}",
        "Grip-Link": f"<{link}>; rel=next; timeout={max(1, link_timeout)}",
    }


def sign_link(state: dict[str, Any]) -> str:
    """The channel's state (the same for all its connections), signed and compressed into
    the path of the call-back link (Pushpin sends no credentials with a call-back: the
    link is the credential). Signing is deterministic, so equal states give one link."""
    return signing.dumps(state, salt=_LINK_SALT, compress=True)


def open_link(token: str) -> dict[str, Any]:
    """The state of a link this service signed; raises signing.BadSignature otherwise."""
    return signing.loads(token, salt=_LINK_SALT)


def sign_connection(state: dict[str, Any]) -> str:
    return signing.dumps(state, salt=_CONNECTION_SALT, compress=True)


def connection_state(last: dict[str, str]) -> dict[str, Any]:
    """The connection's own state from a call-back's `Grip-Last`; raises
    signing.BadSignature when it is missing or not signed by this service."""
    for channel, value in last.items():
        if channel.startswith(CONNECTION_CHANNEL_PREFIX):
            return signing.loads(value, salt=_CONNECTION_SALT)
    raise signing.BadSignature("no connection state")
