"""The server's edges, through a real server process (config.serve: uvicorn): slow or
oversized request heads and bodies are refused, streams are not, the partner websocket
takes the heads plain requests take and refuses oversized messages, and no credential
reaches its log."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import struct
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tenants.services import create_api_key
from tests.builders import World, base_claims, signed
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.sse_client import list_updates_url, open_stream
from ticketing.models import Ticket

pytestmark = pytest.mark.django_db(transaction=True)

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
BODY_LIMIT = 2_621_440  # DATA_UPLOAD_MAX_MEMORY_SIZE, Django's default
NOTIFICATIONS = "/api/v2/ticketing/ticket/sse/notifications"


@pytest.fixture(scope="module")
def _edge_process(django_db_setup: None, django_db_blocker: object) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT), HTTP_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT), LOG_LEVEL="INFO"
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def edge_server(transactional_db: None, _edge_process: ServerProcess) -> Iterator[ServerProcess]:
    """A server with short header and body timeouts that logs at INFO (into its log file)."""
    yield _edge_process
    wait_until_database_is_quiet()


def raw_connection(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=HEADER_TIMEOUT * 4)
    return sock


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it;
    fails if it is still open after `limit` seconds."""
    started = time.monotonic()
    received = b""
    sock.settimeout(limit)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return received, time.monotonic() - started
            received += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {limit} s; received {received!r}")
    except ConnectionResetError:
        return received, time.monotonic() - started


def test_a_connection_that_sends_half_a_request_line_is_closed_after_the_header_timeout(edge_server):
    with raw_connection(edge_server) as sock:
        sock.sendall(b"GET /api/v2/ticketing/ticket/notification/co")
        received, elapsed = read_until_closed(sock, HEADER_TIMEOUT + 5)
    assert elapsed >= HEADER_TIMEOUT - 0.5, "closed before the client had its time"
    assert received.startswith(b"HTTP/1.1 408"), received


