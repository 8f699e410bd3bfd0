"""Print what a newcomer needs after `make run`: the dashboard and its demo sign-ins, a
ready curl command, the admin URL. Beside `load_demo`, whose demo it describes."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tenants.models import Realm, Tenant
from tenants.services import issue_token
from ticketing.management.commands.load_demo import DEMO_PASSWORD


class Command(BaseCommand):
    help = (
        "Print the dashboard URL and demo sign-ins, ready-to-paste curl commands (with a fresh 12-hour token "
        "for alice) and the admin URL."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the service is reached, as in the printed commands (default http://127.0.0.1:8000).",
        )
        parser.add_argument("--tenant", default="demo", help="Tenant slug (default demo).")
        parser.add_argument("--user", default="alice", help="Who the printed token is for (default alice).")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        realm = Realm.objects.filter(tenant=tenant, algorithm=Realm.Algorithm.HS256).first() if tenant else None
        if realm is None:
            raise CommandError("No demo tenant: run `python manage.py load_demo` first.")
        user = tenant.users.filter(username=options["user"]).first()
        token = issue_token(
            realm=realm,
            username=options["user"],
            roles=user.roles if user else ["agent"],
            teams=user.teams if user else [],
            ttl_seconds=12 * 3600,
        )
        base = options["base_url"].rstrip("/")
        headers = f"-H 'Authorization: Bearer {token}' -H 'x-tenantid: {tenant.id}' -H 'realmname: {realm.name}'"
        self.stdout.write(f"""
==> The service is starting on {base}

Dashboard: {base}/dashboard/
  sign in as alice or carol (agents), bob or dave (end users), password {DEMO_PASSWORD};
  or as admin, password admin (agent, admin and support roles; also the Django admin)

Create a ticket (as {options["user"]}; the token is valid for 12 hours):
  curl -s -X POST {base}/api/v2/ticketing/ticket {headers} -H 'content-type: application/json' \\
       -d '{{"subject": "My first ticket", "priority": "high", "team": "operation"}}'

See its event in the partner log (newest last):
  curl -s '{base}/v2/system/events?limit=1000' {headers}

Watch the live ticket list (leave it open, change tickets in another terminal):
  curl -sN -X POST '{base}/api/v2/ticketing/ticket/sse/list/updates?type=template&module=ticketing' {headers} \\
       -H 'content-type: application/json' -d '{{"top": 5, "offset": 0}}'

More tokens: .venv/bin/python manage.py issue_token --tenant {tenant.slug} --user bob --format headers
Admin:    {base}/admin/   (user: admin, password: admin)
API docs: {base}/api/docs/
""")
