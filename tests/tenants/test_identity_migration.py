"""Migration tenants.0003: people recorded before a person was (tenant, realm, sub) keep
their records: each gets the tenant's oldest realm, so that realm's tokens still find it."""

import uuid

import pytest

from tests.migrating import migrate, migrate_to_latest

BEFORE = [("tenants", "0002_api_keys")]
AFTER = [("tenants", "0003_user_realm_identity_api_key_expiry")]


@pytest.mark.django_db(transaction=True)
def test_existing_users_get_their_tenants_oldest_realm():
    try:
        old = migrate(BEFORE)
        Tenant, Realm, User = (old.get_model("tenants", m) for m in ("Tenant", "Realm", "TenantUser"))
        single = Tenant.objects.create(id=uuid.uuid4(), name="One", slug="one")
        several = Tenant.objects.create(id=uuid.uuid4(), name="Two", slug="two")
        none = Tenant.objects.create(id=uuid.uuid4(), name="Zero", slug="zero")
        only = Realm.objects.create(tenant=single, name="only", secret="s" * 40)
        first = Realm.objects.create(tenant=several, name="first", secret="s" * 40)
        Realm.objects.create(tenant=several, name="second", secret="s" * 40)
        for tenant in (single, several, none):
            for name in ("alice", "bob"):
                User.objects.create(id=uuid.uuid4(), tenant=tenant, subject=f"sub-{name}", username=name)

        new = migrate(AFTER)
        User = new.get_model("tenants", "TenantUser")
        realms = {(u.tenant.slug, u.username): u.realm_id for u in User.objects.select_related("tenant")}
        assert realms == {
            ("one", "alice"): only.pk,
            ("one", "bob"): only.pk,
            ("two", "alice"): first.pk,
            ("two", "bob"): first.pk,
            ("zero", "alice"): None,
            ("zero", "bob"): None,
        }
    finally:
        migrate_to_latest()
