"""Webhooks against a real receiver: a real server records events, a real
`deliver_webhooks` process delivers them. Signatures are checked with the
`standardwebhooks` package (as a receiver would)."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.builders import World
from tests.waiting import wait_for
from tests.webhooks.support import (
    DelivererProcess,
    Receiver,
    create_endpoint,
    create_ticket,
    running,
    wait_delivered,
    wait_for_attempt,
)
from webhooks.models import Delivery, DeliveryAttempt

API = "/api/v2/webhooks/endpoints"


def partner_event(server, world: World, event_id: str) -> dict:
    page = httpx.get(
        f"{server.url}/v2/system/events", params={"limit": 1000}, headers=world.headers("admin"), timeout=10
    ).json()["result"]
    return next(e for e in page if e["id"] == event_id)


def test_events_arrive_signed_once_each_with_the_partner_api_json(webhook_server, http_allowed, receiver) -> None:
    admin = http_allowed.headers("admin")
    endpoint = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/all")
    created = create_endpoint(
        webhook_server.url, admin, url=f"{receiver.url}/created", eventTypes=["tickets.ticket.created"]
    )
    comments = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/t", eventTypes=["tickets.*"])
    with running(DelivererProcess()):
        started = time.monotonic()
        ticket = create_ticket(webhook_server.url, http_allowed.headers("alice"), "Printer on fire")
        httpx.patch(
            f"{webhook_server.url}/api/v2/ticketing/ticket/{ticket}",
            json={"priority": "low"},
            headers=http_allowed.headers("alice"),
            timeout=10,
        ).raise_for_status()
        got = receiver.wait_for(lambda r: len([x for x in r if x.path == "/all"]) >= 2)
        assert time.monotonic() - started < 15
        time.sleep(1)  # nothing more may come
    # An unordered endpoint may receive them in any order (several in flight).
    all_requests = sorted((r for r in got if r.path == "/all"), key=lambda r: r.headers["webhook-id"])
    assert len(all_requests) == len(receiver.ids("/all")) == 2
    types = [r.json["type"] for r in all_requests]
    assert types[0].endswith("created") and len(set(receiver.ids("/all"))) == 2
    assert [r.json["type"] for r in receiver.received if r.path == "/created"] == [types[0]]
    assert len(receiver.ids("/t")) == 2
    for request in all_requests:
        # Standard Webhooks: verifiable with the package, id = the event's ULID.
        Webhook(endpoint["secret"]).verify(request.body, request.headers)
        assert request.headers["webhook-id"] == request.json["id"]
        assert request.json == partner_event(webhook_server, http_allowed, request.json["id"])
    assert created["id"] != comments["id"]

    log = httpx.get(f"{webhook_server.url}{API}/{endpoint['id']}/deliveries", headers=http_allowed.headers("admin"))
    attempts = log.json()["data"]
    assert {a["outcome"] for a in attempts} == {"success"} and len(attempts) == 2
    assert all(a["statusCode"] == 200 and a["responseExcerpt"] == "ok" for a in attempts)


def test_failures_are_retried_until_acknowledged_and_the_log_filters_them(webhook_server, http_allowed) -> None:
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        return (500, {}, b"boom" * 1000) if calls["n"] <= 2 else (200, {}, b"fine")

    receiver = Receiver(answer=flaky).start()
    try:
        admin = http_allowed.headers("admin")
        endpoint = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/h")
        with running(DelivererProcess()):
            create_ticket(webhook_server.url, http_allowed.headers("alice"), "flaky")
            receiver.wait_for(lambda r: len(r) >= 3)
            time.sleep(1)
        assert len(receiver.received) == 3 and len(set(receiver.ids())) == 1  # same webhook-id every time
        base = f"{webhook_server.url}{API}/{endpoint['id']}/deliveries"
        attempts = httpx.get(base, headers=admin).json()["data"]
        assert [a["attempt"] for a in attempts] == [3, 2, 1]
        failed = httpx.get(base, params={"outcome": "http_error"}, headers=admin).json()["data"]
        assert len(failed) == 2 and all(a["statusCode"] == 500 for a in failed)
        assert all(len(a["responseExcerpt"]) == 2048 for a in failed)
        assert httpx.get(base, params={"statusCode": 200}, headers=admin).json()["data"][0]["attempt"] == 3
        event_id = attempts[0]["eventId"]
        assert len(httpx.get(base, params={"eventId": event_id}, headers=admin).json()["data"]) == 3
        assert httpx.get(base, params={"eventType": "nothing.*"}, headers=admin).json()["data"] == []
        assert httpx.get(base, params={"since": "2999-01-01T00:00:00Z"}, headers=admin).json()["data"] == []
        bad = httpx.get(base, params={"outcome": "weird"}, headers=admin)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_QUERY"
        for limit in ("1_0", "\u0663", "0"):  # a query's integer is its ASCII digits
            bad = httpx.get(base, params={"limit": limit}, headers=admin)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_QUERY", limit
    finally:
        receiver.stop()


def test_gone_disables_the_endpoint_and_says_so_in_the_log(webhook_server, http_allowed) -> None:
    receiver = Receiver(answer=lambda r: (410, {}, b"gone")).start()
    try:
        admin = http_allowed.headers("admin")
        endpoint = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/h")
        with running(DelivererProcess()):
            create_ticket(webhook_server.url, http_allowed.headers("alice"), "gone")

            def disabled() -> dict | None:
                state = httpx.get(f"{webhook_server.url}{API}/{endpoint['id']}", headers=admin).json()["data"]
                return None if state["enabled"] else state

            state = wait_for(
                disabled, timeout=20, interval=0.2, message="the endpoint that answered 410 stayed enabled"
            )
        assert state["enabled"] is False and state["disabledReason"] == "gone"
        assert len(receiver.received) == 1
        events = httpx.get(
            f"{webhook_server.url}/v2/system/events",
            params={"type": "webhooks.endpoint.disabled"},
            headers=admin,
        ).json()["result"]
        assert [e["payload"]["endpoint"]["id"] for e in events] == [endpoint["id"]]
        # Who was turned off, without the URL: it may be the receiver's credential.
        assert events[0]["payload"]["endpoint"]["host"] == "127.0.0.1"
        assert endpoint["url"] not in json.dumps(events[0])
        assert events[0]["payload"]["reason"] == "gone"
        # The same time as the endpoint shows it (and as every time of the log: UTC with "Z").
        assert events[0]["payload"]["failingSince"] == state["failingSince"]
    finally:
        receiver.stop()


def test_gone_stops_the_endpoints_requests_at_once(webhook_server, http_allowed) -> None:
    """Ten events waiting, one request at a time: after the first 410 no other request
    starts (about ten more went out before the endpoint was disabled), and the ten stay
    pending for when it is turned back on."""
    receiver = Receiver(answer=lambda r: (410, {}, b"gone")).start()
    try:
        admin = http_allowed.headers("admin")
        endpoint = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/h")
        for n in range(10):
            create_ticket(webhook_server.url, http_allowed.headers("alice"), f"gone {n}")
        with running(DelivererProcess(WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT="1")):
            wait_for(
                lambda: (
                    not httpx.get(f"{webhook_server.url}{API}/{endpoint['id']}", headers=admin).json()["data"][
                        "enabled"
                    ]
                ),
                timeout=20,
                interval=0.2,
                message="the endpoint that answered 410 stayed enabled",
            )
            time.sleep(1)  # what a deliverer still sending would send by now
        assert len(receiver.received) == 1
        pending = Delivery.objects.filter(endpoint_id=endpoint["id"], state=Delivery.State.PENDING).count()
        assert pending == 10
    finally:
        receiver.stop()


def test_ordered_endpoint_waits_for_each_event_and_retry_after_is_honoured(webhook_server, http_allowed) -> None:
    answers = {"first": 0}

    def slow_start(request):
        if request.json["payload"]["ticket"]["subject"] == "one" and answers["first"] < 2:
            answers["first"] += 1
            return 503, {"Retry-After": "1"}, b"busy"
        return 200, {}, b"ok"

    receiver = Receiver(answer=slow_start).start()
    try:
        admin = http_allowed.headers("admin")
        create_endpoint(
            webhook_server.url, admin, url=f"{receiver.url}/o", ordered=True, eventTypes=["tickets.ticket.created"]
        )
        for subject in ("one", "two", "three"):
            create_ticket(webhook_server.url, http_allowed.headers("alice"), subject)
        deliverer = DelivererProcess(LOG_LEVEL="INFO")
        with running(deliverer):
            try:
                got = receiver.wait_for(lambda r: len(r) >= 5, timeout=30)
            except AssertionError:
                print([(r.json["payload"]["ticket"]["subject"], r.at) for r in receiver.received], deliverer.output())
                raise
        subjects = [r.json["payload"]["ticket"]["subject"] for r in got]
        assert subjects == ["one", "one", "one", "two", "three"]
        # Retry-After: 1 replaced the 0.3 s step of the test schedule.
        assert got[1].at - got[0].at >= 0.9 and got[2].at - got[1].at >= 0.9
    finally:
        receiver.stop()


def test_resend_recover_and_ping(webhook_server, http_allowed, receiver) -> None:
    admin = http_allowed.headers("admin")
    endpoint = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/h")
    base = f"{webhook_server.url}{API}/{endpoint['id']}"
    ping = httpx.post(f"{base}/ping", headers=admin, timeout=20)
    assert ping.status_code == 200 and ping.json()["data"]["outcome"] == "success"
    assert receiver.received[0].json["type"] == "webhooks.ping"
    Webhook(endpoint["secret"]).verify(receiver.received[0].body, receiver.received[0].headers)

    with running(DelivererProcess()):
        create_ticket(webhook_server.url, http_allowed.headers("alice"), "again")
        first = receiver.wait_for(lambda r: len(r) >= 2)[1]
        resent = httpx.post(f"{base}/resend", json={"eventId": first.json["id"]}, headers=admin)
        assert resent.status_code == 202
        receiver.wait_for(lambda r: len(r) >= 3)
        assert receiver.received[2].headers["webhook-id"] == first.headers["webhook-id"]
        missing = httpx.post(f"{base}/resend", json={"eventId": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}, headers=admin)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "EVENT_NOT_FOUND"
        recovered = httpx.post(f"{base}/recover", json={"since": "2000-01-01T00:00:00Z"}, headers=admin)
        assert recovered.status_code == 202 and recovered.json()["data"]["requeued"] == 0


def test_a_rotated_secret_signs_beside_the_old_one(webhook_server, http_allowed, receiver) -> None:
    admin = http_allowed.headers("admin")
    endpoint = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/h")
    rotated = httpx.post(f"{webhook_server.url}{API}/{endpoint['id']}/rotate-secret", headers=admin).json()["data"]
    with running(DelivererProcess()):
        create_ticket(webhook_server.url, http_allowed.headers("alice"), "rotated")
        request = receiver.wait_for(lambda r: len(r) >= 1)[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(endpoint["secret"]).verify(request.body, request.headers)
    Webhook(rotated["secret"]).verify(request.body, request.headers)
    assert json.loads(request.body)["type"].endswith("created")


def test_every_request_after_a_rotation_is_signed_with_the_new_secret_at_once(
    webhook_server, http_allowed, receiver
) -> None:
    # The deliverer held the keys it loaded when it claimed the endpoint: for a second or
    # so after a rotation, events went out signed with the old secret(s) only.
    admin, alice = http_allowed.headers("admin"), http_allowed.headers("alice")
    endpoint = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/h")
    secrets = [endpoint["secret"]]
    rounds: list[tuple[float, str, str]] = []  # (rotation answered at, new secret, previous one)
    with running(DelivererProcess()):
        create_ticket(webhook_server.url, alice, "before the rotation")
        receiver.wait_for(lambda r: len(r) >= 1)  # the deliverer holds the endpoint and its keys
        for round_number in range(2):
            rotated = httpx.post(f"{webhook_server.url}{API}/{endpoint['id']}/rotate-secret", headers=admin, timeout=10)
            assert rotated.status_code == 200, rotated.text
            answered = time.monotonic()
            secrets.append(rotated.json()["data"]["secret"])
            rounds.append((answered, secrets[-1], secrets[-2]))
            for i in range(3):
                create_ticket(webhook_server.url, alice, f"right after rotation {round_number}.{i}")
            receiver.wait_for(lambda r, answered=answered: len([x for x in r if x.at > answered]) >= 3)
        time.sleep(0.5)  # nothing more may come
    received = list(receiver.received)
    assert len(received) == 7
    ends = [answered for answered, _, _ in rounds[1:]] + [float("inf")]
    for (answered, secret, previous), end in zip(rounds, ends, strict=True):
        after = [r for r in received if answered < r.at < end]
        assert len(after) == 3
        for request in after:
            # Both signatures, the new secret's among them: a receiver may switch at once.
            assert len(request.headers["webhook-signature"].split(" ")) == 2
            Webhook(secret).verify(request.body, request.headers)
            Webhook(previous).verify(request.body, request.headers)
            if secret == secrets[-1]:  # the first secret signs no more after two rotations
                with pytest.raises(WebhookVerificationError):
                    Webhook(secrets[0]).verify(request.body, request.headers)


def test_an_endpoint_far_behind_never_holds_back_one_that_keeps_up(webhook_server, http_allowed) -> None:
    """One intake serves all of a tenant's endpoints; one whose receiver is slow falls
    behind a burst of 1,200 events (more than its pending limit and two intake batches)
    and must not delay the events of one that keeps up; each gets every event once."""
    from events.recording import record_event, unit_of_work

    # The slow receiver answers only once the test has looked (or after 60 s, within the
    # deliverer's timeout, 90 s here): a fixed delay let a slow machine's /behind catch up
    # with all 1,200 before the fresh event was even written.
    release = threading.Event()

    def answer(request):
        if request.path == "/behind":
            release.wait(timeout=60)
        return 200, {}, b"ok"

    receiver = Receiver(answer=answer).start()
    try:
        admin = http_allowed.headers("admin")
        create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/behind")
        create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/current")
        with unit_of_work():
            for i in range(1200):
                record_event(tenant=http_allowed.tenant, type="test.backlog", payload={"i": i})
        with running(DelivererProcess(WEBHOOKS_TIMEOUT_SECONDS="90")):
            try:
                # All of them while every request to the slow one is still unanswered.
                receiver.wait_for(lambda r: len([x for x in r if x.path == "/current"]) >= 1200, timeout=40)
                receiver.wait_for(lambda r: any(x.path == "/behind" for x in r))
                started = time.monotonic()
                create_ticket(webhook_server.url, http_allowed.headers("alice"), "while another catches up")
                got = receiver.wait_for(
                    lambda r: any(x.path == "/current" and x.json["type"].endswith("created") for x in r)
                )
                assert time.monotonic() - started < 3
                # The slow one is still catching up when the fresh event reached the other.
                assert len([x for x in got if x.path == "/behind"]) < 1201
            finally:
                release.set()  # before the deliverer is stopped, which waits for its requests
            receiver.wait_for(lambda r: len([x for x in r if x.path == "/behind"]) >= 1201, timeout=90)
            time.sleep(1)
        assert len(receiver.ids("/current")) == len(set(receiver.ids("/current"))) == 1201
        assert len(receiver.ids("/behind")) == len(set(receiver.ids("/behind"))) == 1201
    finally:
        release.set()
        receiver.stop()


def test_an_unreadable_secret_stops_only_its_endpoint_until_rotated(webhook_server, http_allowed, receiver) -> None:
    """A secret no configured key decrypts (a key dropped before re-encryption): its ping
    is a 409 that says what to do, the worker's other endpoints go on, and rotating the
    secret delivers what the endpoint was owed."""
    from cryptography.fernet import Fernet

    from webhooks.models import Endpoint

    admin = http_allowed.headers("admin")
    broken = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/broken")
    create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/fine")
    lost_key = Fernet(Fernet.generate_key())
    Endpoint.objects.filter(pk=broken["id"]).update(secret_encrypted=lost_key.encrypt(b"whsec_AAAA").decode())

    ping = httpx.post(f"{webhook_server.url}{API}/{broken['id']}/ping", headers=admin, timeout=20)
    assert ping.status_code == 409 and ping.json()["error"]["code"] == "WEBHOOK_SECRET_UNREADABLE"
    with running(DelivererProcess()) as [deliverer]:
        create_ticket(webhook_server.url, http_allowed.headers("alice"), "one endpoint is broken")
        receiver.wait_for(lambda r: any(x.path == "/fine" for x in r))
        time.sleep(2.5)  # the deliverer claims its endpoints every second here
        assert receiver.ids("/broken") == []
        # The operator is told once, not at every claim.
        told = [line for line in deliverer.output().splitlines() if "webhook_secret_unreadable" in line]
        assert len(told) == 1, told
        rotated = httpx.post(f"{webhook_server.url}{API}/{broken['id']}/rotate-secret", headers=admin, timeout=10)
        assert rotated.status_code == 200
        got = receiver.wait_for(lambda r: any(x.path == "/broken" for x in r))
    request = next(x for x in got if x.path == "/broken")
    Webhook(rotated.json()["data"]["secret"]).verify(request.body, request.headers)
    fine = next(x for x in got if x.path == "/fine")
    assert request.headers["webhook-id"] == fine.headers["webhook-id"]


def test_an_answer_with_nul_bytes_is_logged_and_holds_back_no_other_endpoint(webhook_server, http_allowed) -> None:
    # PostgreSQL text cannot hold NUL: such an answer's excerpt once failed the batch of
    # attempts it was stored with, again and again, so no endpoint of the worker got any
    # delivery recorded, and the ping answered 500.
    nul_receiver = Receiver(answer=lambda r: (500, {}, b"bad\x00\xff\xfe answer")).start()
    healthy = Receiver().start()
    try:
        admin = http_allowed.headers("admin")
        nul = create_endpoint(webhook_server.url, admin, url=f"{nul_receiver.url}/h")
        fine = create_endpoint(webhook_server.url, admin, url=f"{healthy.url}/h")
        ping = httpx.post(f"{webhook_server.url}{API}/{nul['id']}/ping", headers=admin, timeout=20)
        assert ping.status_code == 200, ping.text
        assert ping.json()["data"]["outcome"] == "http_error"
        assert ping.json()["data"]["responseExcerpt"] == "bad\ufffd\ufffd\ufffd answer"
        with running(DelivererProcess()):
            create_ticket(webhook_server.url, http_allowed.headers("alice"), "nul answer")
            wait_delivered(fine["id"], 1)
            wait_for_attempt(nul["id"], "http_error")
        attempts = httpx.get(f"{webhook_server.url}{API}/{nul['id']}/deliveries", headers=admin).json()["data"]
        assert attempts[0]["eventType"] == "tickets.ticket.created"
        assert attempts[0]["responseExcerpt"] == "bad\ufffd\ufffd\ufffd answer"
    finally:
        nul_receiver.stop()
        healthy.stop()


def test_the_answer_excerpt_is_readable_from_a_receiver_that_compresses_what_it_may(
    webhook_server, http_allowed
) -> None:
    # The deliverer asked for gzip (aiohttp's default Accept-Encoding) and stored the
    # compressed bytes it never decompressed, so the log showed binary noise.
    def compressing(request):
        body = b'{"error": "upstream unavailable"}'
        if "gzip" in request.headers.get("accept-encoding", ""):
            return 503, {"content-encoding": "gzip"}, gzip.compress(body)
        return 503, {}, body

    receiver = Receiver(answer=compressing).start()
    try:
        admin = http_allowed.headers("admin")
        endpoint = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/h")
        ping = httpx.post(f"{webhook_server.url}{API}/{endpoint['id']}/ping", headers=admin, timeout=20)
        assert ping.json()["data"]["responseExcerpt"] == '{"error": "upstream unavailable"}'
        with running(DelivererProcess()):
            create_ticket(webhook_server.url, http_allowed.headers("alice"), "compressed answer")
            wait_for(
                lambda: DeliveryAttempt.objects.filter(endpoint_id=endpoint["id"], event_id__isnull=False).exists(),
                timeout=20,
                interval=0.1,
                message="the event's attempt was not recorded",
            )
        attempts = httpx.get(f"{webhook_server.url}{API}/{endpoint['id']}/deliveries", headers=admin).json()["data"]
        assert [a["eventType"] for a in attempts][-2:] == ["tickets.ticket.created", "webhooks.ping"]
        assert {a["responseExcerpt"] for a in attempts} == {'{"error": "upstream unavailable"}'}
    finally:
        receiver.stop()


class AcknowledgeThenStall:
    """A receiver that answers `200` with its headers at once, then holds the body back
    longer than the deliverer waits (a framework that flushes the status before its
    work ends, or a proxy in between that is slow)."""

    def __init__(self, stall: float) -> None:
        self.stall = stall
        self.ids: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    return  # the sender left early
                request += chunk
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(
                next(
                    v
                    for k, v in (line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
                    if k.lower() == b"content-length"
                )
            )
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            self.ids.append(
                next(
                    line.split(b": ", 1)[1].decode()
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"webhook-id")
                )
            )
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n")
            time.sleep(self.stall)
            with contextlib.suppress(OSError):
                conn.sendall(b"accepted")

    def stop(self) -> None:
        self.listener.close()


def test_a_2xx_whose_body_is_late_is_delivered_not_retried(webhook_server, http_allowed) -> None:
    # The status decides (Standard Webhooks: 2xx is success); the body is only shown. The
    # deliverer waited for the first bytes of the body within its timeout, and a late one
    # made an acknowledged event a timeout with no status, sent again and again.
    receiver = AcknowledgeThenStall(stall=4)  # the test processes time out after 2 s
    try:
        admin = http_allowed.headers("admin")
        endpoint = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/h")
        ping = httpx.post(f"{webhook_server.url}{API}/{endpoint['id']}/ping", headers=admin, timeout=20)
        assert ping.json()["data"]["outcome"] == "success" and ping.json()["data"]["statusCode"] == 200
        with running(DelivererProcess()):
            create_ticket(webhook_server.url, http_allowed.headers("alice"), "late body")
            wait_delivered(endpoint["id"], 1)
            time.sleep(1.5)  # no second request comes
        assert len(receiver.ids) == 2 and receiver.ids[1] != receiver.ids[0]
        attempts = httpx.get(f"{webhook_server.url}{API}/{endpoint['id']}/deliveries", headers=admin).json()["data"]
        assert [(a["eventType"], a["outcome"], a["statusCode"]) for a in attempts] == [
            ("tickets.ticket.created", "success", 200),
            ("webhooks.ping", "success", 200),
        ]
    finally:
        receiver.stop()


def test_an_endpoint_enabled_again_gets_what_it_missed_its_own_disabled_event_included(
    webhook_server, http_allowed
) -> None:
    status = {"code": 410}
    receiver = Receiver(answer=lambda r: (status["code"], {}, b"")).start()
    try:
        admin = http_allowed.headers("admin")
        endpoint = create_endpoint(webhook_server.url, admin, url=f"{receiver.url}/h")
        base = f"{webhook_server.url}{API}/{endpoint['id']}"
        with running(DelivererProcess()):
            create_ticket(webhook_server.url, http_allowed.headers("alice"), "answered 410")
            wait_for(
                lambda: not httpx.get(base, headers=admin).json()["data"]["enabled"],
                timeout=20,
                interval=0.2,
                message="the endpoint that answered 410 stayed enabled",
            )
            create_ticket(webhook_server.url, http_allowed.headers("alice"), "while disabled")
            status["code"] = 200
            enabled = httpx.patch(base, json={"enabled": True}, headers=admin, timeout=10)
            assert enabled.status_code == 200 and enabled.json()["data"]["disabledReason"] is None
            wait_delivered(endpoint["id"], 3)
        after = [r.json for r in receiver.received[1:]]
        # The event that was answered 410, then what was committed while it was off: its
        # own webhooks.endpoint.disabled among them (events.md said "other endpoints").
        assert sorted((e["type"], e["payload"].get("ticket", {}).get("subject")) for e in after) == [
            ("tickets.ticket.created", "answered 410"),
            ("tickets.ticket.created", "while disabled"),
            ("webhooks.endpoint.disabled", None),
        ]
        assert (
            next(e for e in after if e["type"] == "webhooks.endpoint.disabled")["payload"]["endpoint"]["id"]
            == (endpoint["id"])
        )
    finally:
        receiver.stop()
