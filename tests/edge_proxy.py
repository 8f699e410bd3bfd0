"""The stream edge as deployed, for tests: a worker with SSE_EDGE=pushpin, Pushpin in
front of it (tests.pushpin; or several, each an edge node) and the edge publisher beside it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, ServerProcess, free_port
from tests.pushpin import SIG_KEY, Pushpin, pushpin_installed

__all__ = ["EdgeServer", "pushpin_installed"]


class EdgeServer:
    """A worker with SSE_EDGE=pushpin, `nodes` Pushpins in front of it and the edge
    publisher publishing to all of them. `url` is the first Pushpin's (`urls` every
    one's): every request goes through one, as in the edge deployment."""

    def __init__(self, redis_url: str, *, nodes: int = 1, **env: str) -> None:
        self.redis_url = redis_url
        self.extra = env
        self.node_count = nodes
        self.nodes: list[Pushpin] = []
        self.worker: ServerProcess | None = None
        self.publisher: subprocess.Popen | None = None

    @property
    def pushpin(self) -> Pushpin:
        return self.nodes[0]

    @property
    def url(self) -> str:
        return self.pushpin.url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def env(self) -> dict[str, str]:
        assert self.worker is not None
        return self.worker.env

    def start(self) -> EdgeServer:
        upstream_port = free_port()
        self.nodes = [Pushpin(f"127.0.0.1:{upstream_port}").start() for _ in range(self.node_count)]
        edge_env = {
            "SSE_EDGE": "pushpin",
            "PUSHPIN_SIG_KEY": SIG_KEY,
            "PUSHPIN_PUBLISH_URL": ",".join(node.publish_url for node in self.nodes),
            "REDIS_URL": self.redis_url,
            "SSE_EDGE_LINK_SECONDS": "2",
            **self.extra,
        }
        self.worker = ServerProcess(**edge_env)
        self.worker.port = upstream_port
        self.worker.url = f"http://127.0.0.1:{upstream_port}"
        self.worker.start()
        self.start_publisher()
        return self

    def start_publisher(self) -> None:
        assert self.worker is not None
        log = open(ROOT / f".publisher-{self.worker.port}.log", "ab")  # noqa: SIM115
        self.publisher = subprocess.Popen(
            [sys.executable, "manage.py", "publish_to_edge"],
            cwd=ROOT,
            env=self.worker.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop_publisher(self) -> None:
        if self.publisher is not None and self.publisher.poll() is None:
            self.publisher.terminate()
            try:
                self.publisher.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.publisher.kill()
                self.publisher.wait(timeout=10)

    def stop(self) -> None:
        self.stop_publisher()
        if self.worker is not None:
            (ROOT / f".publisher-{self.worker.port}.log").unlink(missing_ok=True)
            self.worker.stop()
        for node in self.nodes:
            node.stop()
