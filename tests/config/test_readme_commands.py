"""Every `.venv/bin/python …` command of the README works as written in a new shell after
`make run`: no DEBUG=1 or SECRET_KEY in the environment, only the checkout's `.env` that
`make run` writes (config.local_env), on the embedded default (SQLite, in-memory channel
layer: PostgreSQL and Redis may as well be stopped)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config.local_env import write_default_env
from tests.conftest import ROOT, free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

README = (ROOT / "README.md").read_text(encoding="utf-8")
_COMMAND = re.compile(r"`(\.venv/bin/python (?:manage\.py|-m config\.serve)[^`]*)`")
# Commands that would run until stopped are run once; a big demo is kept small.
_EXTRA = {
    "sla_monitor": ["--once"],
    "send_notification_emails": ["--once"],
    "deliver_webhooks": ["--seconds", "2"],
    "load_demo": ["--tickets", "5"],
}


def readme_commands() -> list[list[str]]:
    """The README's commands, optional parts (`[--flag X]`) left out, in order, once each."""
    seen: dict[str, list[str]] = {}
    for text in _COMMAND.findall(README):
        words = shlex.split(re.sub(r"\s*\[[^\]]*\]", "", text))
        seen.setdefault(" ".join(words), words)
    return list(seen.values())


def test_the_readme_has_the_commands_this_test_runs():
    names = {words[2] for words in readme_commands() if words[1] == "manage.py"}
    assert {"load_demo", "sla_monitor", "issue_token", "create_api_key", "replay_events"} <= names
    assert {"export_events", "prune_events"} <= names
    assert any(words[1:3] == ["-m", "config.serve"] for words in readme_commands())


@pytest.fixture(scope="module")
def new_shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a new shell after `make run`: the .env it writes, its database."""
    folder = tmp_path_factory.mktemp("checkout")
    env_file = folder / ".env"
    assert write_default_env(env_file)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(folder)),
        "LANG": "C.UTF-8",
        # Where this checkout's `.env` and `db.sqlite3` would be, kept out of the real one.
        "ENV_FILE": str(env_file),
        "SQLITE_PATH": str(folder / "db.sqlite3"),
    }
    for step in (["migrate", "--no-input"], ["load_demo", "--tickets", "5"]):  # what `make run` did
        done = run(["manage.py", *step], env)
        assert done.returncode == 0, done.stderr[-2000:]
    yield env


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_manage_py_help_lists_the_projects_commands(new_shell: dict[str, str]):
    done = run(["manage.py", "help"], new_shell)
    assert done.returncode == 0, done.stderr[-2000:]
    for section, command in [("[ticketing]", "load_demo"), ("[tenants]", "issue_token"), ("[events]", "export_events")]:
        assert section in done.stdout and command in done.stdout
    assert "only Django core commands are listed" not in done.stdout + done.stderr


def test_every_manage_py_command_of_the_readme_works_in_a_new_shell(new_shell: dict[str, str]):
    for words in readme_commands():
        if words[1] != "manage.py":
            continue
        args = [*words[1:], *_EXTRA.get(words[2], [])]
        done = run(args, new_shell)
        assert done.returncode == 0, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, (args, done.stderr[-2000:])
    token = run(["manage.py", "issue_token", "--tenant", "demo", "--user", "bob"], new_shell)
    assert token.returncode == 0 and token.stdout.count(".") == 2  # a bare JWT, for TOKEN=$(…)


def test_the_server_command_of_the_readme_serves_in_a_new_shell_and_takes_the_printed_headers(
    new_shell: dict[str, str], tmp_path: Path
):
    (serve,) = [words for words in readme_commands() if words[1:3] == ["-m", "config.serve"]]
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, *serve[1:], "--port", str(port)], cwd=ROOT, env=new_shell, stdout=log, stderr=log
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, timeout=30, interval=0.2, message="the server did not answer /healthz")
        printed = run(
            ["manage.py", "issue_token", "--tenant", "demo", "--user", "alice", "--format", "headers"], new_shell
        )
        headers = dict(line.split(": ", 1) for line in printed.stdout.splitlines())
        response = httpx.get(f"{base}/v2/system/events?limit=5", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        assert len(response.json()["result"]) == 5
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()


@pytest.mark.parametrize("given", [None, "https://help.example.com"])
def test_make_run_links_emails_to_its_own_port_unless_told_otherwise(given: str | None):
    """`make run PORT=…` serves on that port; the notification emails its mailer sends must
    link there too (they linked to :8000 whatever the port), and a base URL set by the
    operator wins. The mailer's line of the recipe, as make runs it, is run up to the
    assignment and asked for the value the mailer would get."""
    recipe = subprocess.run(
        ["make", "-n", "run", "PORT=8123"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assignment = re.search(r"NOTIFICATION_EMAIL_BASE_URL=\S+", recipe)
    assert assignment, recipe
    env = {k: v for k, v in os.environ.items() if k != "NOTIFICATION_EMAIL_BASE_URL"}
    if given:
        env["NOTIFICATION_EMAIL_BASE_URL"] = given
    seen = subprocess.run(
        ["sh", "-c", f"{assignment.group(0)} sh -c 'printf %s \"$NOTIFICATION_EMAIL_BASE_URL\"'"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert seen == (given or "http://127.0.0.1:8123")
