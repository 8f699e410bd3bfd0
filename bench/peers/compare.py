"""This service's list stream beside two peers, measured by one client the same way.

    .venv/bin/python bench/peers/compare.py --streams 500,1000,2000 --rate 20 --duration 30

Peers, each one server process on this machine:

- `service`: this service's list stream (`python -m config.serve --workers 1`, PostgreSQL,
  Redis). A change is a `PATCH` of a ticket through the REST API (DRF, a PostgreSQL commit,
  the filter match); every subscriber follows the whole tenant (`type=template`, no filter),
  so every change reaches every subscriber.
- `eventstream`: django-eventstream (a minimal project in `eventstream_site/`, plain
  in-process pub/sub, no database), served by daphne as its README does, in its own
  virtualenv (`.venv-eventstream`, created on first use from `requirements-eventstream.txt`).
- `nchan`: the nginx module (Debian's `libnginx-mod-nchan`), one worker, `nchan.conf.template`.

For every subscriber count the client opens the streams (from `--client-procs` processes),
waits until they are all open, publishes `--rate` messages per second for `--duration`
seconds, each with a sequence number and about as many bytes as a ticket frame, and counts
what each stream receives. Latency is counted from the moment the publishing request is
sent (for the service that includes the PATCH itself) to the moment a subscriber reads the
frame; `time.monotonic()` is one clock for every process of the machine. Server CPU is the
server process's user+system time over the publishing phase; memory is the server's RSS
growth while the streams are open, divided by their number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))

import list_stream_fanout as fanout  # noqa: E402 - the service's own set-up, reused
from benchdb import stop_process_groups  # noqa: E402

SEQ = re.compile(rb"seq-(\d+)")
PADDING = "x" * 600  # about the size of a ticket frame's JSON


# --- the client -------------------------------------------------------------------------


class Subscriber(asyncio.Protocol):
    """One SSE stream on raw HTTP/1.1: records (receipt time, sequence number) of each frame
    whose data carries `seq-N`; open once the response head is 200 (and, for the service,
    once the snapshot arrived)."""

    def __init__(self, request: bytes, wait_for: bytes | None, opened: asyncio.Future[None]) -> None:
        self.request = request
        self.wait_for = wait_for
        self.opened = opened
        self.head = True
        self.buffer = bytearray()
        self.received: list[tuple[float, int]] = []
        self.status = 0
        self.closed_early = False
        self.stopping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_early = not self.stopping
        if not self.opened.done():
            self.opened.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.head:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(bytes(self.buffer[:end]).split(b" ", 2)[1])
            data = bytes(self.buffer[end + 4 :])
            self.buffer.clear()
            self.head = False
            if self.wait_for is None or self.status != 200:
                self.opened.set_result(None)
        if self.wait_for is not None and not self.opened.done() and self.wait_for in data:
            self.opened.set_result(None)
        # A frame ends with a blank line; its first `seq-N` is its sequence number (the
        # service's `updated` frame also names the previous subject in `changes`). Chunk
        # sizes of chunked encoding fall between frames and carry no `seq-`.
        self.buffer += data
        end = self.buffer.rfind(b"\n\n")
        if end < 0:
            return
        complete = bytes(self.buffer[: end + 2])
        del self.buffer[: end + 2]
        for frame in complete.split(b"\n\n"):
            match = SEQ.search(frame)
            if match:
                self.received.append((now, int(match.group(1))))

    def close(self) -> None:
        self.stopping = True
        self.transport.close()


def client_main(conn: Any, requests: list[bytes], port: int, wait_for: bytes | None, concurrency: int) -> None:
    """Child process: open the streams, say how many opened, record until told to stop."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def run() -> list[Subscriber]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        subscribers: list[Subscriber] = []

        async def one(request: bytes) -> None:
            async with gate:
                opened: asyncio.Future[None] = loop.create_future()
                for attempt in range(5):
                    try:
                        _, protocol = await loop.create_connection(
                            lambda: Subscriber(request, wait_for, opened), "127.0.0.1", port
                        )
                        break
                    except OSError:
                        await asyncio.sleep(0.5 * (attempt + 1))
                else:
                    return
                subscribers.append(protocol)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(opened, 120)

        await asyncio.gather(*(one(r) for r in requests))
        conn.send(sum(1 for s in subscribers if s.status == 200 and not s.closed_early))
        stop = asyncio.Event()
        loop.add_reader(conn.fileno(), stop.set)
        await stop.wait()
        loop.remove_reader(conn.fileno())
        conn.recv()
        for subscriber in subscribers:
            subscriber.close()
        return subscribers

    subscribers = asyncio.run(run())
    conn.send(json.dumps([[s.closed_early, s.received] for s in subscribers]))
    conn.close()


