"""Server-Sent Events plumbing shared by every stream: framing, the response, and the
life of a stream (heartbeats, token expiry, idle timeout, slow consumers, lease renewal
and clean-up on any exit, a vanished client included).

A stream is an async view that states what is its own (method, stream class, limit, how
it reads its request) and leaves the rest to `serve_stream`, which returns a
StreamingHttpResponse over `EventStream.frames()`: everything that can fail with a status
(auth, body, limits) is checked before the response starts; afterwards failures are
`error` events followed by closing.

`StreamConnection` owns the socket side of a stream: every write is bounded by
`SSE_SEND_TIMEOUT`, a client that went away (whatever the socket's write state) ends the
stream within a second, and the stream's generator is closed there and then, so its
lease and hub subscription are given back without waiting for garbage collection."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import Resolver404, URLResolver, get_resolver, resolve
from django.urls.resolvers import RoutePattern
from django.utils.http import parse_header_parameters

from core.aio import cancellable, run_to_the_end
from core.db_retry import DatabaseUnavailable
from core.http import ApiError, error_response, iso_now
from core.metrics import STREAM_ENDS, STREAM_OPENS, STREAM_RESUMES, STREAMS_OPEN, observe_delivery, tenant_tier
from core.request_context import RequestContext, continue_request, current_context
from core.request_threads import RequestThreads
from events.edge.channels import hold_seconds
from events.edge.grip import from_edge
from events.edge.handoff import hand_off
from events.hub import EventHub, LogEvent, Subscriber, get_hub, run_db
from events.ids import parse_event_id
from events.leases import StreamLease, realtime_unavailable, take_stream_slot
from tenants.callers import Caller, check_stream_caller, stream_caller_check_is_cached
from tenants.cors import require_page_origin
from tenants.policy import authorized_caller

logger = logging.getLogger(__name__)
View = TypeVar("View", bound=Callable[..., Any])

LEASE_RENEWAL_TIMEOUT = 2.0  # seconds; leases last SSE_LEASE_SECONDS (45), renewed every third of it
# How often a write blocked by flow control checks whether the client is still there.
SEND_PROBE_SECONDS = 1.0
# After SSE_SEND_TIMEOUT, how long the SLOW_CONSUMER frame may take before the connection
# is simply dropped.
SLOW_CONSUMER_GRACE_SECONDS = 1.0
# Retry-After of a stream refused by a worker that has begun to stop: by then it has closed
# its listening socket, so the retry reaches another worker (or the restarted one).
SHUTDOWN_RETRY_AFTER_SECONDS = 1

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def sse_frame(event: str, data: Any, *, id: str | None = None) -> bytes:
    """One Server-Sent Events frame; `data` is JSON-encoded unless already a string."""
    lines = []
    if id:
        lines.append(f"id: {id}")
    lines.append(f"event: {event}")
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), default=str)
    lines.extend(f"data: {line}" for line in payload.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def error_frame(code: str, message: str) -> bytes:
    return sse_frame("error", {"code": code, "message": message, "timestamp": iso_now()})


def server_shutdown_frame() -> bytes:
    """The last frame of a stream ended because its worker is stopping."""
    return error_frame("SERVER_SHUTDOWN", "The server is restarting; reconnect with Last-Event-ID.")


def stream_view(view: View) -> View:
    """Mark an async view whose responses are long-lived streams (see StreamAwareASGIHandler).
    Apply it outermost, so the mark is on the function the URLconf holds."""
    view.long_lived_stream = True  # type: ignore[attr-defined]
    return view


def serves_stream(path: str) -> bool:
    endings = _stream_route_endings()
    if endings is not None and path.rstrip("/").rsplit("/", 1)[-1] not in endings:
        return False  # most requests: no URL resolution (Django resolves them once more)
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return getattr(match.func, "long_lived_stream", False)


@functools.cache
def _stream_route_endings() -> frozenset[str] | None:
    """The last path segments of the stream routes (`.../sse`, `.../counts/stream`), so
    other paths are told apart without resolving them; None when a stream route ends in
    a parameter or a regular expression (then every path is resolved)."""
    endings: set[str] = set()

    def walk(patterns: list[Any]) -> bool:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if not walk(entry.url_patterns):
                    return False
            elif getattr(entry.callback, "long_lived_stream", False):
                if not isinstance(entry.pattern, RoutePattern):
                    return False
                last = str(entry.pattern).rstrip("/").rsplit("/", 1)[-1]
                if "<" in last:
                    return False
                endings.add(last)
        return True

    return frozenset(endings) if walk(get_resolver().url_patterns) else None


class StreamConnection:
    """The server side of one stream response: Django's `send`, made safe for clients that
    vanish or stop reading.

    Django ends a streaming response when the server reports `http.disconnect`, but it
    then leaves the stream's generator to the garbage collector, and a server only reports
    the disconnect once the connection is fully lost: a client that half-closes, or whose
    connection dies while the server's writes are blocked by flow control, can keep a
    stream (and its slot) alive. So each body write is bounded:

    - before and while a write waits, the connection is checked about every second; once
      the transport is closing or closed the stream ends;
    - a write still blocked after `SSE_SEND_TIMEOUT` (the client is connected but reads
      nothing) gets a short chance to send `SLOW_CONSUMER`, then the connection is aborted,
      which also drops the server's buffered bytes;
    - on either, the stream's generator is closed at once (lease released, hub left).

    The transport is found on uvicorn's `send` (a bound method of its request cycle);
    under a server where it is not, only the timeout applies and the connection is left
    for the server to close."""

    def __init__(self, send: Callable[..., Any]) -> None:
        self._send = send
        cycle = self._cycle = getattr(send, "__self__", None)
        self.transport: asyncio.BaseTransport | None = getattr(cycle, "transport", None)
        # uvicorn's send waits only while its flow control has paused writing.
        self._flow: Any = getattr(cycle, "flow", None)
        self.streams: list[EventStream] = []
        self.ended = False  # the stream was ended here: no more frames
        self.end_reason: str | None = None  # why, when it was ended here (metrics, logs)
        self.aborted = False  # the connection was dropped: nothing more is written
        # The stream's frames and the log context of the request that opened it, once
        # its response has started, when the live phase is served without Django's request
        # (StreamAwareASGIHandler._serve_live).
        self.live: tuple[AsyncGenerator[bytes, None], RequestContext | None] | None = None
        # How the server tells of the connection's loss without a task listening for it
        # (config.serve.ServiceHttpProtocol); None where it cannot (daphne, another
        # server's protocol): the stream is then served through Django's handler.
        protocol = self.transport.get_protocol() if self.transport is not None else None  # type: ignore[attr-defined]
        self._protocol: Any = protocol if hasattr(protocol, "call_when_lost") else None
        self._live_task: asyncio.Task[Any] | None = None
        self.client_left = False  # the live phase was cancelled because the client left

    @property
    def serves_live_phase(self) -> bool:
        return self._protocol is not None

    def forget_request_head(self) -> None:
        """Let the request's headers go, once Django is done with them. uvicorn keeps them
        for the life of the response, in the scope it gave the app (which the app's
        frames keep too) and on its protocol: for a stream, its credentials for hours and
        about a fifteenth of an idle stream's memory (docs/benchmarks.md, "Memory per idle
        stream"). The list is emptied in place because those references share it; uvicorn
        reads only the scope's method once the response has started."""
        scope = getattr(self._cycle, "scope", None)
        if isinstance(scope, dict) and isinstance(scope.get("headers"), list):
            scope["headers"].clear()

    def end_live_phase_when_lost(self) -> None:
        """From the task serving the live phase: cancel it when the connection is lost."""
        assert self._protocol is not None
        self._live_task = asyncio.current_task()
        self._protocol.call_when_lost(self._lost)

    def _lost(self) -> None:
        task, self._live_task = self._live_task, None
        if task is not None and not task.done():
            self.client_left = True
            task.cancel()

    def stop_watching(self) -> None:
        self._live_task = None
        if self._protocol is not None:
            self._protocol.forget_when_lost()

    def client_gone(self) -> bool:
        return self.transport is not None and self.transport.is_closing()

    @property
    def writes_at_once(self) -> bool:
        """Whether `write_at_once` can be used: the live phase is served here, on uvicorn's
        HTTP/1.1 protocol, whose response is chunked (the encoding `write_at_once` writes)."""
        return self._protocol is not None and getattr(self._cycle, "chunked_encoding", None) is True

    def can_write_at_once(self) -> bool:
        """Whether a body chunk written now goes straight to the socket's buffer: the
        response is going on, the client is there, and flow control has not paused writing
        (then the stream's own task writes, with `send`'s bounds)."""
        cycle = self._cycle
        return not (
            self.ended
            or self.aborted
            or self._flow.write_paused
            or cycle.disconnected
            or cycle.response_complete
            or self.transport.is_closing()  # type: ignore[union-attr]
        )

    async def write_last_words(self) -> bool:
        """From a stream cut by a cancellation: its SERVER_SHUTDOWN frame and the end of
        the response, when the connection takes them at once (uvicorn's `send` does not
        wait then, so this runs to the end in a cancelled task); whether it did."""
        if not (self.writes_at_once and self.can_write_at_once()):
            return False
        frame = server_shutdown_frame()
        self.ended = True
        await self._send({"type": "http.response.body", "body": frame, "more_body": True})
        await self._send({"type": "http.response.body"})
        return True

    def write_at_once(self, body: bytes) -> None:
        """Write a chunk of the response body without a task or an await: what uvicorn's
        `send` does for a `http.response.body` message when it need not wait (checked by
        `can_write_at_once` first). Used when the hub hands events to a stream waiting idle
        (EventStream.write_live), so that a frame costs one call rather than a wake-up of
        the stream's task and a pass through its loop and the ASGI `send`."""
        self.transport.write(b"%x\r\n%b\r\n" % (len(body), body))  # type: ignore[union-attr]

    async def send(self, message: dict[str, Any]) -> None:
        if self.aborted or (self.ended and message.get("more_body")):
            return
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        if self._flow is not None and not self._flow.write_paused and not self.ended and not self.client_gone():
            # Fast path, nearly every frame: the write cannot block, so it needs no timer.
            await self._send(message)
            return
        loop = asyncio.get_running_loop()
        # Once the stream was cut, its last chunk gets only the grace period.
        deadline = loop.time() + (SLOW_CONSUMER_GRACE_SECONDS if self.ended else settings.SSE_SEND_TIMEOUT)
        while True:
            if self.client_gone():
                await self.end(reason="client_gone", abort=True)
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                if self.ended:
                    await self.end(reason="send_timeout", abort=True)
                else:
                    await self._cut_slow_consumer()
                return
            try:
                # Cancelling uvicorn's send while it waits for the socket to drain writes
                # nothing, so the same message can be sent again on the next turn.
                async with asyncio.timeout(min(SEND_PROBE_SECONDS, remaining)):
                    await self._send(message)
                return
            except TimeoutError:
                continue

    async def _cut_slow_consumer(self) -> None:
        frame = error_frame("SLOW_CONSUMER", "The client did not read; reconnect with Last-Event-ID.")
        try:
            async with asyncio.timeout(SLOW_CONSUMER_GRACE_SECONDS):
                await self._send({"type": "http.response.body", "body": frame, "more_body": True})
        except TimeoutError:
            await self.end(reason="send_timeout", abort=True)
        else:
            await self.end(reason="slow_consumer", abort=False)

    async def end(self, *, reason: str, abort: bool) -> None:
        """End the stream now: close its generator (its `finally` gives the slot back),
        and with `abort` drop the connection and whatever the server still buffers."""
        if not self.ended:
            self.ended = True
            self.end_reason = reason
            logger.info("event=stream_cut reason=%s", reason)
        await self.close_streams()
        if abort and not self.aborted:
            self.aborted = True
            if self.transport is not None:
                self.transport.abort()  # type: ignore[attr-defined]

    async def close_streams(self) -> None:
        streams, self.streams = self.streams, []
        for stream in streams:
            with contextlib.suppress(Exception):
                await stream.aclose()


