"""Print a token of the embedded HS256 realm, for scripts: TOKEN=$(manage.py issue_token ...)."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.command_args import positive_int_up_to
from core.command_errors import handles_database_faults
from tenants.management.commands._tenant import tenant_named
from tenants.models import Realm
from tenants.services import issue_token

# A token cannot be revoked (only its realm's secret changed): one valid for years is a
# password that never expires. 30 days covers a long-running script or test setup.
MAX_TTL_SECONDS = 30 * 86400


class Command(BaseCommand):
    help = (
        "Sign a Keycloak-shaped JWT for a user of a tenant with the tenant's HS256 realm and print it "
        "(or, with --format headers, the three request headers, one a line)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug or id.")
        parser.add_argument(
            "--user",
            required=True,
            help="Username (preferred_username). One the tenant does not know yet is created from the token's "
            "claims at its first request, as for any identity provider's token.",
        )
        parser.add_argument("--realm", help="Realm name; defaults to the tenant's only HS256 realm.")
        parser.add_argument("--roles", default=None, help="Comma-separated realm roles (default: the user's roles).")
        parser.add_argument("--teams", default=None, help="Comma-separated teams (default: the user's teams).")
        parser.add_argument(
            "--ttl",
            type=positive_int_up_to(MAX_TTL_SECONDS, " seconds (30 days)"),
            default=3600,
            help=f"Seconds until the token expires (default 3600, at most {MAX_TTL_SECONDS}: 30 days).",
        )
        parser.add_argument(
            "--format",
            choices=["token", "headers"],
            default="token",
            help="token: the bare token (default); headers: Authorization, x-tenantid and realmname, one a line.",
        )

    @handles_database_faults
    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_named(options["tenant"], "Run `python manage.py load_demo` first?")
        realms = Realm.objects.filter(tenant=tenant, algorithm=Realm.Algorithm.HS256).exclude(secret="")
        if options["realm"]:
            realms = realms.filter(name=options["realm"])
        realm = realms.order_by("name").first()
        if realm is None:
            raise CommandError(f"Tenant {tenant.slug} has no HS256 realm to sign with.")
        user = tenant.users.filter(username=options["user"]).first()
        roles = _split(options["roles"]) if options["roles"] is not None else (user.roles if user else ["user"])
        teams = _split(options["teams"]) if options["teams"] is not None else (user.teams if user else [])
        token = issue_token(realm=realm, username=options["user"], roles=roles, teams=teams, ttl_seconds=options["ttl"])
        if options["format"] == "headers":
            self.stdout.write(f"Authorization: Bearer {token}\nx-tenantid: {tenant.id}\nrealmname: {realm.name}")
        else:
            self.stdout.write(token)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]