# --- the peers --------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    wait_for: bytes | None = None  # a stream is open once this arrives (else at its 200)

    def start(self) -> None:
        raise NotImplementedError

    def stream_request(self, index: int) -> bytes:
        raise NotImplementedError

    async def publish(self, client: Any, seq: int) -> bool:
        raise NotImplementedError

    def warm_up(self) -> None:
        """Do once what the server does once per process, before its memory is taken."""

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"{self.name} exited at start")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.2)

    def pids(self) -> list[int]:
        """The server's processes (nginx: master and worker)."""
        pids = []
        for proc in self.procs:
            pids.append(proc.pid)
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            with contextlib.suppress(OSError):
                pids.extend(int(p) for p in children.read_text().split())
        return pids

    def cpu_seconds(self) -> float:
        return sum(fanout.cpu_seconds(pid) for pid in self.pids())

    def rss_kb(self) -> int:
        return sum(fanout.rss_kb(pid) for pid in self.pids())

    def stop(self) -> None:
        stop_process_groups(self.procs)


def _get(path: str, port: int, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{headers}\r\n".encode()


def _message(seq: int) -> bytes:
    return json.dumps({"text": f"seq-{seq}", "padding": PADDING}).encode()


class NchanPeer(Peer):
    def start(self) -> None:
        self.prefix = tempfile.mkdtemp(prefix="nchan-")
        conf = (HERE / "nchan.conf.template").read_text()
        conf = conf.replace("{prefix}", self.prefix).replace("{port}", str(self.port))
        Path(self.prefix, "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.procs.append(
            subprocess.Popen(
                [nginx, "-p", self.prefix, "-c", f"{self.prefix}/nginx.conf"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        self.wait_listening()

    def stream_request(self, index: int) -> bytes:
        return _get("/sub", self.port)

    async def publish(self, client: Any, seq: int) -> bool:
        response = await client.post(f"http://127.0.0.1:{self.port}/pub", content=_message(seq))
        return response.status_code in (200, 201, 202)


class EventstreamPeer(Peer):
    def start(self) -> None:
        venv = HERE / ".venv-eventstream"
        if not (venv / "bin" / "daphne").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin" / "pip"), "install", "-r", str(HERE / "requirements-eventstream.txt")]
            subprocess.run(pip, check=True)
        self.procs.append(
            subprocess.Popen(
                [
                    str(venv / "bin" / "daphne"),
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "eventstream_site.asgi:application",
                ],
                cwd=HERE,
                # Not the service's settings, which its set-up put in this environment.
                env={**os.environ, "DJANGO_SETTINGS_MODULE": "eventstream_site.settings"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        self.wait_listening()

    def stream_request(self, index: int) -> bytes:
        return _get("/events/", self.port)

    async def publish(self, client: Any, seq: int) -> bool:
        response = await client.post(f"http://127.0.0.1:{self.port}/publish", content=_message(seq))
        return response.status_code == 204


class ServicePeer(Peer):
    """This service, set up as bench/list_stream_fanout.py sets it up (a fresh database)."""

    def __init__(self, name: str, port: int, args: argparse.Namespace) -> None:
        super().__init__(name, port, wait_for=b"event: snapshot")
        self.args = fanout_args(args, port)

    def start(self) -> None:
        fanout.prepare_database(self.args)
        fanout.flush_redis(self.args)
        self.tenancy = fanout.load_tenancy(self.args)
        self.tickets = sorted(self.tenancy.tickets)
        self.subscriber_tokens = [fanout.make_token(self.tenancy, f"bench-u{u:05d}") for u in range(200)]
        self.writer_headers = {
            "Authorization": f"Bearer {fanout.make_token(self.tenancy, 'alice')}",
            "x-tenantid": self.tenancy.tenant_id,
            "realmname": self.tenancy.realm,
        }
        self.server = fanout.Server(self.args)
        self.server.start()
        self.procs = self.server.procs

    def stream_request(self, index: int) -> bytes:
        body = b'{"top": 30}'
        token = self.subscriber_tokens[index % len(self.subscriber_tokens)]
        head = (
            f"POST {fanout.STREAM_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nx-tenantid: {self.tenancy.tenant_id}\r\n"
            f"realmname: {self.tenancy.realm}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def publish(self, client: Any, seq: int) -> bool:
        # A different ticket each time (one ticket changed 20 times a second would only
        # measure its row lock); the subject carries the sequence number.
        ticket = self.tickets[seq % len(self.tickets)]
        response = await client.patch(
            f"http://127.0.0.1:{self.port}{fanout.TICKET_PATH}/{ticket}",
            json={"subject": f"Bench change seq-{seq}"},
            headers=self.writer_headers,
        )
        return response.status_code == 200

    def warm_up(self) -> None:
        asyncio.run(fanout.warm_up([self.port], self.tenancy, self.writer_headers["Authorization"].split()[1]))
        time.sleep(2)  # the warm-up streams are closed and gone

    def stop(self) -> None:
        self.server.stop()


def fanout_args(args: argparse.Namespace, port: int) -> argparse.Namespace:
    return argparse.Namespace(
        db=args.db,
        redis_url=args.redis_url,
        log_level="WARNING",
        heartbeat=15.0,
        streams_per_user=max(4, max(args.stream_counts) // 200 + 1),
        tickets=300,
        base_port=port,
        workers=1,
        server="uvicorn",  # the default server of `config.serve`
        log_dir=tempfile.mkdtemp(prefix="peers-service-"),
    )


# --- one measurement --------------------------------------------------------------------


def measure(peer: Peer, args: argparse.Namespace, streams: int) -> dict[str, Any]:
    import httpx

    peer.warm_up()
    time.sleep(1)
    rss_before = peer.rss_kb()
    ctx = mp.get_context("spawn")
    shares = [list(range(i, streams, args.client_procs)) for i in range(args.client_procs)]
    clients = []
    for share in shares:
        parent, child = ctx.Pipe()
        requests = [peer.stream_request(i) for i in share]
        proc = ctx.Process(target=client_main, args=(child, requests, peer.port, peer.wait_for, 64), daemon=True)
        proc.start()
        clients.append((proc, parent))
    opened = sum(parent.recv() for _, parent in clients)
    time.sleep(args.settle)
    rss_open = peer.rss_kb()

    sent: dict[int, float] = {}
    published = failed = 0

    async def publisher() -> None:
        nonlocal published, failed
        total = int(args.rate * args.duration)
        start = time.monotonic()
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=16)) as client:
            tasks = []

            async def one(seq: int) -> None:
                nonlocal published, failed
                sent[seq] = time.monotonic()
                try:
                    ok = await peer.publish(client, seq)
                except Exception:
                    ok = False
                published += ok
                failed += not ok

            for seq in range(total):
                delay = start + seq / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(seq)))
            await asyncio.gather(*tasks)
        return None

    cpu_before = peer.cpu_seconds()
    started = time.monotonic()
    asyncio.run(publisher())
    publish_seconds = time.monotonic() - started
    time.sleep(args.drain)
    cpu = peer.cpu_seconds() - cpu_before
    for _, parent in clients:
        parent.send("stop")
    received: list[list[Any]] = []
    for proc, parent in clients:
        received.extend(json.loads(parent.recv()))
        proc.join(timeout=30)

    latencies: list[float] = []
    frames = duplicates = lost = 0
    for _closed, seen in received:
        seqs = [seq for _, seq in seen]
        frames += len(seqs)
        unique = set(seqs)
        duplicates += len(seqs) - len(unique)
        lost += sum(1 for seq in sent if seq not in unique)
        latencies.extend(at - sent[seq] for at, seq in seen if seq in sent)
    return {
        "peer": peer.name,
        "streams": streams,
        "opened": opened,
        "frames": frames,
        "lost": lost,
        "duplicated": duplicates,
        "frames per server CPU-s": round(frames / cpu) if cpu else 0,
        "p50 ms": round(fanout.percentile(latencies, 50) * 1000),
        "p99 ms": round(fanout.percentile(latencies, 99) * 1000),
        "KB per stream": round((rss_open - rss_before) / max(1, opened), 1),
        "changes/s kept": round(published / publish_seconds, 1),
        "publish failures": failed,
    }


def make_peer(name: str, args: argparse.Namespace) -> Peer:
    if name == "service":
        return ServicePeer(name, args.base_port, args)
    if name == "eventstream":
        return EventstreamPeer(name, args.base_port + 1)
    if name == "nchan":
        return NchanPeer(name, args.base_port + 2)
    raise SystemExit(f"unknown peer {name}")


COLUMNS = (
    "streams",
    "peer",
    "frames per server CPU-s",
    "p50 ms",
    "p99 ms",
    "KB per stream",
    "changes/s kept",
    "lost",
    "duplicated",
)


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="500,1000,2000", help="subscriber counts (default 500,1000,2000)")
    parser.add_argument("--peers", default="service,eventstream,nchan", help="which servers, in this order")
    parser.add_argument("--rate", type=float, default=20.0, help="messages (changes) per second (default 20)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of publishing (default 30)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes holding the streams")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds with streams open before RSS")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait for frames after the last publish")
    parser.add_argument("--base-port", type=int, default=18300, help="service port; eventstream +1, nchan +2")
    parser.add_argument("--db", default="ticketing_bench_peers", help="the service's bench database (recreated)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    args.stream_counts = [int(s) for s in args.streams.split(",")]

    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"machine: {fanout.machine()}; load before: {fanout.loadavg()}", flush=True)
    rows = []
    for streams in args.stream_counts:
        for name in args.peers.split(","):
            peer = make_peer(name, args)
            peer.start()
            try:
                row = measure(peer, args, streams)
            finally:
                peer.stop()
            print(json.dumps(row), flush=True)
            rows.append(row)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": fanout.machine(), "args": vars(args), "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
