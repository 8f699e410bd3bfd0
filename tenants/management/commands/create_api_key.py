"""Create a partner API key and print it (the only time it is shown)."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tenants.models import ApiKey, Tenant
from tenants.services import create_api_key


class Command(BaseCommand):
    help = (
        "Create a tenant-scoped partner API key for the event API and websocket. Prints the key once; "
        "only its hash is stored. Revoke it in the admin."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug.")
        parser.add_argument("--name", required=True, help='What the key is for, e.g. "crm sync".')
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            choices=[s for s, _ in ApiKey.SCOPES],
            help=f"Scope (repeatable); default {ApiKey.SCOPE_EVENTS_READ}.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}.")
        key, full = create_api_key(tenant=tenant, name=options["name"], scopes=options["scopes"])
        self.stderr.write(f"created key {key.prefix} for {tenant.slug}; store it now, it is not shown again")
        self.stdout.write(full)
