"""A light load client for Server-Sent Events streams: raw HTTP/1.1 on asyncio protocols.

One protocol object per stream; no HTTP library, no JSON decoding of event data. Each
frame is reduced to (receipt time, event name, id) so a process can hold thousands of
streams and tens of thousands of frames per second. Times are `time.monotonic()`, which
on Linux is the same clock in every process of the machine.

`reader_main` runs in a child process (multiprocessing "spawn"): it opens its share of
the streams, reports when all of them have their snapshot, then records frames until the
parent says stop, and sends back what each stream received. It runs on uvloop unless
`options["client_loop"]` says "asyncio" (the loop of the runs before 2026-12-04 late
evening): the client shares the machine's cores with the server it measures.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

LIVE_EVENTS = (b"created", b"updated", b"deleted")


@dataclass
class StreamSpec:
    index: int
    port: int
    token: str
    body: bytes


@dataclass
class StreamResult:
    index: int
    status: int = 0
    opened_at: float = 0.0
    ready_at: float = 0.0
    closed_early: bool = False
    heartbeats: int = 0
    # The longest wait for a heartbeat: from the snapshot to the first, between two, and
    # from the last to the end of the run (a stream whose heartbeats stopped shows it).
    heartbeat_gap_max: float = 0.0
    last_heartbeat_at: float = 0.0
    errors: list[str] = field(default_factory=list)
    # (receipt time, event name, id) of every created / updated / deleted frame
    frames: list[tuple[float, str, str]] = field(default_factory=list)

    def note_heartbeat_gap(self, now: float) -> None:
        since = self.last_heartbeat_at or self.ready_at
        if since:
            self.heartbeat_gap_max = max(self.heartbeat_gap_max, now - since)


def build_request(spec: StreamSpec, path: str, tenant_id: str, realm: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{spec.port}\r\n"
        f"Authorization: Bearer {spec.token}\r\n"
        f"x-tenantid: {tenant_id}\r\n"
        f"realmname: {realm}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream\r\n"
        f"Content-Length: {len(spec.body)}\r\n\r\n"
    )
    return head.encode() + spec.body


class SSEClientProtocol(asyncio.Protocol):
    """HTTP/1.1 response head, chunked transfer decoding, then SSE frames."""

    def __init__(self, request: bytes, result: StreamResult, ready: asyncio.Future[None]) -> None:
        self.request = request
        self.result = result
        self.ready = ready
        self.buf = bytearray()
        self.sse = bytearray()
        self.in_head = True
        self.chunked = False
        self.transport: asyncio.Transport | None = None
        self.stopping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopping:
            self.result.closed_early = True
        if not self.ready.done():
            self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf
        buf += data
        if self.in_head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            self.result.status = int(head.split(b" ", 2)[1])
            self.chunked = b"transfer-encoding: chunked" in head
            self.in_head = False
            if self.result.status != 200:
                self.result.errors.append(f"HTTP {self.result.status}: {bytes(buf[:300])!r}")
                if not self.ready.done():
                    self.ready.set_result(None)
                self.stopping = True
                self.transport.close()  # type: ignore[union-attr]
                return
        if self.chunked:
            while True:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(bytes(buf[:line_end]).split(b";", 1)[0], 16)
                end = line_end + 2 + size
                if len(buf) < end + 2:
                    break
                self.sse += buf[line_end + 2 : end]
                del buf[: end + 2]
                if size == 0:
                    break
        else:
            self.sse += buf
            buf.clear()
        sse = self.sse
        start = 0
        while True:
            end = sse.find(b"\n\n", start)
            if end < 0:
                break
            self._frame(bytes(sse[start:end]), now)
            start = end + 2
        if start:
            del sse[:start]

    def _frame(self, frame: bytes, now: float) -> None:
        event = b"message"
        ident = b""
        data = b""
        for line in frame.split(b"\n"):
            if line.startswith(b"event: "):
                event = line[7:]
            elif line.startswith(b"id: "):
                ident = line[4:]
            elif line.startswith(b"data: ") and event == b"error":
                data = line[6:]
        if event in LIVE_EVENTS:
            self.result.frames.append((now, event.decode(), ident.decode()))
        elif event == b"heartbeat":
            self.result.heartbeats += 1
            self.result.note_heartbeat_gap(now)
            self.result.last_heartbeat_at = now
        elif event == b"snapshot":
            self.result.ready_at = now
            if not self.ready.done():
                self.ready.set_result(None)
        elif event == b"error":
            self.result.errors.append(data.decode(errors="replace")[:300])

    def close(self) -> None:
        self.stopping = True
        if self.transport is not None:
            self.transport.close()


async def open_streams(
    specs: list[StreamSpec], *, path: str, tenant_id: str, realm: str, concurrency: int, open_timeout: float
) -> tuple[list[StreamResult], list[SSEClientProtocol]]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    results = [StreamResult(spec.index) for spec in specs]
    protocols: list[SSEClientProtocol] = []

    async def one(spec: StreamSpec, result: StreamResult) -> None:
        async with gate:
            ready: asyncio.Future[None] = loop.create_future()
            result.opened_at = time.monotonic()
            request = build_request(spec, path, tenant_id, realm)
            for attempt in range(5):
                try:
                    _, protocol = await loop.create_connection(
                        lambda: SSEClientProtocol(request, result, ready), "127.0.0.1", spec.port
                    )
                    break
                except OSError as exc:
                    if attempt == 4:
                        result.errors.append(f"connect: {exc}")
                        return
                    await asyncio.sleep(0.5 * (attempt + 1))
            protocols.append(protocol)
            try:
                await asyncio.wait_for(ready, open_timeout)
            except TimeoutError:
                result.errors.append("no snapshot within timeout")

    await asyncio.gather(*(one(s, r) for s, r in zip(specs, results, strict=True)))
    return results, protocols


def reader_main(conn: Any, specs: list[StreamSpec], options: dict[str, Any]) -> None:
    """Child process: open the streams, say "ready", record until "stop", send results."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def run() -> list[StreamResult]:
        loop = asyncio.get_running_loop()
        results, protocols = await open_streams(
            specs,
            path=options["path"],
            tenant_id=options["tenant_id"],
            realm=options["realm"],
            concurrency=options["concurrency"],
            open_timeout=options["open_timeout"],
        )
        ok = sum(1 for r in results if r.status == 200 and r.ready_at and not r.closed_early)
        conn.send(("ready", ok, [r.errors[0] for r in results if r.errors][:5]))
        stop = asyncio.Event()
        loop.add_reader(conn.fileno(), stop.set)
        await stop.wait()
        loop.remove_reader(conn.fileno())
        os.set_blocking(conn.fileno(), True)  # uvloop left the pipe non-blocking; results are large
        conn.recv()
        stopped_at = time.monotonic()
        for result in results:
            if result.status == 200 and not result.closed_early:
                result.note_heartbeat_gap(stopped_at)
        for protocol in protocols:
            protocol.close()
        await asyncio.sleep(0.2)
        return results

    if options.get("client_loop", "uvloop") == "uvloop":
        import uvloop  # the server's loop too (uvicorn[standard]): the client takes less of the shared cores

        results = uvloop.run(run())
    else:
        results = asyncio.run(run())
    payload = [
        {
            "index": r.index,
            "status": r.status,
            "opened_at": r.opened_at,
            "ready_at": r.ready_at,
            "closed_early": r.closed_early,
            "heartbeats": r.heartbeats,
            "heartbeat_gap_max": r.heartbeat_gap_max,
            "errors": r.errors,
            "frames": r.frames,
        }
        for r in results
    ]
    conn.send(("results", json.dumps(payload)))
    conn.close()
