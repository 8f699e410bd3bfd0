"""Load the demo tenant: a realm, an admin, two agents, two end users, ~200 tickets, and
Django accounts linked to those users so they can sign in to the browser dashboard.

A ticketing command: the demo is a help desk, its tickets are made through
ticketing.services, and ticketing may use tenants (never the other way round)."""

import random
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from core.command_args import http_base_url, non_negative_int, option_value
from core.progress import progress_bar
from core.text import count_of
from events.recording import unit_of_work
from tenants.callers import caller_for_user
from tenants.models import AllowedOrigin, Realm, Tenant, TenantUser, hs256_secret_problem
from tenants.services import subject_for
from ticketing import services
from ticketing.models import Priority, Status

DEMO_USERS = [
    # username, name, roles, teams
    ("admin", "Ada Admin", ["admin", "agent", "support"], ["operation", "network"]),
    ("alice", "Alice Agent", ["agent"], ["operation"]),
    ("carol", "Carol Agent", ["agent"], ["network"]),
    ("bob", "Bob User", ["user"], []),
    ("dave", "Dave User", ["user"], []),
]
SUBJECTS = [
    "Unable to access VPN",
    "Laptop will not boot",
    "Email not syncing on phone",
    "Printer jams on floor 3",
    "Request for new monitor",
    "Password reset",
    "Slow network in meeting room",
    "Software license request",
    "Wi-Fi drops every hour",
    "Cannot join video call",
    "Shared drive is full",
    "New starter account",
]
CATEGORIES = ["Network", "Hardware", "Software", "Access Management", "Email"]
CUSTOMERS = ["Acme Corp", "Globex", "Initech", "Umbrella", ""]
# Dashboard passwords of the demo accounts (the admin's is --admin-password).
DEMO_PASSWORD = "demo1234"  # noqa: S105  (documented demo credential)
DEMO_ADMIN_PASSWORD = "admin"  # noqa: S105  (documented demo credential)
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


