"""Raw-socket stream clients for tests that need control over the TCP socket itself: a
small receive buffer, a client that stops reading, a close with unread data (RST)."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

LIST_PATH = "/api/v2/ticketing/ticket/sse/list/updates?type=template&module=ticketing"
NOTIFICATIONS_PATH = "/api/v2/ticketing/ticket/sse/notifications"


@dataclass
class RawStream:
    sock: socket.socket
    status: int
    head: bytes
    buffer: bytes = field(default=b"", repr=False)

    def read_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        """Read until `marker` has arrived; returns everything read so far."""
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{marker!r} not received within {timeout} s")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before {marker!r}")
            self.buffer += chunk
        return self.buffer

    def read_to_end(self, timeout: float = 10.0) -> bytes:
        """Read until the server closes the connection; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the server did not close within {timeout} s")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                return self.buffer
            if not chunk:
                return self.buffer
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def open_raw(
    port: int,
    path: str,
    headers: dict[str, str],
    *,
    method: str = "POST",
    body: Any = None,
    rcvbuf: int | None = None,
    timeout: float = 10.0,
) -> RawStream:
    """Send one HTTP/1.1 request and read the response head (and whatever follows it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect, so the advertised window is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if method != "GET" or payload:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
    stream = RawStream(sock=sock, status=0, head=b"")
    data = stream.read_until(b"\r\n\r\n", timeout)
    head, _, rest = data.partition(b"\r\n\r\n")
    stream.head, stream.buffer = head, rest
    stream.status = int(head.split(b" ", 2)[1])
    return stream
