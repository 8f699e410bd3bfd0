"""A small real SSE client for tests, on httpx + httpx-sse, with every wait bounded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent


@dataclass
class Frame:
    event: str
    data: Any
    id: str | None


class SseStream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events = EventSource(response).iter_sse()
        self.last_id: str | None = None

    def next(self, *, skip: tuple[str, ...] = ("heartbeat",), timeout: float = 10.0) -> Frame:
        """The next frame whose event is not in `skip`; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sse: ServerSentEvent = next(self.events)
            if sse.id:
                self.last_id = sse.id
            if sse.event in skip:
                continue
            if not sse.data and sse.event == "message":
                # A block without data (a comment such as Pushpin's keep-alive): httpx-sse
                # yields it once an id was seen; EventSource dispatches nothing for it.
                continue
            return Frame(sse.event, json.loads(sse.data) if sse.data else None, sse.id or None)
        raise TimeoutError(f"no frame within {timeout} s")

    def collect(self, count: int, **kwargs: Any) -> list[Frame]:
        return [self.next(**kwargs) for _ in range(count)]


@contextmanager
def open_stream(
    method: str, url: str, *, headers: dict[str, str], json_body: Any = None, read_timeout: float = 10.0
) -> Iterator[SseStream]:
    """Open a stream; fails unless the server answers 200 text/event-stream."""
    with (
        httpx.Client(timeout=httpx.Timeout(10.0, read=read_timeout)) as client,
        client.stream(method, url, headers={"accept": "text/event-stream", **headers}, json=json_body) as response,
    ):
        if response.status_code != 200:
            response.read()
            raise AssertionError(f"stream refused: {response.status_code} {response.text}")
        yield SseStream(response)


def refused_stream(
    url: str, headers: dict[str, str], body: Any = None, *, method: str = "POST", timeout: float = 15.0
) -> httpx.Response:
    """Open a stream that must be refused (a POST's JSON body as `application/json`, unless
    `headers` say otherwise; a GET has none): its answer, read in full; fails at once if
    the stream started, rather than waiting on a stream that never ends."""
    if method == "GET":
        body_headers: dict[str, str] = {}
        content = None
    else:
        body_headers = {"content-type": "application/json"}
        content = body if isinstance(body, str | bytes) else json.dumps(body)
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream(
            method,
            url,
            headers={"accept": "text/event-stream", **body_headers, **headers},
            content=content,
        ) as response,
    ):
        if response.status_code == 200:
            raise AssertionError("the stream started: " + next(response.iter_text(), ""))
        response.read()
        return response


def list_updates_url(base: str, type: str = "template") -> str:
    return f"{base}/api/v2/ticketing/ticket/sse/list/updates?type={type}&module=ticketing"
