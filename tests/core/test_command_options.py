"""Every management command's numeric option refuses a value that cannot work, with a
usage error naming the option and before any work (core.command_args): `prune_events
--batch 0` printed "deleted 0 events" and did nothing, `--batch -1` ended in a traceback,
and the workers' `--interval 0` ran rounds back to back against the database."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

REFUSED = [
    ("export_events", "--batch", "0"),
    ("prune_events", "--batch", "0"),
    ("prune_events", "--batch", "-1"),
    ("replay_events", "--batch", "0"),
    ("prune_idempotency_keys", "--batch", "-10"),
    ("send_notification_emails", "--batch", "0"),
    ("send_notification_emails", "--batch", "-5"),
    ("send_notification_emails", "--batch", "ten"),
    ("send_notification_emails", "--interval", "0"),
    ("sla_monitor", "--batch", "0"),
    ("sla_monitor", "--interval", "-1"),
    ("sla_monitor", "--interval", "nan"),
    ("deliver_webhooks", "--seconds", "0"),
    ("deliver_webhooks", "--seconds", "-3"),
    ("publish_to_edge", "--seconds", "inf"),
    ("issue_token", "--ttl", "0"),
    ("issue_token", "--ttl", "ten"),
    ("load_demo", "--tickets", "-1"),
]


@pytest.mark.parametrize(("command", "option", "value"), REFUSED)
def test_a_numeric_option_that_cannot_work_is_a_usage_error_naming_it(command: str, option: str, value: str):
    # The workers asked for one round: were the value taken, the test ends anyway.
    once = ["--once"] if command in ("send_notification_emails", "sla_monitor") else []
    with pytest.raises(CommandError, match=f"argument {option}: "):
        call_command(command, *once, option, value)
