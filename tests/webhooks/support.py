"""A real local webhook receiver (a threaded HTTP server whose answers a test scripts) and
a real `deliver_webhooks` process, for the webhook tests."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.conftest import ROOT, test_database_url
from tests.waiting import wait_for

# The Fernet key of the test processes (all of them must decrypt the same secrets).
TEST_SECRET_KEYS = "0" * 43 + "="
FAST_RETRIES = "0.3,0.3,0.3,0.3,0.3,0.3"

WEBHOOK_ENV = {
    "WEBHOOKS_ALLOW_PRIVATE_NETWORKS": "1",
    "WEBHOOKS_SECRET_KEYS": TEST_SECRET_KEYS,
    "WEBHOOKS_POLL_SECONDS": "0.3",
    "WEBHOOKS_LEASE_SECONDS": "3",
    "WEBHOOKS_RETRY_SCHEDULE": FAST_RETRIES,
    "WEBHOOKS_CONNECT_TIMEOUT_SECONDS": "1",
    "WEBHOOKS_TIMEOUT_SECONDS": "2",
}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request; `answer(request) -> (status, headers, body)` decides the reply
    (a callable may sleep to make the deliverer wait)."""

    answer: Callable[[Received], tuple[int, dict[str, str], bytes]] = lambda r: (200, {}, b"ok")
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, port: int = 0) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with receiver.lock:
                    receiver.received.append(request)
                status, headers, reply = receiver.answer(request)
                self.send_response(status)
                for name, value in {**headers, "content-length": str(len(reply))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ids(self, path: str | None = None) -> list[str]:
        with self.lock:
            return [r.headers["webhook-id"] for r in self.received if path is None or r.path == path]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 20) -> list[Received]:
        """The requests received so far, once `predicate` holds for them (it needs one at least)."""

        def met() -> list[Received] | None:
            with self.lock:
                snapshot = list(self.received)
            return snapshot if predicate(snapshot) else None

        return wait_for(
            met,
            timeout=timeout,
            interval=0.05,
            message=lambda: f"receiver: condition not met; got {len(self.received)} requests",
        )


class DelivererProcess:
    """`manage.py deliver_webhooks` against the test database."""

    def __init__(self, **env: str) -> None:
        import os

        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "SECRET_KEY": "test-only-secret-key",
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
            **WEBHOOK_ENV,
            **env,
        }
        self.proc: subprocess.Popen | None = None
        self.log = ROOT / f".deliverer-{id(self)}.log"

    def start(self) -> DelivererProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "deliver_webhooks"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        return self

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@contextlib.contextmanager
def running(*processes: DelivererProcess):
    try:
        yield [p.start() for p in processes]
    finally:
        for p in processes:
            p.stop()


def create_endpoint(server_url: str, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{server_url}/api/v2/webhooks/endpoints", json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def create_ticket(server_url: str, headers: dict[str, str], subject: str) -> str:
    response = httpx.post(
        f"{server_url}/api/v2/ticketing/ticket",
        json={"subject": subject, "priority": "high", "team": "operation"},
        headers=headers,
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text
    return response.json()["data"]["id"]


def wait_delivered(endpoint_id: str, count: int, timeout: float = 30) -> None:
    """Until `count` deliveries of the endpoint are acknowledged and recorded."""
    from webhooks.models import Delivery

    delivered = Delivery.objects.filter(endpoint_id=endpoint_id, state=Delivery.State.DELIVERED)
    wait_for(
        lambda: delivered.count() >= count,
        timeout=timeout,
        interval=0.1,
        message=lambda: f"{delivered.count()} of {count} deliveries recorded as delivered",
    )


def wait_for_attempt(endpoint_id: str, outcome: str, timeout: float = 30) -> None:
    from webhooks.models import DeliveryAttempt

    wait_for(
        lambda: DeliveryAttempt.objects.filter(endpoint_id=endpoint_id, outcome=outcome).exists(),
        timeout=timeout,
        interval=0.1,
        message=f"no {outcome} attempt",
    )
