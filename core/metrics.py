"""The service's Prometheus metrics: every metric object, the helpers the code paths call
to move them, and `/metrics`, their exposition (docs/operations.md, "Metrics").

Worker processes (`python -m config.serve --workers N`) each count their own streams and
requests, so the counts are kept in prometheus-client's multiprocess mode: `config.serve`
gives every server start an empty directory (`PROMETHEUS_MULTIPROC_DIR`) before a worker
starts, each process writes its values there, and a scrape of any worker adds up every
process's files. A process without that variable (`manage.py` commands, the test client)
counts in its own memory and exposes that.

Labels are bounded on purpose: stream kinds, tenant tiers (never tenant ids), the URL
route pattern (never the raw path), fixed reason words."""

from __future__ import annotations

import asyncio
import atexit
import bisect
import hmac
import ipaddress
import logging
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client import generate_latest as render_registry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from core.http import ApiError, error_response

logger = logging.getLogger(__name__)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_DIR_ENV):
    # A worker that exits cleanly takes its open-stream gauges with it at once (a crashed
    # one is caught at the next scrape, `mark_dead_workers`).
    atexit.register(multiprocess.mark_process_dead, os.getpid(), os.environ[MULTIPROC_DIR_ENV])

# --- streams (SSE list and notification streams, the partner websocket) ---------------

