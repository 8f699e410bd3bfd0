"""The worker commands beside the server (`sla_monitor`, `send_notification_emails`) keep
working when PostgreSQL closes the connections they hold between rounds (a restart,
`idle_session_timeout`, a proxy cutting idle connections): the round that meets a dead
pooled connection runs again on a fresh one instead of failing, round after round.
Real processes; their connections are terminated with pg_terminate_backend."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import ROOT, ServerProcess, wait_until_database_is_quiet
from tests.faults.test_database_faults import admin_connection
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(90),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's pooled connections"),
]

# What each command prints after every round with -v 2.
ROUND_LINES = {"sla_monitor": "event=sla_monitor_checked", "send_notification_emails": "event=notification_emails_sent"}


def _terminate(app_name: str) -> int:
    with admin_connection() as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", [app_name]
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


@pytest.mark.parametrize("command", sorted(ROUND_LINES))
def test_a_worker_command_whose_idle_connections_are_closed_keeps_working(
    transactional_db: None, command: str, tmp_path: Path
):
    app_name = f"fault-worker-{uuid.uuid4().hex[:8]}"
    env = ServerProcess(PGAPPNAME=app_name, LOG_LEVEL="INFO").env
    output = tmp_path / "out.log"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", command, "--interval", "0.3", "-v", "2"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:

        def rounds() -> int:
            return output.read_text(errors="replace").count(ROUND_LINES[command])

        wait_for(lambda: rounds() >= 2, timeout=30, interval=0.1, message=lambda: output.read_text()[-2000:])
        # Between two rounds: the pool's connections are idle, and the server ends them.
        assert wait_for(lambda: _terminate(app_name), timeout=10, interval=0.05, message="no connection to end")
        seen = rounds()
        wait_for(lambda: rounds() >= seen + 3, timeout=30, interval=0.1, message=lambda: output.read_text()[-2000:])
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        wait_until_database_is_quiet()
    text = output.read_text(errors="replace")
    assert "_failed" not in text, text[-3000:]