def test_headers_trickling_in_past_the_timeout_are_cut_and_a_silent_connection_too(edge_server):
    with raw_connection(edge_server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/schema/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        # One header line every half second: never complete, always "active".
        while time.monotonic() - started < HEADER_TIMEOUT + 5:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
            sock.settimeout(0.5)
            try:
                if sock.recv(4096).startswith(b"HTTP/1.1 408"):
                    closed = True
                    break
            except TimeoutError:
                continue
        assert closed, "a head sent one header at a time was never cut"
        assert time.monotonic() - started < HEADER_TIMEOUT + 3
    # A connection that never sends anything (a pre-connection) is closed without a word.
    with raw_connection(edge_server) as silent:
        received, elapsed = read_until_closed(silent, HEADER_TIMEOUT + 5)
    assert elapsed >= HEADER_TIMEOUT - 0.5
    assert received == b""


def test_a_head_completed_in_time_is_served_and_a_stream_outlives_the_header_timeout(edge_server, acme: World):
    with raw_connection(edge_server) as sock:
        for part in (b"GET /api/schema/ HTT", b"P/1.1\r\nHost: 127.0.0.1\r\n", b"Connection: close\r\n\r\n"):
            sock.sendall(part)
            time.sleep(HEADER_TIMEOUT / 4)
        received, _ = read_until_closed(sock, 10)
    assert received.startswith(b"HTTP/1.1 200"), received[:200]

    # Headers complete, then a stream that stays open (heartbeats every second) for
    # several header timeouts, and a keep-alive connection reused after it.
    started = time.monotonic()
    with (
        httpx.Client(timeout=httpx.Timeout(10.0, read=5.0)) as client,
        client.stream("GET", edge_server.url + NOTIFICATIONS, headers=acme.headers("alice")) as response,
    ):
        assert response.status_code == 200
        events = []
        for line in response.iter_lines():
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
            if time.monotonic() - started > HEADER_TIMEOUT * 2.5:
                break
    assert events[0] == "connected"
    assert events.count("heartbeat") >= 3, events


def test_no_credential_reaches_the_server_log(edge_server, acme: World):
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    ws_url = edge_server.url.replace("http://", "ws://") + "/v2/system/events/ws"
    with connect(f"{ws_url}?api_key={key}", open_timeout=5) as ws:
        ws.send(json.dumps({"action": "ping"}))
        assert json.loads(ws.recv(timeout=5))["action"] == "pong"
    # A wrong key in the query, and tokens in query strings of plain requests.
    bogus_key = "tk_bogus_" + "z" * 40
    with (
        connect(f"{ws_url}?api_key={bogus_key}&token=query-token-secret-1", open_timeout=5) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4401
    token = acme.token("alice")
    httpx.get(f"{edge_server.url}{NOTIFICATIONS}?access_token={token}", headers={"Connection": "close"}, timeout=5)
    time.sleep(0.5)  # let the server flush its log lines
    log = edge_server.log_path.read_text()
    assert "WebSocket /v2/system/events/ws" in log, log[-2000:]  # the line is written...
    assert "[REDACTED]" in log
    for secret in (key, key.split("_", 2)[-1], bogus_key, "query-token-secret-1", token):
        assert secret not in log, f"{secret[:12]}… is in the server log"


def test_no_cookie_or_api_key_reaches_a_debug_log(transactional_db: None, acme: World):
    # At DEBUG the websockets library logs every handshake header (`< cookie: …`, its name
    # and value as separate arguments), and Django logs a 404's path, whatever it holds.
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    server = ServerProcess(LOG_LEVEL="DEBUG").start()
    try:
        cookies = "csrftoken=CSRFSECRET4567890; sessionid=SESSIONSECRET1234567"
        ws_url = server.url.replace("http://", "ws://") + "/v2/system/events/ws"
        with connect(
            f"{ws_url}?api_key={key}", additional_headers={"Cookie": cookies, "X-Other": "sessionid=SIDSECRET99"}
        ) as ws:
            ws.send(json.dumps({"action": "ping"}))
            assert json.loads(ws.recv(timeout=5))["action"] == "pong"
        assert httpx.get(f"{server.url}/api/nonexistent/{key}/x", timeout=5).status_code == 404
        time.sleep(0.5)  # let the server flush its log lines
        log = server.log_path.read_text()
        assert "< cookie: [REDACTED]" in log, log[-3000:]  # the line is written, without its value
        for secret in ("CSRFSECRET4567890", "SESSIONSECRET1234567", "SIDSECRET99", key.split("_", 2)[-1]):
            assert secret not in log, f"{secret[:12]}… is in the server log"
    finally:
        server.stop()


def test_requests_pipelined_on_one_connection_are_answered_each_in_order(edge_server):
    # A client may send its next requests before the first answer (HTTP/1.1 pipelining);
    # the server's protocol queues them (config.serve._PipelinedRequests).
    ids = ["pipelined-1", "pipelined-2", "pipelined-3"]
    heads = b"".join(
        f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {rid}\r\n"
        f"{'Connection: close' if rid == ids[-1] else 'Connection: keep-alive'}\r\n\r\n".encode()
        for rid in ids
    )
    with raw_connection(edge_server) as sock:
        sock.sendall(heads)
        received, _ = read_until_closed(sock, 10)
    answered = [
        line.split(b":", 1)[1].strip().decode()
        for line in received.split(b"\r\n")
        if line.lower().startswith(b"x-request-id:")
    ]
    assert received.count(b"HTTP/1.1 200") == 3, received[:600]
    assert answered == ids


def test_a_body_sent_in_pieces_with_pauses_is_read_whole(edge_server, acme: World):
    # The request waits for its body's later pieces (the cycle's message event,
    # config.serve.LeanEvent).
    body = json.dumps({"subject": "Sent in three pieces", "priority": "high", "team": "operation"}).encode()
    headers = "".join(f"{name}: {value}\r\n" for name, value in acme.headers("alice").items())
    head = (
        f"POST /api/v2/ticketing/ticket HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with raw_connection(edge_server) as sock:
        sock.sendall(head)
        for start in range(0, len(body), 30):
            time.sleep(0.3)
            sock.sendall(body[start : start + 30])
        received, _ = read_until_closed(sock, 10)
    assert received.startswith(b"HTTP/1.1 201"), received[:300]
    assert json.loads(received.split(b"\r\n\r\n", 1)[1])["data"]["subject"] == "Sent in three pieces"


def test_a_large_answer_to_a_client_that_reads_late_arrives_whole(edge_server):
    # The server's writes pause while the client does not read (the flow control's
    # writable event, config.serve.LeanEvent) and go on when it does.
    expected = httpx.get(f"{edge_server.url}/api/schema/", timeout=10).content
    assert len(expected) > 200_000
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", edge_server.port))
    with sock:
        sock.sendall(b"GET /api/schema/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        time.sleep(1.5)  # the server's buffers fill meanwhile
        received, _ = read_until_closed(sock, 20)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == expected


def test_a_header_line_over_64_kb_is_431_in_the_envelope_and_one_under_it_passes(edge_server):
    # The bounds of the shipped nginx (deploy/nginx), so a request fares alike with and
    # without it. The server read a head of any size (ten megabytes answered 200).
    def ask(value_bytes: int) -> bytes:
        with raw_connection(edge_server) as sock:
            sock.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * value_bytes + b"\r\n"
                b"Connection: close\r\n\r\n"
            )
            received, _ = read_until_closed(sock, 10)
        return received

    assert ask(60_000).startswith(b"HTTP/1.1 200"), ask(60_000)[:200]
    refused = ask(70_000)
    head, _, body = refused.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), refused[:300]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)
    assert error["success"] is False and error["error"]["code"] == "HEADER_TOO_LARGE"
    assert error["error"]["details"]["limit"] == 65_536


def test_a_request_line_over_64_kb_is_431(edge_server):
    with raw_connection(edge_server) as sock:
        sock.sendall(b"GET /healthz?" + b"q" * 70_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received, _ = read_until_closed(sock, 10)
    assert received.startswith(b"HTTP/1.1 431"), received[:200]


def test_a_head_that_never_ends_is_cut_after_256_kb(edge_server):
    # Line after line of 8 KB, each within bounds: the head is refused once it passes
    # 256 KB, and the connection closed; the sender meets the closed connection long
    # before ten megabytes.
    line = b"X-Filler: " + b"f" * 8_000 + b"\r\n"
    sent = 0
    with raw_connection(edge_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            while sent < 10_000_000:
                sock.sendall(line)
                sent += len(line)
        except (ConnectionResetError, BrokenPipeError):
            pass  # refused and closed while we were still sending
        try:
            received, _ = read_until_closed(sock, 10)
        except ConnectionResetError:
            received = b""
    assert sent < 10_000_000, "the server kept reading a head without end"
    assert received == b"" or received.startswith(b"HTTP/1.1 431"), received[:200]
    assert httpx.get(f"{edge_server.url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Odd: a\x00b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Folded: a\r\n  b\r\n\r\n",
        b"FROB /api/v2/ticketing/ticket/list HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ],
    ids=["nul-in-header", "folded-header", "unknown-method"],
)
def test_a_request_that_is_not_valid_http_is_400_in_the_envelope(edge_server, request_bytes: bytes):
    # The server's parser refuses it before the application: that answer was plain text.
    with raw_connection(edge_server) as sock:
        sock.sendall(request_bytes)
        received, _ = read_until_closed(sock, 10)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), received[:300]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)
    assert error["success"] is False and error["error"]["code"] == "INVALID_REQUEST"


def refusal(received: bytes, status: int, code: str) -> dict:
    """The error of a refusal the server made itself, in the API's envelope, closing."""
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % status), received[:300]
    assert b"connection: close" in head.lower() and b"content-type: application/json" in head.lower(), head
    assert b"content-security-policy" not in head.lower(), "the application answered: it was given the request"
    error = json.loads(body)
    assert error["success"] is False and error["error"]["code"] == code, error
    return error["error"]