# Kinds: `list`, `notifications` (the SSE streams' `kind`), `partner_ws` (the websocket).
STREAMS_OPEN = Gauge(
    "ticketing_streams_open",
    "Streams open now, by kind and tenant tier (summed over live worker processes).",
    ["kind", "tier"],
    multiprocess_mode="livesum",
)
STREAM_OPENS = Counter(
    "ticketing_stream_opens_total",
    "Stream open attempts that got a slot, by kind, tenant tier and outcome "
    "(opened; edge = handed to Pushpin, events.edge; too_many_streams = 429; "
    "unavailable = 503, the slot store unreachable).",
    ["kind", "tier", "outcome"],
)
STREAM_ENDS = Counter(
    "ticketing_stream_ends_total",
    "Streams ended, by kind and reason (client, token_expired, slow_consumer, idle_timeout, "
    "server_shutdown, send_timeout, unauthorized, bad_message, error).",
    ["kind", "reason"],
)
STREAM_RESUMES = Counter(
    "ticketing_stream_resumes_total",
    "Streams opened with a resume position, by kind and outcome (resumed: the missed events "
    "were replayed; reset: too many or too old, a fresh snapshot with reset: true).",
    ["kind", "outcome"],
)
DELIVERY_LATENCY = Histogram(
    "ticketing_event_delivery_seconds",
    "From an event's commit (its id's timestamp) to its frame being written to a stream.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

# --- the event log and its broadcast -------------------------------------------------

EVENTS_WRITTEN = Counter(
    "ticketing_events_written_total",
    "Events committed to the log, by audience (partner, user, system).",
    ["audience"],
)
BROADCAST_FAILURES = Counter(
    "ticketing_broadcast_failures_total",
    "Channel-layer operations that failed, by operation (announce: a commit's announcement "
    "was not published; note: a stream note (ticket presence, saved views changed) was not "
    "published; group_add: a hub could not join a tenant group; receive: a hub's "
    "receive loop failed). Streams still get the events by polling, and notes by their "
    "senders' renewals or the streams' re-reads, later.",
    ["operation"],
)
HUB_FEED_EVENTS = Counter(
    "ticketing_hub_feed_events_total",
    "Events the workers' tenant feeds handed to their streams, by source: carried (in a "
    "commit's announcement) or log (read from the event log: after a gap, a commit too big "
    "to carry, or on the poll).",
    ["source"],
)
HUB_FEED_LAG = Gauge(
    "ticketing_hub_feed_lag_seconds",
    "How far the slowest tenant feed of a worker is behind the newest event it knows was "
    "committed (an announcement or a read), in seconds; 0 when caught up. Max over live workers.",
    multiprocess_mode="livemax",
)

# --- HTTP requests --------------------------------------------------------------------

REQUESTS = Counter(
    "ticketing_http_requests_total",
    "HTTP requests answered, by URL route pattern, method and status code.",
    ["route", "method", "status"],
)
REQUEST_LATENCY = Histogram(
    "ticketing_http_request_duration_seconds",
    "Time to answer an HTTP request (for a stream: until its response started), by route and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
WRITE_SLOT_WAIT = Histogram(
    "ticketing_write_slot_wait_seconds",
    "How long write requests waited for one of their worker's write slots (core.write_slots) "
    "before their transaction began, refused ones included.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# --- read from the database at scrape time -------------------------------------------
# Work done by processes other than the web workers (e.g. the webhook deliverer, which
# runs beside them, maybe in another container) is counted from its durable records when
# /metrics is read: apps register a collector here (`register_database_collector`).

DATABASE_COLLECTORS: list[Collector] = []


def register_database_collector(collector: Collector) -> None:
    DATABASE_COLLECTORS.append(collector)


# Names of the families those collectors yield (the dashboard test holds the dashboard to them).
DATABASE_METRIC_NAMES = frozenset({"ticketing_webhook_deliveries", "ticketing_webhook_queue_age_seconds"})

# Every metric family this module defines (the dashboard test holds the dashboard to it).
METRIC_NAMES = (
    frozenset(
        metric._name
        for metric in (
            STREAMS_OPEN,
            STREAM_OPENS,
            STREAM_ENDS,
            STREAM_RESUMES,
            DELIVERY_LATENCY,
            EVENTS_WRITTEN,
            BROADCAST_FAILURES,
            HUB_FEED_LAG,
            REQUESTS,
            REQUEST_LATENCY,
            WRITE_SLOT_WAIT,
        )
    )
    | DATABASE_METRIC_NAMES
)


def event_commit_time(event_id: uuid.UUID) -> float:
    """An event's commit time (Unix seconds): its ULID's millisecond timestamp, minted
    under the tenant's log lock just before COMMIT (events.recording)."""
    return (event_id.int >> 80) / 1000.0


# How long a process keeps delivery latencies before adding them to the histogram.
DELIVERY_FLUSH_SECONDS = 0.5


class DeliveryTally:
    """The delivery-latency histogram, fed once per frame written: thousands of times a
    second in a busy worker. prometheus-client's multiprocess mode writes every
    observation to a memory-mapped file twice (its bucket and the sum), each under one
    lock that every metric of the process shares, request threads included; measured
    with py-spy at 2,000 streams, that was 4 to 9 % of the worker's busy time, much of it
    the event loop waiting for that lock (docs/benchmarks.md, "Where a frame's CPU
    went"). So the frames of a process are counted here, per kind and bucket, and added
    to the histogram in one go at most DELIVERY_FLUSH_SECONDS later, on the event loop
    that wrote them; outside an event loop an observation goes straight in.

    Adding a count to a bucket uses the histogram child's own bucket and sum values
    (`_upper_bounds`, `_buckets`, `_sum`: prometheus-client's internals, held to its
    `observe` by a test)."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.children: dict[str, Any] = {}
        self.bounds: list[float] = histogram._upper_bounds
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}
        self._flush_on: asyncio.AbstractEventLoop | None = None

    def child(self, kind: str) -> Any:
        child = self.children.get(kind)
        if child is None:
            child = self.children[kind] = self.histogram.labels(kind)
        return child

    def add(self, kind: str, seconds: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.child(kind).observe(seconds)
            return
        counts = self.counts.get(kind)
        if counts is None:
            counts = self.counts[kind] = [0] * len(self.bounds)
            self.sums[kind] = 0.0
        # The first bucket whose upper bound is at least `seconds` (the last is +Inf).
        counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sums[kind] += seconds
        if self._flush_on is not loop:
            # Not yet due on this loop (a loop that ended before its flush never ran it).
            self._flush_on = loop
            loop.call_later(DELIVERY_FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        self._flush_on = None
        counts, sums = self.counts, self.sums
        self.counts, self.sums = {}, {}
        for kind, buckets in counts.items():
            child = self.child(kind)
            child._sum.inc(sums[kind])
            for index, count in enumerate(buckets):
                if count:
                    child._buckets[index].inc(count)


_DELIVERIES = DeliveryTally(DELIVERY_LATENCY)


def observe_delivery(kind: str, event_id: uuid.UUID) -> None:
    """One frame of `kind` written (see DeliveryTally)."""
    _DELIVERIES.add(kind, max(0.0, time.time() - event_commit_time(event_id)))


def tenant_tier(tenant: object) -> str:
    return getattr(tenant, "tier", None) or "unknown"


# --- exposition -----------------------------------------------------------------------


def multiproc_dir() -> Path | None:
    path = os.environ.get(MULTIPROC_DIR_ENV)
    return Path(path) if path else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead_workers(path: Path) -> list[int]:
    """Drop the live-gauge files of worker processes that no longer exist (a worker that
    crashed or was replaced): their open streams must not be counted. Their counters stay,
    so totals never go backwards. Done at each scrape, so no supervisor hook is needed."""
    dead = set()
    for file in path.glob("gauge_live*_*.db"):
        pid_text = file.stem.rsplit("_", 1)[-1]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            dead.add(int(pid_text))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(path))
    return sorted(dead)


def render_metrics() -> bytes:
    """Every process's metrics in the Prometheus text format (blocking: reads files)."""
    path = multiproc_dir()
    if path is None:
        registry = CollectorRegistry()
        registry.register(_Union(REGISTRY))
    else:
        mark_dead_workers(path)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(path))
    for collector in DATABASE_COLLECTORS:
        registry.register(collector)
    return render_registry(registry)


class _Union:
    """The process's own registry as one collector of a scrape's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def _is_loopback(request: HttpRequest) -> bool:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def _bearer_token(request: HttpRequest) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def metrics_access_error(request: HttpRequest) -> ApiError | None:
    """None when the caller may read the metrics: a loopback caller (unless
    METRICS_LOOPBACK_OPEN is off), or one sending `Authorization: Bearer $METRICS_TOKEN`."""
    if settings.METRICS_LOOPBACK_OPEN and _is_loopback(request):
        return None
    expected = settings.METRICS_TOKEN
    if not expected:
        if not settings.METRICS_LOOPBACK_OPEN:
            # Loopback callers are refused too: the message said they were served.
            return ApiError(
                403,
                "FORBIDDEN",
                "Metrics are served to no caller: METRICS_LOOPBACK_OPEN is off and no METRICS_TOKEN is set.",
            )
        return ApiError(403, "FORBIDDEN", "Metrics are served to loopback callers only (no METRICS_TOKEN is set).")
    given = _bearer_token(request)
    if given and hmac.compare_digest(given.encode(), expected.encode()):
        return None
    return ApiError(
        401,
        "UNAUTHORIZED",
        "Send Authorization: Bearer <METRICS_TOKEN>.",
        headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
    )


@csrf_exempt  # read-only: another method is require_safe's 405, not Django's CSRF 403
@require_safe
async def metrics_view(request: HttpRequest) -> HttpResponse:
    error = metrics_access_error(request)
    if error is not None:
        return error_response(error)
    body = await sync_to_async(render_metrics, thread_sensitive=False)()
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
