"""Pushpin (Debian's `pushpin`) on free ports, routing to one upstream: the proxy of the
stream edge (SSE_EDGE=pushpin), started by the tests (tests.edge_proxy) and the fan-out
benchmark. No Django here: the benchmark imports it without the project's settings."""

from __future__ import annotations

import configparser
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SIG_KEY = "edge-test-signing-key-of-at-least-32-bytes"

# The shipped configuration (deploy/pushpin/pushpin.conf), with what must differ for an
# instance of a test or benchmark: its own ports and run directory, loopback only, the
# test key, and (Debian's package) a zurl of its own for the proxy's upstream requests:
# Debian's internal.conf points the proxy at a system-wide zurl under /var/run/zurl.
SHIPPED = Path(__file__).resolve().parent.parent / "deploy" / "pushpin" / "pushpin.conf"


def instance_config(
    rundir: Path, *, http_port: int, publish_port: int, sig_key: str, max_connections: int
) -> configparser.RawConfigParser:
    config = configparser.RawConfigParser(delimiters=("=",), comment_prefixes=("#",), strict=True)
    config.optionxform = str  # type: ignore[assignment,method-assign]  (keys are case-sensitive)
    config.read(SHIPPED)
    overrides = {
        "global": {"rundir": str(rundir), "ipc_prefix": f"pp{http_port}-"},
        "runner": {
            "services": "condure,zurl,pushpin-proxy,pushpin-handler",
            "http_port": f"127.0.0.1:{http_port}",
            "logdir": str(rundir),
            "client_maxconn": str(max_connections),
            "zurl_bin": "zurl",
            "log_level": os.environ.get("PUSHPIN_LOG_LEVEL", "2"),
        },
        "proxy": {
            "routesfile": str(rundir / "routes"),
            "sig_key": sig_key,
            "zurl_out_specs": "ipc://{rundir}/{ipc_prefix}zurl-in",
            "zurl_out_stream_specs": "ipc://{rundir}/{ipc_prefix}zurl-in-stream",
            "zurl_in_specs": "ipc://{rundir}/{ipc_prefix}zurl-out",
        },
        "handler": {
            "push_in_spec": f"tcp://127.0.0.1:{free_port()}",
            "push_in_sub_specs": f"tcp://127.0.0.1:{free_port()}",
            "push_in_http_addr": "127.0.0.1",
            "push_in_http_port": str(publish_port),
            "command_spec": f"tcp://127.0.0.1:{free_port()}",
        },
    }
    for section, values in overrides.items():
        for key, value in values.items():
            config.set(section, key, value)
    return config


def pushpin_installed() -> bool:
    return shutil.which("pushpin") is not None


class Pushpin:
    """`pushpin` routing every request to `upstream` (host:port)."""

    def __init__(self, upstream: str, *, max_connections: int = 50000) -> None:
        self.rundir = Path(tempfile.mkdtemp(prefix="pushpin-"))
        self.http_port = free_port()
        self.publish_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.publish_url = f"http://127.0.0.1:{self.publish_port}/publish/"
        (self.rundir / "routes").write_text(f"* {upstream}\n")
        config = instance_config(
            self.rundir,
            http_port=self.http_port,
            publish_port=self.publish_port,
            sig_key=SIG_KEY,
            max_connections=max_connections,
        )
        with (self.rundir / "pushpin.conf").open("w") as file:
            config.write(file, space_around_delimiters=False)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> Pushpin:
        log = open(self.rundir / "pushpin.log", "wb")  # noqa: SIM115  (kept open while it runs)
        self.proc = subprocess.Popen(
            ["pushpin", "--config", str(self.rundir / "pushpin.conf"), "--merge-output"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pushpin exited: {(self.rundir / 'pushpin.log').read_text()[-2000:]}")
            if all(_accepts(port) for port in (self.http_port, self.publish_port)):
                return self
            time.sleep(0.1)
        raise RuntimeError("pushpin did not start in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        shutil.rmtree(self.rundir, ignore_errors=True)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False
