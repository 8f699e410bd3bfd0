"""Run the service: `python -m config.serve [--host H] [--port P] [--workers N]`.

The one place that says how the ASGI server (uvicorn) is started, for `make run`, the
compose file, the test fixtures and the benchmarks alike.

Why uvicorn: measured with `bench/list_stream_fanout.py` (docs/benchmarks.md), it sends
stream frames for less CPU than daphne, so they arrive sooner, and it applies
backpressure (a stream's writer waits while the client's socket buffer is full), so a
client that stops reading is caught by the hub's bounded queue (SLOW_CONSUMER).

Two things uvicorn does not do by itself are added here: a deadline for a request's head
(`HeaderTimeoutHttpProtocol`: uvicorn waits for ever on a connection that sends half a
request line, so a few hundred slow clients could hold every socket — "slowloris"), and
keeping credentials out of its log lines (config.log_redaction on its handlers).

Each start also gives the workers an empty directory for their metrics
(`PROMETHEUS_MULTIPROC_DIR`, core.metrics) before any of them starts: the operator's, emptied
of a previous run's files, or a temporary one removed when the server exits.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# On SIGTERM the streams are told to end (events.hub closes them with SERVER_SHUTDOWN);
# whatever is still open after this long is cut.
GRACEFUL_SHUTDOWN_SECONDS = 5

_HEADER_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 22\r\nconnection: close\r\n\r\nRequest header timeout"
)


class HeaderTimeoutHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), with a deadline for each request's head.

    The clock starts when the connection opens (for its first request) or when the first
    byte of a later request arrives, and stops when the head is complete: a body, a long
    response or a stream is never timed by it (uvicorn's keep-alive timeout covers idle
    connections between requests). A head started but not complete in time gets `408`
    and the connection is closed; a connection that sent nothing at all is just closed
    (a browser's speculative pre-connection must not read a stray response)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from django.conf import settings  # configured by now: the app was loaded first

        self.header_timeout: float = settings.HTTP_HEADER_TIMEOUT_SECONDS
        self.header_timer: asyncio.TimerHandle | None = None
        self.head_started = False

    def _arm_header_timer(self) -> None:
        if self.header_timer is None and self.header_timeout > 0:
            self.header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timed_out(self) -> None:
        self.header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head is late while the previous response is still being sent
            # (a stream): answering now would interleave with it; end the connection
            # once that response is done.
            self.cycle.keep_alive = False
            return
        if self.head_started:
            self.logger.info("event=request_header_timeout client=%s", self.client and self.client[0])
            self.transport.write(_HEADER_TIMEOUT_RESPONSE)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self.head_started = True
        self._arm_header_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.head_started = False
        self._disarm_header_timer()
        super().on_headers_complete()


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m config.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_WORKERS", "1")),
        help="worker processes sharing the port (they share streams through the channel layer)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (off: the app logs streams)")
    args = parser.parse_args(argv)
    temporary_metrics_dir = prepare_metrics_dir()
    if temporary_metrics_dir is not None:
        _remove_when_stopped(temporary_metrics_dir)
    try:
        _serve(args)
    finally:
        if temporary_metrics_dir is not None:
            shutil.rmtree(temporary_metrics_dir, ignore_errors=True)


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


def _serve(args: argparse.Namespace) -> None:
    uvicorn.run(
        "config.asgi:application",
        host=args.host,
        port=args.port,
        workers=args.workers,
        # Django has no lifespan support; "auto" would only log that at every start.
        lifespan="off",
        # By import path (not the class): worker processes import it themselves.
        http="config.serve:HeaderTimeoutHttpProtocol",
        access_log=args.access_log,
        log_config=log_config(),
        # As a number: uvicorn knows fewer level names than logging (WARN, FATAL, NOTSET).
        log_level=logging.getLevelName(os.environ.get("LOG_LEVEL", "INFO").upper()),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # Partner events are small JSON messages; compressing them costs more memory per
        # socket than it saves.
        ws_per_message_deflate=False,
    )


if __name__ == "__main__":
    main()