# The connection of the stream request being handled (set per request by the handler, read
# by EventStream.response to register the stream).
_stream_connection: contextvars.ContextVar[StreamConnection | None] = contextvars.ContextVar(
    "stream_connection", default=None
)


class StreamAwareASGIHandler(ASGIHandler):
    """Django's ASGI handler, with two paths:

    - A stream does not hold a thread for its lifetime. Django runs each request's sync
      parts (middleware hooks, signal receivers) on a thread of the request's own, kept
      until the response ends. For a stream open for hours that is an idle thread per
      client: measured at about half of a stream's memory. Streams do their database work
      on events.hub's pool, so their few sync calls (at open and close) share asgiref's
      one global sync thread instead; they go through the async middleware chain.
    - Every other request (the REST API, the pages) runs its whole middleware chain and
      view in one call on the request's thread: Django's synchronous chain, as under WSGI
      and the test client. In the async chain, each of Django's own middlewares (security,
      sessions, CSRF, ...) hops to that thread and back twice per request, and the view
      once more: measured at about a tenth of a ticket change's server CPU
      (docs/benchmarks.md, write throughput). That thread is one of a fixed set kept
      for the process (core.request_threads), not a new one per request.

    A chunked request body (no `Content-Length`) is given its length once read: DRF reads
    a body only as far as `CONTENT_LENGTH` says, so a chunked `POST` or `PATCH` ran as if
    its body were empty (curl sends chunked when its data comes from a pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self._sync_chain = BaseHandler()
        self._sync_chain.load_middleware(is_async=False)
        self._threads = RequestThreads(settings.REQUEST_THREADS)

    def create_request(self, scope: dict[str, Any], body_file: Any) -> tuple[HttpRequest | None, Any]:
        request, refusal = super().create_request(scope, body_file)
        if request is not None and "CONTENT_LENGTH" not in request.META:
            # read_body has read it all into body_file and rewound it.
            size = body_file.seek(0, os.SEEK_END)
            body_file.seek(0)
            if size:
                request.META["CONTENT_LENGTH"] = str(size)
        return request, refusal

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        if _stream_connection.get() is not None:
            return await super().get_response_async(request)
        return await sync_to_async(self._sync_chain.get_response, thread_sensitive=True)(request)

    async def send_response(self, response: HttpResponseBase, send: Callable[..., Any]) -> None:
        """A stream's frames go from its generator to the connection as they come. Django's
        own loop passes each one through two more async generators and a chunking
        generator (`StreamingHttpResponse.__aiter__`, `streaming_content`,
        `chunk_bytes`), every one of them resumed again at each wake-up of each stream:
        about 4 % of a worker's busy time with 2,000 streams open
        (docs/benchmarks.md, "Where a frame's CPU went").

        Under uvicorn the frames are not sent from here at all: once the response has
        started, they are handed to the connection and Django's handler finishes with the
        request (`_serve_live`). Under a server whose transport is not known (daphne) they
        are sent from here, for the life of the stream."""
        frames = getattr(response, "sse_frames", None)
        if frames is None:
            await super().send_response(response, send)
            return
        await send({"type": "http.response.start", "status": response.status_code, "headers": _headers_of(response)})
        connection = _stream_connection.get()
        if connection is not None and connection.serves_live_phase:
            # Served after Django's handler is done with the request (_serve_live).
            connection.live = (frames, current_context())
            return
        await _send_frames(frames, send)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "http":
            path = scope["path"].removeprefix(get_script_prefix(scope))  # Django's path_info
            if serves_stream(path):
                connection = StreamConnection(send)
                token = _stream_connection.set(connection)
                try:
                    await self.handle(scope, receive, connection.send)
                    if connection.live is not None:
                        await self._serve_live(connection)
                finally:
                    _stream_connection.reset(token)
                    # Django may have dropped the response on disconnect without closing
                    # the generator: close it now, not whenever it is collected.
                    await run_to_the_end(connection.close_streams(), what="stream_close")
                return
            async with self._threads.request_context():
                await self.handle(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    @staticmethod
    async def _serve_live(connection: StreamConnection) -> None:
        """The live phase of a stream whose response has started, after Django's handler
        has finished with its request: the request and the response (their headers, the
        middlewares' state, the URL match) are closed as Django closes them and let go,
        and so is the handler's own task. What an idle stream holds is then its own
        state, uvicorn's connection and this one task (the server's), which writes the
        frames in the context of the request that opened it, so its log lines keep the
        request's id, tenant and user. The server's protocol cancels it when the client
        leaves (`StreamConnection.end_live_phase_when_lost`), where Django's handler has a
        second task per request waiting on `receive()` for `http.disconnect`. Measured:
        docs/benchmarks.md, "Memory per idle stream".

        Not `receive()`, either from here or from a task of its own: uvicorn wakes only
        the connection's latest request, and a client that sends another request on the
        stream's connection makes that one the latest."""
        assert connection.live is not None
        frames, context = connection.live
        connection.live = None
        continue_request(context)
        connection.forget_request_head()
        connection.end_live_phase_when_lost()
        # Known to the hub, which cancels it in time if the process stops (EventHub.close_all).
        stream_tasks = get_hub().stream_tasks
        task = asyncio.current_task()
        if task is not None:
            stream_tasks.add(task)
        try:
            # The generator starts here, before the loss can cancel this task (the
            # protocol calls back from the event loop, at the earliest once this task
            # waits): its clean-up (lease, subscription) runs however the stream ends.
            await _send_frames(frames, connection.send)
        except asyncio.CancelledError:
            # The client left: the stream is over, which is no failure of the server's.
            if not connection.client_left or (task is not None and task.uncancel() > 0):
                # Cut by the server (the process is stopping, EventHub.close_all): the
                # stream has given its slot back (its `finally`); tell the client why and
                # end the body properly, so it reconnects with Last-Event-ID rather than
                # seeing a broken response. Then the request is over, which is no failure.
                if connection.client_left or not await connection.write_last_words():
                    raise
                if task is not None:
                    task.uncancel()
        finally:
            connection.stop_watching()
            stream_tasks.discard(task)  # type: ignore[arg-type]


