"""Run the service: `python -m config.serve [--host H] [--port P] [--workers N] [--server uvicorn|daphne]`.

The one place that says how the ASGI server is started, for `make run`, the compose file,
the test fixtures and the benchmarks alike. uvicorn is the default; daphne (the server
the Channels design names) stays a supported choice.

Why uvicorn: measured with `bench/list_stream_fanout.py` (docs/benchmarks.md), it sends
stream frames for less CPU than daphne, so they arrive sooner, and it applies
backpressure (a stream's writer waits while the client's socket buffer is full), so a
client that stops reading is caught by the hub's bounded queue (SLOW_CONSUMER).

What uvicorn does not do by itself is added here: a deadline for a request's head
(`ServiceHttpProtocol`: uvicorn waits for ever on a connection that sends half a
request line, so a few hundred slow clients could hold every socket — "slowloris"), a
bound on its size (uvicorn's httptools protocol buffers a head of any size: ten
megabytes of headers were read and answered), the same for a body (its size, refused
from the `Content-Length` before `100 Continue`, and a deadline between its reads: a
body was read whole, 52 MB spooled to disk, before the application refused it, and
one that never came held its connection for ever), refusals in the API's error
envelope (431, 413, 408, and 400 for what its parser refuses, which uvicorn answered in
plain text), the websocket handshake's bounds raised to the head's (the websockets
library re-parses it with 8 KB lines) and its messages bounded to the protocol's size,
keeping credentials out of its log lines (config.log_redaction on its handlers), and
telling a stream when its connection is lost without a task per stream listening for it
(`ServiceHttpProtocol.call_when_lost`, used by events.sse).

Each start also gives the workers an empty directory for their metrics
(`PROMETHEUS_MULTIPROC_DIR`, core.metrics) before any of them starts: the operator's, emptied
of a previous run's files, or a temporary one removed when the server exits.

Behind a reverse proxy (deploy/nginx), the client's address and scheme come from the
proxy's `X-Forwarded-For` / `X-Forwarded-Proto`, but only on connections from the
addresses in `FORWARDED_ALLOW_IPS` (comma-separated addresses or networks, `*` for any):
the same header from anyone else is ignored, so a client cannot choose the address the
logs show. Unset, no peer is trusted (a server reached directly).

daphne runs one process (`--workers 1`): it has no supervisor of worker processes. Run
several daphne processes on their own ports behind the proxy instead (docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import uvicorn
from django.core.exceptions import ImproperlyConfigured
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from config.env import env_int, env_log_level, exit_misconfigured, load_settings_or_exit
from config.local_env import load_local_env

# A request head's bounds, those of the shipped nginx (`large_client_header_buffers 4 64k`,
# deploy/nginx), so that a request passes or fails alike with and without the proxy: a
# request line or a header line up to 64 KB (a bearer token of a user in hundreds of
# groups is tens of KB), the head up to four of them.
MAX_HEADER_LINE_BYTES = 65_536
MAX_HEAD_BYTES = 4 * MAX_HEADER_LINE_BYTES
# The largest message a partner sends on the websocket (docs/api.md): a subscribe with
# the 50 types the server takes, each of 255 characters written as JSON escapes of
# characters outside the BMP (12 bytes each), is 153 KB; every real one is far smaller.
# uvicorn's default, 16 MB, let every socket make its worker hold that much.
MAX_WEBSOCKET_MESSAGE_BYTES = 262_144


# How long a connection whose request was refused once its head was read is kept open to
# drop what the client still sends (nginx's lingering close). Closed at once with bytes
# unread, the kernel resets it, and a client still sending its body (one that did not wait
# for `100 Continue`) loses the answer.
_LINGER_SECONDS = 5.0


class _Unread:
    """The parser of a connection whose request was refused: what comes after is dropped."""

    @staticmethod
    def feed_data(data: bytes) -> None:
        pass


class _Refused(Exception):
    """Raised from a parser callback once `ServiceHttpProtocol.edge.refusal` is set:
    httptools stops there and uvicorn calls `send_400_response`, which sends it."""


def _refusal(status: bytes, code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """A refusal the server makes before the application sees the request, in the API's
    error envelope (as the shipped nginx answers its own), closing the connection."""
    from core.http import envelope  # the application is loaded by the time a request comes

    body = json.dumps(envelope(code, message, details)).encode()
    head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    return head % (status, len(body)) + body


def _header_too_large_response() -> bytes:
    return _refusal(
        b"431 Request Header Fields Too Large",
        "HEADER_TOO_LARGE",
        f"A request header line is larger than {MAX_HEADER_LINE_BYTES} bytes, "
        f"or the request head larger than {MAX_HEAD_BYTES}.",
        {"limit": MAX_HEADER_LINE_BYTES, "headLimit": MAX_HEAD_BYTES},
    )


def _payload_too_large_response(limit: int) -> bytes:
    return _refusal(
        b"413 Payload Too Large",
        "PAYLOAD_TOO_LARGE",
        f"The request body is larger than {limit} bytes.",
        {"limit": limit},
    )


def _transfer_coding_not_implemented_response() -> bytes:
    return _refusal(
        b"501 Not Implemented",
        "NOT_IMPLEMENTED",
        "The Transfer-Encoding of a request body must be chunked, or absent (with a Content-Length).",
    )


def _body_timeout_response(timeout: float) -> bytes:
    return _refusal(
        b"408 Request Timeout",
        "REQUEST_TIMEOUT",
        f"No byte of the request body arrived for {timeout:g} s.",
        {"timeout": timeout},
    )


def _malformed_request_response() -> bytes:
    return _refusal(
        b"400 Bad Request",
        "INVALID_REQUEST",
        "The request is not valid HTTP/1.1 (a control character or NUL in a header, a folded header line, "
        "an unknown method, a malformed request line).",
    )


_HEADER_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 22\r\nconnection: close\r\n\r\nRequest header timeout"
)


class _PipelinedRequests(list[Any]):
    """uvicorn's queue of the requests a client sent before the previous response was
    done (it calls `appendleft`, `pop` and tests it for emptiness), as a list: uvicorn's
    deque costs 760 bytes on every connection, nearly always empty, about a twentieth of
    an idle stream's memory (docs/benchmarks.md, "Memory per idle stream"). It rarely
    holds more than one or two, so inserting at the front costs nothing."""

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class LeanEvent:
    """`asyncio.Event` as uvicorn uses it (`set`, `clear`, `is_set`, `wait`), in two slots,
    its list of waiters made only when something waits. Every connection carries two
    events (the request cycle's `message_event`, the flow control's "writable" event)
    that an idle stream never waits on, and each `asyncio.Event` costs about 1.1 KB (an
    instance dictionary and a 760-byte deque): a tenth of an idle stream's memory
    (docs/benchmarks.md, "Memory per idle stream")."""

    __slots__ = ("_is_set", "_waiters")

    def __init__(self, is_set: bool = False) -> None:
        self._is_set = is_set
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> bool:
        if self._is_set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            return await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class _ConnectionEdge:
    """ServiceHttpProtocol's own state for one connection."""

    __slots__ = ("body_bytes", "deadline", "head_bytes", "head_started", "refusal", "when_lost")

    def __init__(self) -> None:
        # The head's deadline until it is complete, then its body's until that is: one at
        # a time, so one slot (six keep the object in the allocator's 80-byte class).
        self.deadline: asyncio.TimerHandle | None = None
        self.head_started = False
        # Bytes received while the current head was incomplete (not counting the read it
        # began in); bytes of its body so far.
        self.head_bytes = 0
        self.body_bytes = 0
        # What `send_400_response` sends for a request a parser callback refused.
        self.refusal: bytes | None = None
        self.when_lost: Callable[[], object] | None = None


