"""The parts of observability that need no server: who may read `/metrics`, the example
dashboard against the metrics that exist, the hub's lag and broadcast failures, the
multiprocess directory's life, and the choice of log format."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory, override_settings
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from config.log_format import JsonFormatter, TextFormatter, log_format
from config.serve import prepare_metrics_dir
from core.metrics import METRIC_NAMES, mark_dead_workers, metrics_access_error
from events.announcements import announce_commit
from events.hub import EventHub, LogEvent, TenantFeed
from events.ids import new_event_id
from events.leases import acquire_stream_lease
from events.sse import EventStream, sse_frame
from tenants.callers import caller_for_user
from tests.builders import World
from tests.conftest import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "ticketing-dashboard.json"


def request_from(address: str, **headers: str):
    return RequestFactory().get("/metrics", REMOTE_ADDR=address, headers=headers)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.53", "::1"])
def test_loopback_callers_read_metrics_without_a_token(address: str) -> None:
    assert metrics_access_error(request_from(address)) is None


def test_outside_callers_are_refused_when_no_token_is_configured() -> None:
    with override_settings(METRICS_TOKEN=""):
        error = metrics_access_error(request_from("10.1.2.3", Authorization="Bearer anything"))
    assert error is not None and (error.status, error.code) == (403, "FORBIDDEN")


@override_settings(METRICS_TOKEN="s3cret-metrics-token")
def test_outside_callers_need_the_bearer_token() -> None:
    assert metrics_access_error(request_from("10.1.2.3", Authorization="Bearer s3cret-metrics-token")) is None
    for header in ("", "Bearer wrong", "Basic s3cret-metrics-token", "s3cret-metrics-token"):
        error = metrics_access_error(request_from("10.1.2.3", Authorization=header))
        assert error is not None and error.status == 401, header
    with override_settings(METRICS_LOOPBACK_OPEN=False):
        assert metrics_access_error(request_from("127.0.0.1")).status == 401  # type: ignore[union-attr]


@override_settings(METRICS_TOKEN="", METRICS_LOOPBACK_OPEN=False)
def test_with_loopback_closed_and_no_token_the_refusal_says_no_caller_is_served() -> None:
    for address in ("127.0.0.1", "10.1.2.3"):
        response = Client(REMOTE_ADDR=address).get("/metrics")
        assert response.status_code == 403
        message = response.json()["error"]["message"]
        assert "loopback callers only" not in message
        assert "METRICS_LOOPBACK_OPEN is off and no METRICS_TOKEN is set" in message, message


def test_a_refused_scrape_is_answered_in_the_envelope() -> None:
    response = Client(REMOTE_ADDR="192.0.2.7").get("/metrics")
    assert response.status_code == 403
    assert response.json()["success"] is False
    assert response.json()["error"]["code"] == "FORBIDDEN"


def exposed_series() -> set[str]:
    """Every series name `/metrics` can show (a family without values yet included)."""
    response = Client().get("/metrics")  # the test client calls from 127.0.0.1
    assert response.status_code == 200
    names = set()
    for family in text_string_to_metric_families(response.content.decode()):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


@pytest.mark.django_db  # the webhook families are read from the delivery log
def test_the_example_dashboard_is_valid_json_and_uses_only_exposed_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"\bticketing_[a-z_]+", expr)}
    exposed = exposed_series()
    assert used, "the dashboard queries nothing"
    assert used <= exposed, used - exposed
    # Every family of core.metrics has a panel.
    assert {name.removesuffix("_total") for name in METRIC_NAMES} <= {
        re.sub(r"_(bucket|count|sum|total)$", "", name) for name in used
    }


def test_a_failed_announcement_is_counted() -> None:
    before = REGISTRY.get_sample_value("ticketing_broadcast_failures_total", {"operation": "announce"}) or 0.0
    with mock.patch("events.announcements.get_channel_layer", side_effect=ConnectionError("redis away")):
        announce_commit(uuid.uuid4(), new_event_id())
    after = REGISTRY.get_sample_value("ticketing_broadcast_failures_total", {"operation": "announce"})
    assert after == before + 1


def test_hub_lag_is_the_age_of_the_oldest_announced_event_not_yet_read() -> None:
    hub = EventHub()
    tenant_id = uuid.uuid4()
    feed = hub.feeds[tenant_id] = TenantFeed(hub, tenant_id)
    # An announcement of an event committed 5 s ago (its id's time), not read yet.
    five_seconds_ago = uuid.UUID(int=(int((time.time() - 5) * 1000) << 80))
    hub._dispatch({"type": "log.committed", "tenant": str(tenant_id), "id": str(five_seconds_ago)})
    hub.update_lag()
    lag = REGISTRY.get_sample_value("ticketing_hub_feed_lag_seconds")
    assert lag is not None and 4.5 < lag < 60
    # Read: caught up.
    feed.behind_since = None
    hub.update_lag()
    assert REGISTRY.get_sample_value("ticketing_hub_feed_lag_seconds") == 0


def test_each_server_start_empties_the_given_metrics_directory(tmp_path: Path) -> None:
    (tmp_path / "counter_12345.db").write_bytes(b"old run")
    (tmp_path / "keep.txt").write_text("not ours")
    with mock.patch.dict(os.environ, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}):
        assert prepare_metrics_dir() is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_without_a_directory_a_temporary_one_is_made(tmp_path: Path) -> None:
    with mock.patch.dict(os.environ, {}, clear=False):
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        made = prepare_metrics_dir()
        assert made is not None and made.is_dir()
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(made)
    made.rmdir()


def test_the_open_stream_gauges_of_a_dead_worker_are_dropped(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f"gauge_livesum_{dead_pid}.db").write_bytes(b"")
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"")
    assert mark_dead_workers(tmp_path) == [dead_pid]
    # Its counters stay (totals never go back); its live gauges are gone; ours stay.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{dead_pid}.db", f"gauge_livesum_{os.getpid()}.db"]
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DEBUG": "0"}, "json"),
        ({"DEBUG": "1"}, "text"),
        ({"DEBUG": "1", "LOG_FORMAT": "json"}, "json"),
        ({"DEBUG": "0", "LOG_FORMAT": "TEXT"}, "text"),
    ],
)
def test_the_log_format_follows_debug_unless_chosen(env: dict[str, str], expected: str) -> None:
    with mock.patch.dict(os.environ, env):
        if "LOG_FORMAT" not in env:
            os.environ.pop("LOG_FORMAT", None)
        assert log_format() == expected


def test_an_unknown_log_format_is_refused() -> None:
    # It was taken silently as the default (config.env; a server refuses to start with it).
    with mock.patch.dict(os.environ, {"DEBUG": "0", "LOG_FORMAT": "xml"}), pytest.raises(ImproperlyConfigured):
        log_format()


def test_a_json_line_carries_the_request_context_and_the_message_pairs() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "event=stream_open kind=%s conn=%s", ("list", "c1"), None
    )
    record.request_id = "r-1"
    record.tenant = "t-1"
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "r-1"
    assert line["tenant"] == "t-1"
    assert (line["event"], line["kind"], line["conn"]) == ("stream_open", "list", "c1")
    assert line["level"] == "INFO"


class OneFrameStream(EventStream):
    kind = "test_kind"

    async def opening(self):
        yield sse_frame("connected", {})

    def render(self, event: LogEvent) -> bytes:
        return sse_frame("updated", {}, id=event.ulid)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("ending", ["server_shutdown", "slow_consumer", "token_expired", "client"])
def test_a_stream_counts_its_opening_and_the_reason_it_ended(acme: World, ending: str) -> None:
    caller = caller_for_user(acme.users["alice"])
    if ending == "token_expired":
        caller = dataclasses.replace(caller, token_expires_at=timezone.now() + timedelta(milliseconds=300))
    labels = {"kind": "test_kind", "tier": "standard"}
    ends_before = sample("ticketing_stream_ends_total", kind="test_kind", reason=ending)

    async def scenario() -> None:
        hub = EventHub()
        subscriber = await hub.subscribe(acme.tenant.id)
        subscriber.max_pending = 1
        lease = await acquire_stream_lease("test_kind", acme.tenant.id, acme.users["alice"].id, 1)
        stream = OneFrameStream(caller=caller, hub=hub, subscriber=subscriber, lease=lease)  # type: ignore[arg-type]
        frames = stream.frames()
        assert b"connected" in await frames.__anext__()
        assert sample("ticketing_streams_open", **labels) == 1
        if ending == "client":
            await frames.aclose()
            return
        if ending == "server_shutdown":
            subscriber.close()
        elif ending == "slow_consumer":
            for n in range(3):
                subscriber.offer(LogEvent(uuid.UUID(int=n + 1), str(n), acme.tenant.id, "t", "", {}, None, {}))
        rest = [frame async for frame in frames if frame]
        assert ending.upper().encode() in rest[-1]

    asyncio.run(scenario())
    assert sample("ticketing_streams_open", **labels) == 0
    assert sample("ticketing_stream_ends_total", kind="test_kind", reason=ending) == ends_before + 1


def test_a_text_line_adds_the_request_context_the_message_does_not_already_say() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "event=request route=%s", ("/healthz",), None)
    record.request_id = "r-2"
    record.route = "/healthz"
    line = TextFormatter().format(record)
    assert line.endswith("event=request route=/healthz request_id=r-2")
