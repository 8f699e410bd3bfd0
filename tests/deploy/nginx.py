"""A real nginx (Debian's package) in front of test server processes, configured from the
project's template (deploy/nginx/ticketing.conf.template) with the upstream and listen
placeholders filled in, run as a non-daemon child with its own pid, log and temp paths."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port

TEMPLATE = ROOT / "deploy" / "nginx" / "ticketing.conf.template"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def render_template(values: dict[str, str]) -> str:
    """Replace `${NAME}` for the given names only, as the nginx image's envsubst does for
    the variables it is given; nginx's own `$variables` are left alone."""
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    left = re.findall(r"\$\{\w+\}", text)
    assert not left, f"placeholders not filled: {left}"
    return text


class Nginx:
    def __init__(self, upstream: str) -> None:
        binary = nginx_binary()
        assert binary, "nginx is not installed"
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="ticketing-nginx-"))
        self.dir.chmod(0o755)
        (self.dir / "ticketing.conf").write_text(
            render_template({"TICKETING_LISTEN": f"127.0.0.1:{self.port}", "TICKETING_UPSTREAM": upstream})
        )
        d = self.dir
        temp_paths = "\n".join(
            f"    {kind}_temp_path {d}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root, nginx's workers would switch to `nobody`, who cannot write the temp dirs.
        user = "user root root;" if os.geteuid() == 0 else ""
        (d / "nginx.conf").write_text(
            f"""{user}
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
{temp_paths}
    include {d}/ticketing.conf;
}}
"""
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> Nginx:
        d = self.dir
        command = [self.binary, "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")]
        check = subprocess.run(
            [*command, "-t"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(
            command,
            stdout=open(self.dir / "access.log", "wb"),  # noqa: SIM115  (the child keeps it)
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not answer in 10 s: {self.log()}")

    def log(self) -> str:
        parts = [(self.dir / name) for name in ("error.log", "access.log")]
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in parts if p.exists())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)
