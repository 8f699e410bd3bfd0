"""Run the service: `python -m config.serve [--host H] [--port P] [--workers N]`.

The one place that says how the ASGI server (uvicorn) is started, for `make run`, the
compose file, the test fixtures and the benchmarks alike.

Why uvicorn: measured with `bench/list_stream_fanout.py` (docs/benchmarks.md), it sends
stream frames for less CPU than daphne, so they arrive sooner, and it applies
backpressure (a stream's writer waits while the client's socket buffer is full), so a
client that stops reading is caught by the hub's bounded queue (SLOW_CONSUMER).
"""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

# On SIGTERM the streams are told to end (events.hub closes them with SERVER_SHUTDOWN);
# whatever is still open after this long is cut.
GRACEFUL_SHUTDOWN_SECONDS = 5


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
    uvicorn.run(
        "config.asgi:application",
        host=args.host,
        port=args.port,
        workers=args.workers,
        # Django has no lifespan support; "auto" would only log that at every start.
        lifespan="off",
        access_log=args.access_log,
        # As a number: uvicorn knows fewer level names than logging (WARN, FATAL, NOTSET).
        log_level=logging.getLevelName(os.environ.get("LOG_LEVEL", "INFO").upper()),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # Partner events are small JSON messages; compressing them costs more memory per
        # socket than it saves.
        ws_per_message_deflate=False,
    )


if __name__ == "__main__":
    main()