class Command(BaseCommand):
    help = "Create (or complete) the `demo` tenant with users and ~200 tickets. Safe to run again."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--base-url",
            type=http_base_url,
            help="Where the service is reached, e.g. http://127.0.0.1:8001 (`make run` passes its HOST and PORT): "
            "the demo realm's token issuer becomes <base-url>/realms/demo and the dashboard origin is allowed. "
            f"Default: keep what is there, {DEFAULT_BASE_URL} for a new demo.",
        )
        parser.add_argument(
            "--tickets", type=non_negative_int, default=200, help="How many tickets the tenant should have."
        )
        parser.add_argument(
            "--admin-password", default=DEMO_ADMIN_PASSWORD, help="Password of the Django admin `admin`."
        )
        parser.add_argument(
            "--user-password",
            default=DEMO_PASSWORD,
            help="Dashboard password of alice, carol, bob and dave (set when their accounts are created).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        base_url = option_value(options["base_url"] or None, http_base_url, "--base-url") or ""
        if not settings.DEBUG:
            # Outside development the demo's published credentials would let anyone sign
            # tokens for the demo realm or sign in as its admin.
            if settings.DEMO_REALM_SECRET == settings.DEMO_REALM_SECRET_DEFAULT:
                raise CommandError(
                    "DEBUG is off: set DEMO_REALM_SECRET to a secret of your own before loading the demo."
                )
            if options["admin_password"] == DEMO_ADMIN_PASSWORD or options["user_password"] == DEMO_PASSWORD:
                raise CommandError("DEBUG is off: pass --admin-password and --user-password of your own.")
        if not Realm.objects.filter(tenant__slug="demo", name="demo").exists():
            # Created here, not through the admin's form: the same refusal of a secret
            # short enough to be guessed from a token (Realm.clean).
            problem = hs256_secret_problem(settings.DEMO_REALM_SECRET)
            if problem:
                raise CommandError(f"DEMO_REALM_SECRET: {problem}")
        tenant, _ = Tenant.objects.get_or_create(slug="demo", defaults={"name": "Demo Help Desk"})
        realm, _ = Realm.objects.get_or_create(
            tenant=tenant,
            name="demo",
            defaults={"secret": settings.DEMO_REALM_SECRET, "issuer": f"{base_url or DEFAULT_BASE_URL}/realms/demo"},
        )
        if base_url and realm.issuer != f"{base_url}/realms/demo":
            # The service moved (another port): its tokens name where it is now. Tokens
            # issued for the old address are refused from here on (wrong `iss`): said, since
            # every client holding one stops working.
            old_issuer, realm.issuer = realm.issuer, f"{base_url}/realms/demo"
            realm.save(update_fields=["issuer"])
            self.stderr.write(
                f"warning: the demo realm's issuer changed from {old_issuer or '(none)'} to {realm.issuer}; "
                "tokens issued for the old issuer are refused from now on (issue new ones)."
            )
        origins = {"http://127.0.0.1:8000", "http://localhost:8000"}
        if base_url:
            origins.add(base_url)
        for origin in sorted(origins):
            AllowedOrigin.objects.get_or_create(tenant=tenant, origin=origin)
        users = {name: self._user(tenant, realm, name, full, roles, teams) for name, full, roles, teams in DEMO_USERS}
        self._admin_login(options["admin_password"])
        for username, tenant_user in users.items():
            password = options["admin_password"] if username == "admin" else options["user_password"]
            self._link_login(tenant_user, password)
        created = self._tickets(tenant, users, options["tickets"], quiet=options["verbosity"] == 0)
        tickets = f"{count_of(created, 'new ticket')}, " if created else ""
        self.stdout.write(
            self.style.SUCCESS(f"demo tenant ready: {tickets}id={tenant.id} realm={realm.name} issuer={realm.issuer}")
        )

    def _user(
        self, tenant: Tenant, realm: Realm, username: str, name: str, roles: list[str], teams: list[str]
    ) -> TenantUser:
        # The demo realm's tokens (`issue_token`) name these people: same realm, same sub.
        user, _ = TenantUser.objects.update_or_create(
            tenant=tenant,
            username=username,
            defaults={
                "realm": realm,
                "subject": subject_for(tenant, username),
                "name": name,
                "email": f"{username}@demo.example",
                "roles": roles,
                "teams": teams,
            },
        )
        return user

    def _admin_login(self, password: str) -> None:
        User = get_user_model()
        admin, created = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
        if created:
            admin.set_password(password)
            admin.save()

    def _link_login(self, tenant_user: TenantUser, password: str) -> None:
        """A Django account of the same name, linked so the person can use the dashboard.
        An existing account keeps its password; one linked to someone else is left alone."""
        account, created = get_user_model().objects.get_or_create(username=tenant_user.username)
        if created:
            account.email = tenant_user.email
            account.set_password(password)
            account.save()
        if tenant_user.login_id == account.pk:
            return
        linked_elsewhere = TenantUser.objects.filter(login=account).exclude(pk=tenant_user.pk).exists()
        if linked_elsewhere:
            self.stderr.write(f"account {account.username} is linked to another tenant user; not linking it")
            return
        tenant_user.login = account
        tenant_user.save(update_fields=["login"])

    def _tickets(self, tenant: Tenant, users: dict[str, TenantUser], wanted: int, *, quiet: bool) -> int:
        """Create tickets up to `wanted`; returns how many were created."""
        existing = tenant.tickets.count()
        if existing >= wanted:
            self.stdout.write(f"{count_of(existing, 'ticket')} already there")
            return 0
        rng = random.Random(42 + existing)
        agents = [users["alice"], users["carol"], users["admin"]]
        requesters = [users["bob"], users["dave"]]
        team_of = {"alice": "operation", "carol": "network", "admin": "operation"}
        admin = caller_for_user(users["admin"])
        with progress_bar(self, total=wanted - existing, unit="ticket", desc="demo tickets", quiet=quiet) as bar:
            for i in range(existing, wanted):
                assignee = rng.choice([*agents, None])
                # One unit of work for both changes: its events are written at its end, and
                # the tenant's log lock is the last lock it takes (events.recording).
                with unit_of_work():
                    ticket = services.create_ticket(
                        caller=caller_for_user(rng.choice(requesters)),
                        data={
                            "subject": f"{rng.choice(SUBJECTS)} #{i + 1}",
                            "description": "Reported by the demo loader.",
                            "category": rng.choice(CATEGORIES),
                            "priority": rng.choice(Priority.values),
                        },
                    )
                    services.update_ticket(
                        caller=admin,
                        ticket=ticket,
                        data={
                            "assignee": assignee,
                            "team": team_of[assignee.username] if assignee else rng.choice(["operation", "network"]),
                            "customer": rng.choice(CUSTOMERS),
                            "status": rng.choice(Status.values),
                        },
                    )
                bar.update()
        return wanted - existing
