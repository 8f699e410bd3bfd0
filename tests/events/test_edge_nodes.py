"""The edge publisher's senders (events.edge.publisher.EdgeNodes) against a publish
endpoint that fails the way a Pushpin node can: down, overloaded (5xx), or refusing a
body (4xx). The receiver stands in for Pushpin's HTTP publish endpoint only; the
senders, their retries, order and bounds are the real ones (the same code runs in front
of real Pushpins in test_stream_edge.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from events.edge import publisher
from events.edge.publisher import EdgeNodes

pytestmark = pytest.mark.asyncio


class Receiver:
    """An HTTP publish endpoint answering the statuses it is told, in turn (then 200),
    and keeping the items of every request it answered 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.taken: list[str] = []
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.taken += [item["id"] for item in body["items"]]
        return web.Response(status=status, text="Published" if status == 200 else "no")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/publish/", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/publish/"
        return self

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher, "RETRY_FIRST_SECONDS", 0.05)
    monkeypatch.setattr(publisher, "RETRY_MAX_SECONDS", 0.2)


class Deployment:
    """Receivers started on demand and the EdgeNodes publishing to them, all stopped at
    the test's end (whatever it asserted)."""

    def __init__(self) -> None:
        self.receivers: list[Receiver] = []
        self.publishers: list[EdgeNodes] = []

    async def receiver(self, statuses: list[int] | None = None) -> Receiver:
        self.receivers.append(await Receiver(statuses).start())
        return self.receivers[-1]

    def nodes(self, *receivers: Receiver) -> EdgeNodes:
        self.publishers.append(EdgeNodes(tuple(receiver.url for receiver in receivers)))
        return self.publishers[-1]

    async def stop(self) -> None:
        for nodes in self.publishers:
            await nodes.close()
        for receiver in self.receivers:
            await receiver.stop()


@pytest_asyncio.fixture
async def deployment() -> AsyncIterator[Deployment]:
    made = Deployment()
    yield made
    await made.stop()


def items(*ids: str, size: int = 10) -> list[dict]:
    return [{"channel": "c", "id": i, "prev-id": "p", "formats": {"http-stream": {"content": "x" * size}}} for i in ids]


async def eventually(check, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.02)


async def test_a_node_answering_5xx_gets_the_same_items_again_in_order_and_each_once(deployment):
    node = await deployment.receiver([503, 502])
    nodes = deployment.nodes(node)
    await nodes.publish(items("a", "b"))
    await nodes.publish(items("c"))
    await nodes.publish(items("d"))
    await eventually(lambda: len(node.taken) == 4)
    assert node.taken == ["a", "b", "c", "d"]


async def test_a_refused_body_is_not_sent_again_and_what_follows_goes_on(deployment):
    node = await deployment.receiver([400])
    nodes = deployment.nodes(node)
    await nodes.publish(items("a"))
    await eventually(lambda: node.requests == 1)
    await nodes.publish(items("b"))
    await eventually(lambda: node.taken == ["b"])
    await asyncio.sleep(0.3)
    assert node.requests == 2  # "a" was not sent again


async def test_a_node_that_is_down_does_not_hold_up_the_other_and_drops_its_backlog_past_the_bound(
    deployment, monkeypatch
):
    monkeypatch.setattr(publisher, "MAX_BACKLOG_BYTES", 2_000)
    healthy = await deployment.receiver()
    down = await deployment.receiver([503] * 1000)
    nodes = deployment.nodes(down, healthy)
    for n in range(30):  # about 3 KB for each node: past the bound
        await nodes.publish(items(f"e{n:02d}", size=50))
        await eventually(lambda n=n: len(healthy.taken) == n + 1)  # as a feed between reads of the log
    assert healthy.taken == [f"e{n:02d}" for n in range(30)]
    down.statuses.clear()  # back
    await nodes.publish(items("after"))
    await eventually(lambda: "after" in down.taken)
    # What it missed was dropped, not sent late: its streams fill that gap by call-back.
    assert down.taken[-1] == "after" and len(down.taken) < 30


async def test_when_every_node_is_stuck_publishing_waits_until_one_takes_items_again(deployment):
    node = await deployment.receiver([503] * 1000)
    nodes = deployment.nodes(node)
    await nodes.publish(items("a"))  # queued; the node starts failing
    await eventually(lambda: node.requests >= 2)
    second = asyncio.ensure_future(nodes.publish(items("b")))
    await asyncio.sleep(0.5)
    assert not second.done()  # the log's reading waits rather than queueing it all
    node.statuses.clear()
    await asyncio.wait_for(second, 5)
    await eventually(lambda: node.taken == ["a", "b"])


async def test_an_item_over_the_body_limit_is_left_out_and_the_others_are_published(deployment):
    node = await deployment.receiver()
    nodes = deployment.nodes(node)
    await nodes.publish(items("small") + items("huge", size=publisher.MAX_PUBLISH_BYTES) + items("next"))
    await eventually(lambda: node.taken == ["small", "next"])


async def test_closing_sends_what_is_waiting_first(deployment):
    node = await deployment.receiver()
    nodes = deployment.nodes(node)
    nodes.queue(items(*(f"i{n}" for n in range(50))))
    await nodes.close()
    assert node.taken == [f"i{n}" for n in range(50)]
