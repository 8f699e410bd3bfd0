"""Server time of `GET /api/v2/ticketing/ticket/notification/count` (and, for comparison,
the first page of the list with its summary) for a user with 100,000 notifications.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ticketing .venv/bin/python bench/notification_count.py

"Server time" is the whole Django request (middleware, JWT auth, view, JSON) measured
in-process around each request, without the network. The user's rows are bulk-inserted
(the benchmark reads; it does not measure creation); the counter row is set to match.
The bench tenant is deleted afterwards."""

import argparse
import os
import platform
import random
import time
import uuid
from datetime import timedelta

from benchdb import django_setup, percentile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notifications", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--list-requests", type=int, default=200)
    args = parser.parse_args()
    django_setup()

    from django.db import connection
    from django.db.models import Count
    from django.test import Client
    from django.utils import timezone

    from notifications.models import TYPE_PRIORITY, Notification, NotificationCounter, NotificationType
    from tenants.models import Realm, Tenant, TenantUser
    from tenants.services import issue_token, subject_for

    if connection.vendor != "postgresql":
        print("warning: not PostgreSQL; the figure that matters is on PostgreSQL")
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    slug = f"bench-count-{uuid.uuid4().hex[:8]}"
    tenant = Tenant.objects.create(slug=slug, name=slug)
    try:
        realm = Realm.objects.create(tenant=tenant, name="bench", secret="bench-secret-0123456789-abcdefghijkl")  # noqa: S106
        user = TenantUser.objects.create(
            tenant=tenant,
            realm=realm,
            subject=subject_for(tenant, "agent"),
            username="agent",
            roles=["agent"],
            teams=["operation"],
        )
        started = time.perf_counter()
        types = list(NotificationType.values)
        now = timezone.now()
        batch: list[Notification] = []
        for i in range(args.notifications):
            type = random.choice(types)
            batch.append(
                Notification(
                    tenant=tenant,
                    recipient=user,
                    type=type,
                    priority=TYPE_PRIORITY[type],
                    ticket_id=uuid.uuid4(),
                    ticket_number=f"TKT-2026-{i:06d}",
                    title=f"Ticket {i}",
                    message=f"Something happened to ticket {i}",
                    read=random.random() < 0.6,
                    created_at=now - timedelta(seconds=i),
                )
            )
            if len(batch) == 5000:
                Notification.objects.bulk_create(batch)
                batch = []
        Notification.objects.bulk_create(batch)
        unread = Notification.objects.filter(recipient=user, read=False)
        NotificationCounter.objects.create(
            user=user,
            tenant=tenant,
            total=args.notifications,
            unread=unread.count(),
            unread_by_type=dict(unread.values_list("type").annotate(n=Count("id")).order_by()),
            unread_by_priority=dict(unread.values_list("priority").annotate(n=Count("id")).order_by()),
            updated_at=now,
        )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE notifications_notification")
        setup_seconds = time.perf_counter() - started

        token = issue_token(realm=realm, username="agent", roles=["agent"], teams=["operation"], ttl_seconds=3600)
        headers = {
            "HTTP_AUTHORIZATION": f"Bearer {token}",
            "HTTP_X_TENANTID": str(tenant.id),
            "HTTP_REALMNAME": realm.name,
        }
        client = Client(HTTP_HOST="127.0.0.1")

        def timed(method, path: str, n: int, **kwargs) -> list[float]:
            for _ in range(20):  # warm-up: caches, connections, plans
                assert method(path, **kwargs, **headers).status_code == 200
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                response = method(path, **kwargs, **headers)
                samples.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200
            return samples

        def sample(fn, n: int) -> list[float]:
            for _ in range(20):
                fn()
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1000)
            return samples

        count = timed(client.get, "/api/v2/ticketing/ticket/notification/count", args.requests)
        data = client.get("/api/v2/ticketing/ticket/notification/count", **headers).json()["data"]
        assert data["total"] == args.notifications
        # Where the count endpoint's time goes: the caller (tenants), and the counter read.
        from notifications.selectors import notification_counts
        from tenants.callers import resolve_caller

        raw_headers = {"authorization": f"Bearer {token}", "x-tenantid": str(tenant.id), "realmname": realm.name}
        caller_only = sample(lambda: resolve_caller(raw_headers), args.requests)
        counter_only = sample(lambda: notification_counts(user), args.requests)
        listing = timed(
            client.post,
            "/api/v2/ticketing/ticket/notifications",
            args.list_requests,
            data={"top": 100, "filter": [{"field": "read", "op": "EQ", "value": False}]},
            content_type="application/json",
        )
    finally:
        tenant.delete()

    print(f"load average before / after: {load_before} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, database {connection.vendor}"
    )
    print(
        f"set-up: {args.notifications:,} notifications for one user in {setup_seconds:.1f} s "
        f"({data['unread']:,} unread)"
    )
    print()
    print("| endpoint (server time, in-process) | requests | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, samples in (
        ("GET ticket/notification/count", count),
        ("… of which caller resolution (tenants.callers.resolve_caller)", caller_only),
        ("… of which counter row read (notifications.selectors.notification_counts)", counter_only),
        ("POST ticket/notifications (top 100, read=false, with summary)", listing),
    ):
        print(
            f"| {name} | {len(samples)} | {percentile(samples, 50):.2f} | {percentile(samples, 99):.2f} | "
            f"{max(samples):.2f} |"
        )


if __name__ == "__main__":
    main()
