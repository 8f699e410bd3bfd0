"""Print what a newcomer needs after `make run`: the dashboard and its demo sign-ins, a
ready curl command, the admin URL. Beside `load_demo`, whose demo it describes."""

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from core.command_args import http_base_url, option_value
from core.command_errors import handles_database_faults
from tenants.models import Realm, Tenant
from tenants.services import issue_token
from ticketing.management.commands.load_demo import (
    DEFAULT_BASE_URL,
    DEMO_ADMIN_PASSWORD,
    DEMO_PASSWORD,
)


def base_url_of(realm: Realm) -> str:
    """Where the service is, as the realm's stored issuer (`<base>/realms/<name>`, which
    `load_demo --base-url` keeps) says: the printed token must carry that issuer."""
    suffix = f"/realms/{realm.name}"
    if realm.issuer.endswith(suffix) and realm.issuer != suffix:
        return realm.issuer[: -len(suffix)]
    return DEFAULT_BASE_URL


def has_password(username: str, password: str) -> bool:
    """Whether the Django account signs in with this password (the demo's published one
    is printed only where it is true: `load_demo` refuses it when DEBUG is off)."""
    account = get_user_model().objects.filter(username=username).first()
    return account is not None and account.check_password(password)


class Command(BaseCommand):
    help = (
        "Print the dashboard URL and demo sign-ins, ready-to-paste curl commands (with a fresh 12-hour token "
        "for alice) and the admin URL."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--base-url",
            type=http_base_url,
            help="Where the service is reached, as in the printed commands (an absolute http(s) URL). Default: "
            f"where the realm's issuer says, as `load_demo --base-url` stored it ({DEFAULT_BASE_URL} otherwise).",
        )
        parser.add_argument("--tenant", default="demo", help="Tenant slug (default demo).")
        parser.add_argument(
            "--user",
            default="alice",
            help="Who the printed token is for (default alice). A username the tenant does not know yet is "
            "created from the token's claims at its first request, as for any identity provider's token.",
        )

    @handles_database_faults
    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        realm = Realm.objects.filter(tenant=tenant, algorithm=Realm.Algorithm.HS256).first() if tenant else None
        if realm is None:
            raise CommandError("No demo tenant: run `python manage.py load_demo` first.")
        base = option_value(options["base_url"] or None, http_base_url, "--base-url") or base_url_of(realm)
        user = tenant.users.filter(username=options["user"]).first()
        token = issue_token(
            realm=realm,
            username=options["user"],
            roles=user.roles if user else ["agent"],
            teams=user.teams if user else [],
            ttl_seconds=12 * 3600,
        )
        # The published demo passwords only where they still sign in: load_demo refuses
        # them when DEBUG is off, and an operator may have passed others.
        admin_is_demo = has_password("admin", DEMO_ADMIN_PASSWORD)
        admin_password = (
            f"password {DEMO_ADMIN_PASSWORD}" if admin_is_demo else "the --admin-password given to load_demo"
        )
        admin_sign_in = (
            f"password: {DEMO_ADMIN_PASSWORD}" if admin_is_demo else "password: the --admin-password given to load_demo"
        )
        user_password = (
            f"password {DEMO_PASSWORD}"
            if has_password("alice", DEMO_PASSWORD)
            else "the --user-password given to load_demo"
        )
        headers = f"-H 'Authorization: Bearer {token}' -H 'x-tenantid: {tenant.id}' -H 'realmname: {realm.name}'"
        self.stdout.write(f"""
==> The service is starting on {base}

Dashboard: {base}/dashboard/
  sign in as alice or carol (agents), bob or dave (end users), {user_password};
  or as admin, {admin_password} (agent, admin and support roles; also the Django admin)

Create a ticket (as {options["user"]}; the token is valid for 12 hours):
  curl -s -X POST {base}/api/v2/ticketing/ticket {headers} -H 'content-type: application/json' \\
       -d '{{"subject": "My first ticket", "priority": "high", "team": "operation"}}'

See its event in the partner log (newest last):
  curl -s '{base}/v2/system/events?limit=1000' {headers}

Watch the live ticket list (leave it open, change tickets in another terminal):
  curl -sN -X POST '{base}/api/v2/ticketing/ticket/sse/list/updates?type=template&module=ticketing' {headers} \\
       -H 'content-type: application/json' -d '{{"top": 5, "offset": 0}}'

More tokens: .venv/bin/python manage.py issue_token --tenant {tenant.slug} --user bob --format headers
Admin:    {base}/admin/   (user: admin, {admin_sign_in})
API docs: {base}/api/docs/
""")
