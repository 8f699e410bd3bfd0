"""The webhook figures of /metrics come from the delivery log, whichever process did the
work (the deliverer runs beside the web workers, not in them)."""

import re

import httpx
import pytest

from tests.builders import World

pytestmark = pytest.mark.django_db(transaction=True)


def metric(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def test_attempts_by_outcome_and_the_waiting_queue_are_scraped_from_the_delivery_log(server, acme: World):
    before = httpx.get(f"{server.url}/metrics", timeout=10).text
    failed_before = metric(before, "ticketing_webhook_deliveries_total", '{outcome="network_error"}') or 0.0
    # `.invalid` never resolves: the ping's attempt fails at once, without leaving the machine.
    endpoints = f"{server.url}/api/v2/webhooks/endpoints"
    created = httpx.post(
        endpoints, headers=acme.headers("admin"), json={"url": "https://hooks.invalid/metrics"}, timeout=10
    )
    assert created.status_code == 201, created.text
    endpoint_id = created.json()["data"]["id"]
    pinged = httpx.post(f"{endpoints}/{endpoint_id}/ping", headers=acme.headers("admin"), timeout=30)
    assert pinged.status_code == 200, pinged.text

    after = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert metric(after, "ticketing_webhook_deliveries_total", '{outcome="network_error"}') == failed_before + 1
    assert metric(after, "ticketing_webhook_deliveries_total", '{outcome="success"}') is not None
    assert metric(after, "ticketing_webhook_queue_age_seconds") == 0.0  # nothing waits
