"""core.db_retry with real database faults in this process (a backend that terminates
itself), and the guard that every API view goes through it. The same behaviour through
the real server is in tests/faults/test_database_faults.py."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

from core.db_retry import DatabaseUnavailable, call_with_retry
from core.views import RetryingAPIView
from tenants.models import Tenant

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="faults are PostgreSQL's")


def _terminate_own_backend() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


def _views(resolver: URLResolver | None = None) -> list[type]:
    found = []
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            found += _views(entry)
        elif isinstance(entry, URLPattern):
            view_class = getattr(entry.callback, "view_class", None) or getattr(entry.callback, "cls", None)
            if view_class is not None:
                found.append(view_class)
    return found


def test_every_api_view_goes_through_the_retrying_base():
    # The schema and its docs page (drf-spectacular's views, ours a subclass) read no table.
    api_views = [
        v
        for v in _views()
        if issubclass(v, APIView) and not any(base.__module__.startswith("drf_spectacular") for base in v.__mro__)
    ]
    assert len(api_views) > 20
    assert [v.__name__ for v in api_views if not issubclass(v, RetryingAPIView)] == []


@pytest.mark.django_db(transaction=True)
def test_transaction_whose_connection_dies_before_commit_is_run_again_and_applied_once():
    runs = []

    def unit() -> None:
        with transaction.atomic():
            Tenant.objects.create(slug=f"retry-{len(runs)}", name="Retry")
            runs.append(1)
            if len(runs) == 1:
                _terminate_own_backend()

    call_with_retry(unit)
    assert len(runs) == 2
    assert list(Tenant.objects.filter(slug__startswith="retry-").values_list("slug", flat=True)) == ["retry-1"]


@pytest.mark.django_db(transaction=True)
def test_connection_that_dies_twice_is_503_not_applied():
    def unit() -> None:
        with transaction.atomic():
            Tenant.objects.create(slug="never", name="Never")
            _terminate_own_backend()

    with pytest.raises(DatabaseUnavailable) as raised:
        call_with_retry(unit)
    assert raised.value.status == 503 and raised.value.details == {"outcome": "not_applied"}
    assert raised.value.headers["Retry-After"] == "2"
    assert not Tenant.objects.filter(slug="never").exists()


@pytest.mark.django_db(transaction=True)
def test_write_outside_a_transaction_that_loses_its_connection_is_not_run_again():
    runs = []

    def unit() -> None:
        runs.append(1)
        with connection.cursor() as cursor:  # autocommit: may have committed by itself
            cursor.execute(
                "INSERT INTO tenants_tenant (id, slug, name, active, created_at) "
                "SELECT gen_random_uuid(), 'auto', 'Auto', true, now() FROM pg_terminate_backend(pg_backend_pid())"
            )

    with pytest.raises(DatabaseUnavailable) as raised:
        call_with_retry(unit)
    assert len(runs) == 1 and raised.value.details == {"outcome": "unknown"}