async def _send_frames(frames: AsyncGenerator[bytes, None], send: Callable[..., Any]) -> None:
    async with contextlib.aclosing(frames):
        async for frame in frames:
            if frame:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body"})


def _headers_of(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    """The response's headers and cookies as ASGI wants them (as Django's send_response)."""
    headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
    headers.extend((b"Set-Cookie", c.output(header="").encode("ascii").strip()) for c in response.cookies.values())
    return headers


def new_connection_id() -> str:
    return f"conn-{uuid.uuid4().hex[:16]}"


class EventStream:
    """Base of the app streams. Subclasses send their opening frames (`opening`) and turn
    a log event into a frame for this client, or None to skip it (`render`); a view opens
    one with `serve_stream`.

    `self.position` is the last event id the client is known to have (the snapshot's log
    position or the last replayed id); live events at or below it are dropped."""

    kind = "stream"
    # A stream that can tell from the event alone that it has nothing to send sets this to
    # a method, so it is not woken for such events (Subscriber.accepts).
    interested: Callable[[LogEvent], bool] | None = None
    # When (time.monotonic()) the stream's own periodic work (`tick`) is next due.
    next_tick = float("inf")
    # Set by `opening` or `render` when the stream has nothing more to say (its last
    # frame an error); a `render` that sets it also wakes the stream (`Subscriber.wake`).
    finished = False
    # Whether the hub may write this stream's events to its client itself while the stream
    # waits (`write_live`); False for a stream whose own loop decides when frames go.
    written_by_hub = True
    # Whether Pushpin can hold this kind of stream (SSE_EDGE=pushpin; events.edge): then
    # `edge_channel` names its channel, and its frames are registered with
    # events.edge.channels.register_kind.
    edge_held = False

    def __init__(
        self,
        *,
        caller: Caller,
        hub: EventHub | None,
        subscriber: Subscriber | None,
        lease: StreamLease,
        last_event_id: uuid.UUID | None = None,
    ) -> None:
        self.caller = caller
        # None only for a stream handed to the edge, which never runs `frames`.
        self.hub: EventHub = hub  # type: ignore[assignment]
        self.subscriber: Subscriber = subscriber  # type: ignore[assignment]
        self.lease = lease
        # Where the client asks to resume (`last_event_id_from`); None for a fresh start.
        self.last_event_id = last_event_id
        self.connection_id = new_connection_id()
        self.position: uuid.UUID | None = None
        self.started = time.monotonic()
        # The socket side, which knows when a client vanished or stopped reading.
        self.connection = _stream_connection.get()
        # Why the stream ended, when it ended itself (an `error` frame's code, lower case).
        self.end_reason: str | None = None
        self.events_sent = 0
        # The browser page's Origin and the Host it was sent to (`serve_stream`), or None:
        # a page on an origin its tenant no longer allows must stop receiving.
        self.page: tuple[str, str] | None = None
        # The stream's frames, once its response is made (`response`), and whether they
        # have started: until then the frames' clean-up would not run (`aclose`).
        self._frames: AsyncGenerator[bytes, None] | None = None
        self._frames_started = False

    def response(self) -> StreamingHttpResponse:
        """The stream's response. Its connection closes the stream (`aclose`) when the
        request is over, however far the stream got."""
        frames = self._frames = self.frames()  # type: ignore[assignment]
        connection = _stream_connection.get()
        if connection is not None:
            connection.streams.append(self)
        response = StreamingHttpResponse(frames, content_type="text/event-stream; charset=utf-8")
        for name, value in SSE_HEADERS.items():
            response[name] = value
        # What StreamAwareASGIHandler.send_response writes out itself (no middleware here
        # replaces a response's streaming content).
        response.sse_frames = frames  # type: ignore[attr-defined]
        return response

    async def aclose(self) -> None:
        """End the stream, however far it got. Its frames' own clean-up (lease, hub,
        metrics) runs once they have started; a stream whose frames never started (the
        client left between the view's answer and the response's start, and Django
        cancelled the request) gives back here the hub subscription and the slot that
        `serve_stream` took for it, which would otherwise stay: the subscription for
        the life of the process, the slot until its lease ran out."""
        started = self._frames_started
        if self._frames is not None:
            await self._frames.aclose()  # an unstarted generator can then never start
        if started:
            return
        self._frames_started = True  # given back once
        self.hub.unsubscribe(self.subscriber)
        await give_back_slot(self.lease)

    def note_resume(self, *, resumed: bool) -> None:
        """The client asked to resume: were its missed events replayed, or is it reset?"""
        STREAM_RESUMES.labels(self.kind, "resumed" if resumed else "reset").inc()

    def _ended_because(self) -> str:
        if self.end_reason is not None:
            return self.end_reason
        cut = self.connection.end_reason if self.connection is not None else None
        # Closed from outside without a reason of the socket's (slow_consumer,
        # send_timeout): the client went away.
        return "client" if cut in (None, "client_gone") else cut

    async def opening(self) -> AsyncIterator[bytes]:
        raise NotImplementedError
        yield b""  # pragma: no cover

    def render(self, event: LogEvent) -> bytes | None:
        raise NotImplementedError

    def edge_channel(self) -> tuple[str, dict[str, Any]]:
        """The Pushpin channel of this stream and the JSON spec its frames are built from."""
        raise NotImplementedError

    def render_note(self, note: dict[str, Any]) -> bytes | None:
        """A frame for out-of-log news of the stream's `subscriber.topic`, or None."""
        return None

    async def tick(self) -> AsyncIterator[bytes]:
        """The stream's own periodic work, run at `next_tick` (which it moves on)."""
        self.next_tick = float("inf")
        return
        yield b""  # pragma: no cover

    async def closed(self) -> None:
        """Clean-up of the stream's own, after its last frame (whatever ended it)."""

    def accept(self, event: LogEvent) -> bytes | None:
        if not event.replayed and self.position is not None and event.id.int <= self.position.int:
            return None
        frame = self.render(event)
        if not event.replayed:
            self.position = event.id
        return frame

    def write_live(self, events: list[LogEvent]) -> bool:
        """Write the frames of events to the client at once, from the hub (`Subscriber.live`,
        set while this stream waits idle in its live phase). False, with nothing changed,
        when the connection cannot take a write now: the events then wait for the stream's
        task, which writes them with the bounds of `StreamConnection.send`."""
        connection = self.connection
        if connection is None or not connection.can_write_at_once():
            return False
        position = self.position
        try:
            batch, chunk = self._render(events)
        except Exception:
            # Not the hub's failure: the stream's task renders them again, meets the same
            # error and ends this stream alone, as it would have without this path.
            self.position = position
            return False
        if batch:
            connection.write_at_once(chunk)
            self._sent(batch)
        return True

    def _render(self, events: list[LogEvent]) -> tuple[list[tuple[LogEvent, bytes]], bytes]:
        """The frames this client gets for events (`accept`, which moves `position`), and
        the one chunk that writes them all."""
        batch = [(event, frame) for event in events if (frame := self.accept(event))]
        if len(batch) == 1:
            return batch, batch[0][1]
        return batch, b"".join(frame for _, frame in batch)

    def _sent(self, batch: list[tuple[LogEvent, bytes]]) -> None:
        self.events_sent += len(batch)
        kind = self.kind
        for event, _ in batch:
            if not event.replayed:
                observe_delivery(kind, event.id)

    async def frames(self) -> AsyncIterator[bytes]:
        # From here the `finally` below gives everything back (no await before it).
        self._frames_started = True
        heartbeat = settings.SSE_HEARTBEAT_SECONDS
        renew_every = settings.SSE_LEASE_SECONDS / 3
        loop_time = time.monotonic
        start = loop_time()
        next_heartbeat = start + heartbeat
        next_renewal = start + renew_every
        idle_deadline = self.started + settings.SSE_IDLE_TIMEOUT_SECONDS
        expires = self.caller.token_expires_at
        token_deadline = loop_time() + (expires.timestamp() - time.time()) if expires else float("inf")
        credential_every = settings.SSE_CREDENTIAL_CHECK_SECONDS
        # From the same start as the renewals: by default both are due every 15 s, so an
        # idle stream wakes no more often for its credential than it did for its lease.
        next_credential_check = start + credential_every
        tier = tenant_tier(self.caller.tenant)
        logger.info(
            "event=stream_open kind=%s conn=%s tenant=%s user=%s resume=%s",
            self.kind,
            self.connection_id,
            self.caller.tenant.id,
            self.caller.user.id,
            self.last_event_id is not None,
        )
        STREAM_OPENS.labels(self.kind, tier, "opened").inc()
        STREAMS_OPEN.labels(self.kind, tier).inc()
        try:
            first = True
            async for frame in self.opening():
                # Tell EventSource clients how soon to reconnect, inside the first frame
                # (a retry-only block is dispatched as an empty message by some clients).
                yield (b"retry: 3000\n" + frame) if first else frame
                first = False
            # The response layers keep a reference to the last chunk until the next one,
            # and so did `frame`: an idle stream would hold its snapshot (tens of KB) for
            # as long as it is open. An empty chunk releases it and puts nothing on the wire.
            frame = b""
            yield frame
            if self.written_by_hub and self.connection is not None and self.connection.writes_at_once:
                # From now on, events that come while the stream waits are written by the
                # hub (`write_live`); the loop below writes what came while it was busy.
                self.subscriber.live = self
            while not self.finished:
                # Everything that arrived since the last wake-up goes out as one write.
                batch, frame = self._render(self.subscriber.drain())
                if batch:
                    yield frame
                    # The write is done when the generator is resumed.
                    self._sent(batch)
                    if self.finished:
                        return  # that was its last frame (the stream's `render` said so)
                # An idle stream must not keep its last events (and their cached frames).
                batch = frame = None  # type: ignore[assignment]
                note = self.subscriber.take_note()
                if note is not None:
                    frame = self.render_note(note)
                    if frame is not None:
                        yield frame
                if self.subscriber.overflowed:
                    self.end_reason = "slow_consumer"
                    yield error_frame("SLOW_CONSUMER", "The stream fell behind; reconnect with Last-Event-ID.")
                    return
                if self.subscriber.closing:
                    self.end_reason = "server_shutdown"
                    yield server_shutdown_frame()
                    return
                now = loop_time()
                if now >= token_deadline:
                    self.end_reason = "token_expired"
                    yield error_frame("TOKEN_EXPIRED", "Authentication token has expired")
                    return
                if now >= idle_deadline:
                    self.end_reason = "idle_timeout"
                    yield error_frame("IDLE_TIMEOUT", "The stream was open too long without client activity.")
                    return
                if now >= next_credential_check:
                    refusal = await self._credential_refusal()
                    if refusal is not None:
                        self.end_reason = "unauthorized"
                        yield error_frame(refusal.code, refusal.message)
                        return
                    next_credential_check = now + credential_every
                if now >= next_heartbeat:
                    yield sse_frame("heartbeat", {"timestamp": iso_now()})
                    next_heartbeat = now + heartbeat
                if now >= next_renewal:
                    await self._renew_lease()
                    next_renewal = now + renew_every
                if now >= self.next_tick:
                    async for frame in self.tick():
                        yield frame
                if self.connection is not None and self.connection.client_left:
                    # The client left while the stream awaited something that swallowed
                    # the cancellation telling it so (a library's I/O): nothing would wake
                    # this stream before its next write, a heartbeat away.
                    return
                next_due = min(
                    next_heartbeat, next_renewal, token_deadline, idle_deadline, next_credential_check, self.next_tick
                )
                await self.subscriber.wait(next_due - loop_time())
        except ApiError as error:
            # Refused after the response started (the database failed the snapshot's or
            # a replay's read: core.db_retry's 503): the client is told so in an `error`
            # event and the body ends properly, so it reconnects with Last-Event-ID, where
            # it used to get a broken response and the log an unhandled exception.
            self.end_reason = self.end_reason or "error"
            logger.warning("event=stream_failed kind=%s conn=%s code=%s", self.kind, self.connection_id, error.code)
            yield error_frame(error.code, error.message)
        except Exception:
            self.end_reason = self.end_reason or "error"
            raise
        except asyncio.CancelledError:
            if self.connection is None or not self.connection.client_left:
                self.end_reason = self.end_reason or "server_shutdown"  # cut by the server
            raise
        finally:
            self.subscriber.live = None
            self.hub.unsubscribe(self.subscriber)
            try:
                with contextlib.suppress(Exception):
                    await give_back_slot(self.lease)
                with contextlib.suppress(Exception):
                    await run_to_the_end(self.closed(), what="stream_closed")
            finally:
                # Counted and logged even when a cancellation cuts the clean-up short.
                reason = self._ended_because()
                STREAMS_OPEN.labels(self.kind, tier).dec()
                STREAM_ENDS.labels(self.kind, reason).inc()
                logger.info(
                    "event=stream_closed kind=%s conn=%s tenant=%s user=%s reason=%s events=%d seconds=%.1f",
                    self.kind,
                    self.connection_id,
                    self.caller.tenant.id,
                    self.caller.user.id,
                    reason,
                    self.events_sent,
                    time.monotonic() - self.started,
                )

    async def _credential_refusal(self) -> ApiError | None:
        """What a new request with this stream's credential would be refused with now, or
        None while it holds (tenants.callers.check_stream_caller); for a page of another
        origin, also that its tenant still allows it (`ORIGIN_NOT_ALLOWED`: its requests
        are no longer readable there). A check that fails (the database away) keeps the
        stream: the next one is a period later."""
        try:
            if self.page is None and stream_caller_check_is_cached(self.caller):
                _still_admitted(self.caller, None)  # dictionary lookups: no thread hop
            else:
                await run_db(_still_admitted, self.caller, self.page)
        except ApiError as refusal:
            if refusal.status < 500:
                logger.info(
                    "event=stream_unauthorized kind=%s conn=%s tenant=%s user=%s code=%s",
                    self.kind,
                    self.connection_id,
                    self.caller.tenant.id,
                    self.caller.user.id,
                    refusal.code,
                )
                return refusal
        except Exception:
            logger.warning(
                "event=stream_credential_check_failed kind=%s conn=%s", self.kind, self.connection_id, exc_info=True
            )
        return None

    async def _renew_lease(self) -> None:
        """Renew the stream's lease. Bounded: a Redis that stops answering must not hold up
        the stream's events; a renewal missed now is made up at the next one.

        The call runs in a task of its own and the stream awaits it through a shield: the
        Redis client can swallow a cancellation that arrives during a command (seen with
        redis-py's pooled connections), and a cancellation is how the live phase learns
        that its client left (StreamConnection._lost). In production every heartbeat is
        also a renewal (30 s, 45 s / 3), so a client that closed right after a heartbeat
        kept its stream and slot until the next one."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LEASE_RENEWAL_TIMEOUT):
                await cancellable(self.lease.renew())


def _still_admitted(caller: Caller, page: tuple[str, str] | None) -> None:
    check_stream_caller(caller)
    if page is not None:
        require_page_origin(caller.tenant.id, *page)


async def give_back_slot(lease: StreamLease) -> None:
    """Release a stream's lease so that it is released even if the caller is cancelled
    meanwhile. `run_to_the_end` shields the release from the caller's cancellation, but
    not from its own: when the server gives up on its open requests (uvicorn's graceful
    shutdown timeout) and then exits, asyncio cancels every task, the release's too, and
    the slot stayed taken until its lease expired. Then the release is made without an
    await (bounded; events.leases.RELEASE_NOW_TIMEOUT), and the cancellation goes on."""
    try:
        await run_to_the_end(lease.release(), what="lease_release")
    except asyncio.CancelledError:
        try:
            lease.release_now()
        except Exception as error:
            logger.warning("event=cleanup_failed what=lease_release_now error=%s", type(error).__name__)
        raise


def refuse_while_shutting_down() -> None:
    """`503 SERVICE_UNAVAILABLE` for a stream asked of a worker that has begun to stop
    (its hub has told its streams to end with SERVER_SHUTDOWN): a client reconnecting at
    once can land on it again before it stops accepting connections, and a stream opened
    then would be cut at the graceful shutdown timeout. Refused before it takes a slot,
    with `Retry-After` and `Connection: close`, so the retry opens a new connection."""
    if get_hub().closing:
        raise ApiError(
            503,
            "SERVICE_UNAVAILABLE",
            "The server is restarting; retry shortly.",
            details={"reason": "shutting_down"},
            headers={"Retry-After": str(SHUTDOWN_RETRY_AFTER_SECONDS), "Connection": "close"},
        )


def last_event_id_from(request: HttpRequest, fallback: str | None = None) -> uuid.UUID | None:
    """The client's resume position: the `Last-Event-ID` header (what EventSource sends
    on reconnect), else `fallback` (a body or query field); 400 if it is not an event id."""
    raw = request.headers.get("last-event-id") or fallback
    if not raw:
        return None
    try:
        return parse_event_id(raw)
    except ValueError:
        raise ApiError(400, "INVALID_LAST_EVENT_ID", "Last-Event-ID must be an event id (ULID).") from None


async def subscribe_with_lease(
    hub: EventHub, lease: StreamLease, tenant_id: uuid.UUID, user_id: uuid.UUID | None = None
) -> Subscriber:
    """Subscribe a stream that holds `lease`, before its response starts. If that fails,
    or the client goes away meanwhile, the lease is given back at once.

    A failure is the one answer every stream gives before starting, a 503 with
    Retry-After in the envelope, which browser clients retry with backoff: the database's
    own `DatabaseUnavailable` (with `details.outcome` and DATABASE_RETRY_AFTER_SECONDS,
    as on every endpoint) when the feed's database read failed, else SERVICE_UNAVAILABLE
    with SSE_RETRY_AFTER_SECONDS."""
    try:
        return await hub.subscribe(tenant_id, user_id=user_id)
    except asyncio.CancelledError:
        await give_back_slot(lease)
        raise
    except Exception as exc:
        logger.warning("event=subscribe_failed tenant=%s", tenant_id, exc_info=True)
        with contextlib.suppress(Exception):  # the lease store may be what failed
            await lease.release()
        # A stream that joined a feed another stream was starting sees that start's
        # failure as the cause of its own.
        database = exc if isinstance(exc, DatabaseUnavailable) else exc.__cause__
        if isinstance(database, DatabaseUnavailable):
            raise DatabaseUnavailable(database.outcome) from exc
        raise realtime_unavailable() from exc


async def open_subscription(
    kind: str, caller: Caller, limit: int, *, private: bool = False
) -> tuple[EventHub, Subscriber, StreamLease]:
    """What every stream takes before its response starts: one of the user's `limit`
    slots for streams of `kind` (429 / 503, see `take_stream_slot`) and a hub subscription
    for the caller's tenant, or with `private` for the events addressed to the caller only
    (503, see `subscribe_with_lease`). Raises ApiError; the view answers it."""
    lease = await take_stream_slot(kind, caller, limit)
    hub = get_hub()
    user_id = caller.user.id if private else None
    return hub, await subscribe_with_lease(hub, lease, caller.tenant.id, user_id), lease


class StreamArguments(NamedTuple):
    """What a stream view reads from its request, besides what every stream reads."""

    options: dict[str, Any]  # the stream class's own keyword arguments
    resume_from: str | None = None  # a body or query `lastEventId` (the header wins)


def accepts_event_stream(accept: str | None) -> bool:
    """Does an `Accept` header take `text/event-stream`? By the most specific range that
    names it (`text/event-stream`, then `text/*`, then `*/*`), whose `q=0` refuses it
    (RFC 9110 12.5.1); no header at all takes anything.

    Parameters other than `q` are not compared: Django's `request.accepts` matched a range
    with parameters only to a type with the same ones, so `text/event-stream;
    charset=utf-8` (what some clients send, and what these streams are) was a 406, and it
    dropped `q=0` ranges, so `text/event-stream;q=0, */*` was taken."""
    if accept is None:
        return True
    best: tuple[int, float] | None = None  # (specificity, q) of the most specific match
    for token in accept.split(","):
        try:
            media_range, params = parse_header_parameters(token)
        except ValueError:  # an RFC 2231 parameter in an unknown charset: not a range we take
            continue
        specificity = _EVENT_STREAM_RANGES.get(media_range)
        if specificity is None:
            continue
        weight = (specificity, _quality(params.get("q")))
        # Ranges as specific as one another (`text/event-stream;charset=latin-1;q=0,
        # text/event-stream`) differ in parameters this check does not read: the
        # most willing one decides.
        if best is None or weight > best:
            best = weight
    return best is not None and best[1] > 0


_EVENT_STREAM_RANGES = {"text/event-stream": 2, "text/*": 1, "*/*": 0}


def _quality(value: str | None) -> float:
    # A weight that is not a number from 0 to 1 is ignored (as Django does): the range
    # counts at the default weight rather than refusing the whole header.
    try:
        quality = float(value) if value is not None else 1.0
    except ValueError:
        return 1.0
    return quality if 0 <= quality <= 1 else 1.0


async def serve_stream(
    request: HttpRequest,
    stream_class: type[EventStream],
    *,
    method: str,
    limit: int,
    private: bool = False,
    read_request: Callable[[HttpRequest, Caller], StreamArguments | Awaitable[StreamArguments]],
) -> HttpResponse:
    """The whole of a stream view but what is its own: the method check, the caller (and
    the policy), the view's own reading of the request (`read_request`, given the
    caller; raises ApiError; may be a coroutine), the resume position, a slot of the user's `limit` for
    streams of `stream_class.kind` and a hub subscription (`open_subscription`), in this
    order. Every failure before the response starts is answered in the envelope."""
    # Django counts the query's parameters (DATA_UPLOAD_MAX_NUMBER_FIELDS) only when
    # request.GET is first read; DRF views read it in content negotiation and most streams
    # in their read_request, but a stream that takes no parameter (the saved-view counts)
    # never did and opened with any number of them. Read before anything else, as DRF
    # does: TooManyFieldsSent is answered by core.errors (400 TOO_MANY_PARAMETERS).
    request.GET  # noqa: B018
    if request.method != method:
        return error_response(ApiError(405, "METHOD_NOT_ALLOWED", f"Use {method}.", headers={"Allow": method}))
    if not accepts_event_stream(request.headers.get("accept")):
        return error_response(ApiError(406, "NOT_ACCEPTABLE", "This endpoint answers text/event-stream."))
    held_by_edge = stream_class.edge_held and from_edge(request)
    try:
        if not held_by_edge:  # Pushpin holds those, not this worker
            refuse_while_shutting_down()
        caller = await run_db(authorized_caller, request)
        arguments = read_request(request, caller)
        if inspect.isawaitable(arguments):  # a view that must look something up first
            arguments = await arguments
        last_event_id = last_event_id_from(request, arguments.resume_from)
        if held_by_edge:
            lease = await take_stream_slot(stream_class.kind, caller, limit, ttl=hold_seconds())
        else:
            hub, subscriber, lease = await open_subscription(stream_class.kind, caller, limit, private=private)
    except ApiError as error:
        return error_response(error)
    if held_by_edge:
        # Pushpin holds the connection; the stream only opens it (events.edge).
        stream = stream_class(
            caller=caller, hub=None, subscriber=None, lease=lease, last_event_id=last_event_id, **arguments.options
        )
        return await hand_off(stream, *stream.edge_channel())
    stream = stream_class(
        caller=caller, hub=hub, subscriber=subscriber, lease=lease, last_event_id=last_event_id, **arguments.options
    )
    subscriber.accepts = stream.interested
    origin = request.headers.get("origin")
    if origin is not None:
        stream.page = (origin, request.get_host())
    return stream.response()