def post_head(world: World | None, length: str, *extra: str) -> bytes:
    credentials = world.headers("alice") if world else {}
    lines = [f"{name}: {value}" for name, value in credentials.items()] + [length, *extra]
    return (
        "POST /api/v2/ticketing/ticket HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + "".join(f"{line}\r\n" for line in lines)
        + "\r\n"
    ).encode()


@pytest.mark.parametrize("length", [52_000_000, 3_000_000_000])
def test_a_body_declared_over_the_limit_is_413_before_100_continue(edge_server, length: int):
    # It got `100 Continue`, then all 52 MB were read (spooled to disk) before the answer;
    # 3 GB declared and never sent held the connection for ever.
    started = time.monotonic()
    with raw_connection(edge_server) as sock:
        sock.sendall(post_head(None, f"Content-Length: {length}", "Expect: 100-continue"))
        received, _ = read_until_closed(sock, 5)
    assert time.monotonic() - started < 2
    assert not received.startswith(b"HTTP/1.1 100"), received[:100]
    assert refusal(received, 413, "PAYLOAD_TOO_LARGE")["details"] == {"limit": BODY_LIMIT}


def test_a_client_sending_a_body_over_the_limit_without_waiting_reads_the_413(edge_server, acme: World):
    # A client that does not ask for `100 Continue` sends its whole body, then reads: the
    # server drops what comes after its answer for a while (nginx's lingering close)
    # rather than reset the connection under the client's feet, answer and all.
    body = b"x" * 20_000_000
    with raw_connection(edge_server) as sock:
        sock.sendall(post_head(acme, f"Content-Length: {len(body)}") + body)
        received, _ = read_until_closed(sock, 10)
    refusal(received, 413, "PAYLOAD_TOO_LARGE")
    # httpx alike, with a body it sends as JSON.
    big = json.dumps({"subject": "x" * 3_000_000, "priority": "high", "team": "operation"})
    response = httpx.post(
        f"{edge_server.url}/api/v2/ticketing/ticket", content=big, headers=acme.headers("alice"), timeout=10
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert not Ticket.objects.exists()


def test_a_chunked_body_is_413_once_it_passes_the_limit_without_the_rest_being_read(edge_server, acme: World):
    chunk = b"x" * 65_536
    sent = 0
    received = b""
    with raw_connection(edge_server) as sock:
        sock.sendall(post_head(acme, "Transfer-Encoding: chunked"))
        sock.settimeout(0.01)
        try:
            while sent < 50_000_000 and not received:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                with contextlib.suppress(TimeoutError):  # no answer yet
                    received = sock.recv(65_536)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server gave up on us after its answer
        assert received, f"no answer after {sent} bytes of body"
        rest, _ = read_until_closed(sock, 10)
    assert sent < 20_000_000, "the server kept reading a body past its limit"
    refusal(received + rest, 413, "PAYLOAD_TOO_LARGE")
    assert not Ticket.objects.exists()


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


@pytest.mark.parametrize("codings", [["gzip, chunked"], ["deflate", "chunked"]], ids=["gzip", "two-lines"])
def test_a_transfer_coding_other_than_chunked_is_501_and_nothing_is_created(edge_server, acme: World, codings):
    # httptools took `gzip, chunked`, undid the chunks and handed on the compressed bytes.
    body = json.dumps({"subject": "compressed", "priority": "high", "team": "operation"}).encode()
    lines = [f"Transfer-Encoding: {value}" for value in codings]
    with raw_connection(edge_server) as sock:
        sock.sendall(post_head(acme, *lines) + chunked(gzip.compress(body)))
        received, _ = read_until_closed(sock, 10)
    assert "chunked" in refusal(received, 501, "NOT_IMPLEMENTED")["message"]
    assert not Ticket.objects.exists()


def test_a_chunked_body_is_read_whole_whatever_the_case_of_its_coding(edge_server, acme: World):
    # DRF reads a body as far as its Content-Length: a chunked one, which has none, was
    # taken as empty ("subject: This field is required").
    body = json.dumps({"subject": "in chunks", "priority": "high", "team": "operation"}).encode()
    with raw_connection(edge_server) as sock:
        sock.sendall(post_head(acme, "Transfer-Encoding: Chunked", "Connection: close") + chunked(body))
        received, _ = read_until_closed(sock, 10)
    assert received.startswith(b"HTTP/1.1 201"), received[:300]
    assert Ticket.objects.get().subject == "in chunks"


def test_a_body_that_stops_arriving_is_408_after_the_body_timeout(edge_server, acme: World):
    with raw_connection(edge_server) as sock:
        sock.sendall(post_head(acme, "Content-Length: 100") + b'{"subject": "Half a bo')
        received, elapsed = read_until_closed(sock, BODY_TIMEOUT + 5)
    assert elapsed >= BODY_TIMEOUT - 0.5, "cut before the client had its time"
    assert refusal(received, 408, "REQUEST_TIMEOUT")["details"] == {"timeout": BODY_TIMEOUT}
    with raw_connection(edge_server) as sock:
        sock.sendall(post_head(acme, "Transfer-Encoding: chunked") + b'5\r\n{"sub\r\n')
        received, _ = read_until_closed(sock, BODY_TIMEOUT + 5)
    refusal(received, 408, "REQUEST_TIMEOUT")
    time.sleep(0.5)  # let the server flush its log lines
    assert "event=request_body_timeout" in edge_server.log_path.read_text()
    assert not Ticket.objects.exists()


def test_a_stream_opened_with_a_body_outlives_the_body_timeout(edge_server, acme: World):
    # The body's deadline ends with the body: the stream it opened is not timed by it.
    url = list_updates_url(edge_server.url)
    with open_stream("POST", url, headers=acme.headers("alice"), json_body={"top": 5}) as stream:
        assert [stream.next().event, stream.next().event] == ["connected", "snapshot"]
        started = time.monotonic()
        while time.monotonic() - started < BODY_TIMEOUT * 2:
            assert stream.next(skip=(), timeout=5).event == "heartbeat"


def partner_socket_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/v2/system/events/ws"


def test_the_partner_socket_opens_with_a_20_kb_bearer_token_and_refuses_a_10_mb_message(edge_server, acme: World):
    # The websockets library re-read the handshake with 8 KB lines: a plain-text 431,
    # though plain requests take header lines up to 64 KB.
    groups = [f"/org/department-{i:04d}/team" for i in range(600)]
    token = signed(base_claims(acme, "crm", realm_access={"roles": ["partner"]}, groups=groups), acme.realm.secret)
    assert len(token) > 16_000
    with connect(partner_socket_url(edge_server), additional_headers=acme.raw_headers(token), open_timeout=5) as ws:
        ws.send(json.dumps({"action": "ping"}))
        assert json.loads(ws.recv(timeout=5))["action"] == "pong"
        # The largest message the protocol takes (docs/api.md): 50 types of 255 characters,
        # written as JSON escapes of characters outside the BMP, 153 KB.
        types = ["\U0001f600" * 255] * 50
        largest = json.dumps({"action": "subscribe", "types": types})
        assert len(largest) > 150_000
        ws.send(largest)
        assert json.loads(ws.recv(timeout=5))["action"] == "subscribed"
        # A 10 MB text message (uvicorn took up to 16 MB) is refused once its frame's head
        # says so, before its payload: the head of one, masked as a client's.
        ws.socket.sendall(struct.pack("!BBQ", 0x81, 0x80 | 127, 10_000_000) + os.urandom(4))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