def graceful_shutdown_seconds() -> float:
    """How long a worker told to stop lets what is in flight finish
    (settings.SERVER_GRACEFUL_SHUTDOWN_SECONDS)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    return float(settings.SERVER_GRACEFUL_SHUTDOWN_SECONDS)


@functools.cache
def _header_timeout() -> float:
    from django.conf import settings  # configured by now: the app was loaded first

    return float(settings.HTTP_HEADER_TIMEOUT_SECONDS)


@functools.cache
def _body_timeout() -> float:
    from django.conf import settings

    return float(settings.HTTP_BODY_TIMEOUT_SECONDS)


@functools.cache
def _max_body_bytes() -> int | None:
    """The application's own limit (413 PAYLOAD_TOO_LARGE, core.json_input), held here
    before a byte of the body is read; None: no limit."""
    from django.conf import settings

    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


class ServiceHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), with a deadline and a bound for each
    request's head and body, and a callback for the connection's loss.

    The head's clock starts when the connection opens (for its first request) or when the
    first byte of a later request arrives, and stops when the head is complete: a
    response or a stream is never timed by it (uvicorn's keep-alive timeout covers idle
    connections between requests). A head started but not complete in time gets `408`
    and the connection is closed; a connection that sent nothing at all is just closed
    (a browser's speculative pre-connection must not read a stray response).

    A body gets `HTTP_BODY_TIMEOUT_SECONDS` between two of its reads (nginx's
    `client_body_timeout`, deploy/nginx), counted only while the server reads it, and is
    held to the application's limit (`DATA_UPLOAD_MAX_MEMORY_SIZE`): a `Content-Length`
    over it is refused with the head, before uvicorn's `100 Continue`; a chunked body
    once it passes it.

    `call_when_lost` is how a stream's live phase learns that its client left
    (events.sse.StreamAwareASGIHandler._serve_live). uvicorn's own way is `receive()`
    answering `http.disconnect`, which costs a task per stream waiting on it (about a
    twentieth of an idle stream's memory, docs/benchmarks.md), and wakes only the
    connection's latest request, not a stream with a request pipelined behind it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = _PipelinedRequests()  # type: ignore[assignment]
        # All of this class's own state is in this one attribute: CPython (3.11) shares the
        # table of an instance's attribute names with the other instances of its class
        # only up to 29 names, uvicorn's protocol has 28, and past that every connection
        # carries a table of its own, 1.3 KB more (docs/benchmarks.md, "Memory per idle
        # stream").
        self.edge = _ConnectionEdge()

    def call_when_lost(self, callback: Callable[[], object]) -> None:
        """Call `callback` once, from the event loop, when the connection is lost (soon,
        if it is already lost). One callback per connection: a later one replaces it."""
        if self.transport is None or self.transport.is_closing():
            self.loop.call_soon(callback)
            return
        self.edge.when_lost = callback

    def forget_when_lost(self) -> None:
        self.edge.when_lost = None

    def _arm_header_timer(self) -> None:
        timeout = _header_timeout()
        if self.edge.deadline is None and timeout > 0:
            self.edge.deadline = self.loop.call_later(timeout, self._header_timed_out)

    def _arm_body_timer(self) -> None:
        self._disarm_deadline()
        timeout = _body_timeout()
        if timeout > 0:
            self.edge.deadline = self.loop.call_later(timeout, self._body_timed_out)

    def _disarm_deadline(self) -> None:
        if self.edge.deadline is not None:
            self.edge.deadline.cancel()
            self.edge.deadline = None

    def _log(self, event: str) -> None:
        self.logger.info("event=%s client=%s", event, self.client and self.client[0])

    def _header_timed_out(self) -> None:
        self.edge.deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head is late while the previous response is still being sent
            # (a stream): answering now would interleave with it; end the connection
            # once that response is done.
            self.cycle.keep_alive = False
            return
        if self.edge.head_started:
            self._log("request_header_timeout")
            self.transport.write(_HEADER_TIMEOUT_RESPONSE)
        self.transport.close()

    def _body_timed_out(self) -> None:
        self.edge.deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused or self.pipeline:
            # The server is not reading this body (the application has not taken what
            # came, or the request waits behind another): the client is not late.
            self._arm_body_timer()
            return
        self._log("request_body_timeout")
        # An application that answered before reading the whole body has had its say:
        # another answer would be read as the one to the client's next request.
        started = self.cycle.response_started
        self._refuse(b"" if started else _body_timeout_response(_body_timeout()))

    def data_received(self, data: bytes) -> None:
        if self.edge.head_started:
            self.edge.head_bytes += len(data)
        super().data_received(data)
        # A head that does not end (one endless line, or line after line): httptools
        # would keep all of it. Counted by the read, so the bound holds within a read.
        if self.edge.head_started and self.edge.head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._log("request_header_too_large")
            self._refuse(_header_too_large_response())

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_HEADER_LINE_BYTES:
            self._stop_parsing(_header_too_large_response(), "request_header_too_large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > MAX_HEADER_LINE_BYTES:
            self._stop_parsing(_header_too_large_response(), "request_header_too_large")
        super().on_header(name, value)

    def _stop_parsing(self, refusal: bytes, event: str) -> NoReturn:
        """Refuse the request from a parser callback (see `_Refused`)."""
        self._log(event)
        self.edge.refusal = refusal
        raise _Refused

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to what its parser refuses was plain text.
        refusal, self.edge.refusal = self.edge.refusal, None
        # Refused once its head was read, a request may have its body on the way.
        linger = not self.edge.head_started
        self._refuse(_malformed_request_response() if refusal is None else refusal, linger=linger)

    def _refuse(self, response: bytes, *, linger: bool = False) -> None:
        self._disarm_deadline()
        self.edge.head_started = False
        self.transport.write(response)
        if not linger:
            self.transport.close()
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client sees the answer end, then the connection
        self.parser = _Unread()  # type: ignore[assignment]
        self.flow.resume_reading()
        self.edge.deadline = self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow._is_writable_event = LeanEvent(self.flow._is_writable_event.is_set())  # type: ignore[assignment]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)
        callback, self.edge.when_lost = self.edge.when_lost, None
        if callback is not None:
            callback()

    def on_message_begin(self) -> None:
        self.edge.head_started = True
        self.edge.head_bytes = 0
        self._arm_header_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.edge.head_started = False
        self._disarm_deadline()
        codings = self._transfer_codings()
        if codings is not None and [c.strip().lower() for c in codings.split(",")] != ["chunked"]:
            # httptools decodes the final `chunked` and hands on what is inside as the
            # body: a `gzip, chunked` body would reach the application still compressed.
            # RFC 9112 section 6.1 answers a coding the server does not know with 501, as
            # the shipped nginx does.
            self._stop_parsing(_transfer_coding_not_implemented_response(), "request_transfer_coding_refused")
        limit = _max_body_bytes()
        if limit is not None and self._content_length() > limit:
            # Before uvicorn makes the request's cycle, whose first `receive()` would
            # answer `100 Continue` and read the body whole before the application refused it.
            self._stop_parsing(_payload_too_large_response(limit), "request_body_too_large")
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not previous:
            # The request's cycle, just made (current or queued behind a pipelined one;
            # none for an upgrade): its event has not been used yet. The cycle's task was
            # created but has not run (asyncio starts tasks at the loop's next turn, not
            # eagerly), so nothing waits on the event being replaced.
            self.cycle.message_event = LeanEvent()  # type: ignore[assignment]
            self.edge.body_bytes = 0
            self._arm_body_timer()  # stopped at once by on_message_complete when there is no body

    def _content_length(self) -> int:
        # httptools has refused a Content-Length that is not a number, or given twice.
        for name, value in self.headers:
            if name == b"content-length":
                return int(value)
        return 0

    def _transfer_codings(self) -> str | None:
        """The request's transfer codings, its `Transfer-Encoding` lines joined; None without one."""
        lines = [value.decode("latin-1") for name, value in self.headers if name == b"transfer-encoding"]
        return ", ".join(lines) if lines else None

    def on_body(self, body: bytes) -> None:
        self.edge.body_bytes += len(body)
        limit = _max_body_bytes()
        if limit is not None and self.edge.body_bytes > limit and not self.cycle.response_started:
            # A chunked body, which declares no length: refused once it passes the limit.
            self._stop_parsing(_payload_too_large_response(limit), "request_body_too_large")
        super().on_body(body)
        self._arm_body_timer()  # from this piece on

    def on_message_complete(self) -> None:
        self._disarm_deadline()
        super().on_message_complete()


