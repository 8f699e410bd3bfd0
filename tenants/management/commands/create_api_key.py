"""Create a partner API key and print it (the only time it is shown)."""

import re
from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from core.command_args import label
from core.command_errors import handles_database_faults
from tenants.management.commands._tenant import tenant_named
from tenants.models import ApiKey
from tenants.services import create_api_key

_DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str) -> timedelta:
    """`90s`, `15m`, `12h`, `30d`, `2w` as a timedelta."""
    match = _DURATION.match(str(value).strip())
    if not match or int(match.group(1)) == 0:
        raise CommandError(f"--expires-in {value!r} is not a duration like 30d, 12h, 15m, 90s or 2w.")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


class Command(BaseCommand):
    help = (
        "Create a tenant-scoped partner API key for the event API and websocket. Prints the key once; "
        "only its hash is stored. Revoke it in the admin."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug or id.")
        parser.add_argument(
            "--name",
            required=True,
            # The admin lists keys by name: an empty one could not be told apart or revoked
            # knowingly, and a longer one than the column failed at the INSERT.
            type=label(ApiKey._meta.get_field("name").max_length),
            help=f'What the key is for, e.g. "crm sync" (1 to {ApiKey._meta.get_field("name").max_length} characters).',
        )
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            choices=[s for s, _ in ApiKey.SCOPES],
            help=f"Scope (repeatable); default {ApiKey.SCOPE_EVENTS_READ}.",
        )
        parser.add_argument(
            "--expires-in",
            help="Lifetime, e.g. 30d, 12h, 15m, 2w; the key is refused (API_KEY_EXPIRED) afterwards. "
            "Default: never expires.",
        )

    @handles_database_faults
    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_named(options["tenant"])
        lifetime = parse_duration(options["expires_in"]) if options["expires_in"] is not None else None
        expires_at = timezone.now() + lifetime if lifetime else None
        key, full = create_api_key(tenant=tenant, name=options["name"], scopes=options["scopes"], expires_at=expires_at)
        until = f", expires {expires_at.isoformat()}" if expires_at else ""
        self.stderr.write(f"created key {key.prefix} for {tenant.slug}{until}; store it now, it is not shown again")
        self.stdout.write(full)
