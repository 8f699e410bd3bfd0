"""The stream edge as deployed, for tests: a worker with SSE_EDGE=pushpin, Pushpin in
front of it (tests.pushpin) and the edge publisher beside it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, ServerProcess, free_port
from tests.pushpin import SIG_KEY, Pushpin, pushpin_installed

__all__ = ["EdgeServer", "pushpin_installed"]


class EdgeServer:
    """A worker with SSE_EDGE=pushpin, Pushpin in front of it and the edge publisher.
    `url` is Pushpin's: every request goes through it, as in the edge deployment."""

    def __init__(self, redis_url: str, **env: str) -> None:
        self.redis_url = redis_url
        self.extra = env
        self.pushpin: Pushpin | None = None
        self.worker: ServerProcess | None = None
        self.publisher: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        assert self.pushpin is not None
        return self.pushpin.url

    @property
    def env(self) -> dict[str, str]:
        assert self.worker is not None
        return self.worker.env

    def start(self) -> EdgeServer:
        upstream_port = free_port()
        self.pushpin = Pushpin(f"127.0.0.1:{upstream_port}").start()
        edge_env = {
            "SSE_EDGE": "pushpin",
            "PUSHPIN_SIG_KEY": SIG_KEY,
            "PUSHPIN_PUBLISH_URL": self.pushpin.publish_url,
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
        if self.pushpin is not None:
            self.pushpin.stop()