def prepare_metrics_dir() -> Path | None:
    """Set up PROMETHEUS_MULTIPROC_DIR for this server start (before any worker starts and
    imports prometheus-client, which reads the variable once): the given directory,
    created and emptied of a previous run's files (the counters of processes long gone
    must not be added to this run's), or a new temporary one. Returns the directory to
    remove at exit (the temporary one), else None."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return None
    path = Path(tempfile.mkdtemp(prefix="ticketing-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def log_config() -> dict[str, Any]:
    """uvicorn's logging setup, with credentials redacted on every handler, in the format
    of the service's own lines (JSON in production, config.log_format)."""
    from config.log_format import log_format

    config = copy.deepcopy(LOGGING_CONFIG)
    if log_format() == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": "config.log_format.JsonFormatter"}
    config.setdefault("filters", {})["redact_credentials"] = {"()": "config.log_redaction.RedactCredentials"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_credentials")
    return config


def _remove_when_stopped(path: Path) -> None:
    """Remove `path` when a SIGTERM / SIGINT stops the server. uvicorn shuts down cleanly on
    them and then raises the signal again with the handler it found, so the process ends
    as the signal says before `main` returns: this handler is the one it finds."""

    def handler(signum: int, frame: Any) -> None:
        shutil.rmtree(path, ignore_errors=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def trusted_proxies() -> str:
    """`FORWARDED_ALLOW_IPS`, as uvicorn spells it: who may say who the client is."""
    return os.environ.get("FORWARDED_ALLOW_IPS", "").strip()


def log_level() -> int:
    # As a number: uvicorn knows fewer level names than logging (WARN, FATAL, NOTSET).
    return logging.getLevelName(env_log_level())


def served_application() -> Any:
    """The application as a served worker loads it (uvicorn's factory, daphne): with its
    start-up heap settled for the cycle collector (config.heap). Only here, not on import
    of config.asgi: a process that imports the application in the middle of its life (a
    test run) must not freeze what it holds by then."""
    from config.asgi import application
    from config.heap import settle_heap

    settle_heap()  # last: what start-up built lives as long as the process
    return application


def serve_uvicorn(args: argparse.Namespace) -> None:
    # uvicorn's websocket protocol parses a handshake's head again with the websockets
    # library, whose bounds (8 KB lines, 128 headers: a 20 KB bearer token got a plain-text
    # 431) it reads from these variables when imported, in this process or a worker's,
    # after this: let pass every head ServiceHttpProtocol has let pass.
    os.environ.update(WEBSOCKETS_MAX_LINE_LENGTH=str(MAX_HEAD_BYTES), WEBSOCKETS_MAX_NUM_HEADERS=str(MAX_HEAD_BYTES))
    proxies = trusted_proxies()
    uvicorn.run(
        # A factory, called in each worker process once it has imported the application.
        "config.serve:served_application",
        factory=True,
        host=args.host,
        port=args.port,
        # With several workers uvicorn's parent process supervises them: a worker that
        # dies (killed, crashed) is replaced by a new one on the same socket.
        workers=args.workers,
        # Django has no lifespan support; "auto" would only log that at every start.
        lifespan="off",
        # By import path (not the class): worker processes import it themselves.
        http="config.serve:ServiceHttpProtocol",
        access_log=args.access_log,
        log_config=log_config(),
        log_level=log_level(),
        timeout_graceful_shutdown=graceful_shutdown_seconds(),
        # Partner events are small JSON messages; compressing them costs more memory per
        # socket than it saves.
        ws_per_message_deflate=False,
        ws_max_size=MAX_WEBSOCKET_MESSAGE_BYTES,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )


class _AccessLogLines:
    """A stream for daphne's access log that hands each line to logging, so the handlers'
    credential redaction (settings.LOGGING) applies to them as to every other line."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("daphne.access")

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.logger.info("%s", line)

    def flush(self) -> None:
        pass


def serve_daphne(args: argparse.Namespace) -> None:
    # Importing daphne.server installs Twisted's asyncio reactor: it must come first.
    from daphne.access import AccessLogGenerator
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    # Sets Django up, and with it logging (settings.LOGGING: the root handler redacts).
    application = served_application()

    logging.getLogger("daphne").setLevel(log_level())
    proxies = trusted_proxies()
    app: Any = ProxyHeadersMiddleware(application, trusted_hosts=proxies) if proxies else application
    Server(
        application=app,
        endpoints=build_endpoint_description_strings(host=args.host, port=args.port),
        # Streams live for hours; their own timeouts (SSE_IDLE_TIMEOUT_SECONDS) end them.
        http_timeout=None,
        application_close_timeout=graceful_shutdown_seconds(),
        verbosity=0,
        action_logger=AccessLogGenerator(_AccessLogLines()) if args.access_log else None,
    ).run()


def main(argv: list[str] | None = None) -> None:
    load_local_env()  # the checkout's .env (DEBUG=1 after `make run`); the environment wins
    prog = "python -m config.serve"
    # A bad setting stops the start here, in one line naming it (config.env), before a
    # worker starts: not a server that answers /readyz and then fails requests.
    load_settings_or_exit(prog)
    try:
        port = env_int("PORT", 8000, maximum=65_535)
        workers = env_int("WEB_WORKERS", 1, minimum=1)
    except ImproperlyConfigured as exc:
        exit_misconfigured(prog, exc)
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host", default=os.environ.get("HOST", "127.0.0.1"), help="address to listen on (HOST, 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=port, help="port to listen on (PORT, 8000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=workers,
        help="worker processes sharing the port; they share streams through the channel layer (WEB_WORKERS, 1)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (off: the app logs streams)")
    parser.add_argument(
        "--server",
        choices=("uvicorn", "daphne"),
        default=os.environ.get("WEB_SERVER", "uvicorn"),
        help="the ASGI server (uvicorn: less CPU per stream frame, see docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)
    if args.server == "daphne" and args.workers != 1:
        parser.error(
            "daphne serves one process: use --workers 1 and run one daphne per port behind the proxy "
            "(docs/operations.md, Scale), or --server uvicorn for --workers N"
        )
    temporary_metrics_dir = prepare_metrics_dir()
    if temporary_metrics_dir is not None:
        _remove_when_stopped(temporary_metrics_dir)
    try:
        if args.server == "daphne":
            serve_daphne(args)
        else:
            serve_uvicorn(args)
    finally:
        if temporary_metrics_dir is not None:
            shutil.rmtree(temporary_metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
