"""A person is (tenant, realm, sub), not (tenant, sub); partner API keys can expire.

Existing users are given a realm so their tokens keep finding them: each tenant's users
go to the tenant's oldest realm (its only one, in every deployment made by `load_demo`,
`quickstart` or the admin's tenant form). Before this migration every realm of a tenant
shared one record per `sub`, so nothing tells which realm a row came from; the oldest
realm is the one the record most likely started in, and a person of another realm gets
a fresh record at their next request instead of sharing one. Users of a tenant that has
no realm stay local (session-only)."""

import django.db.models.deletion
from django.db import migrations, models


def assign_realms(apps, schema_editor):
    Realm = apps.get_model("tenants", "Realm")
    TenantUser = apps.get_model("tenants", "TenantUser")
    tenant_ids = TenantUser.objects.filter(realm__isnull=True).values_list("tenant_id", flat=True).distinct()
    for tenant_id in list(tenant_ids):
        realm = Realm.objects.filter(tenant_id=tenant_id).order_by("pk").first()
        if realm is not None:
            TenantUser.objects.filter(tenant_id=tenant_id, realm__isnull=True).update(realm=realm)


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0002_api_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenantuser",
            name="realm",
            field=models.ForeignKey(
                blank=True,
                help_text="The realm whose tokens name this person; empty for a local (session-only) user.",
                null=True,
                on_delete=django.db.models.deletion.RESTRICT,
                related_name="users",
                to="tenants.realm",
            ),
        ),
        migrations.RemoveConstraint(
            model_name="tenantuser",
            name="user_subject_unique_per_tenant",
        ),
        migrations.AlterField(
            model_name="tenantuser",
            name="subject",
            field=models.CharField(help_text="The token's `sub`, unique within the realm.", max_length=255),
        ),
        migrations.AddConstraint(
            model_name="tenantuser",
            constraint=models.UniqueConstraint(
                fields=("tenant", "realm", "subject"), name="user_subject_unique_per_realm"
            ),
        ),
        migrations.AddConstraint(
            model_name="tenantuser",
            constraint=models.UniqueConstraint(
                condition=models.Q(("realm__isnull", True)),
                fields=("tenant", "subject"),
                name="local_user_subject_unique_per_tenant",
            ),
        ),
        migrations.AddField(
            model_name="apikey",
            name="expires_at",
            field=models.DateTimeField(
                blank=True, help_text="The key is refused from this moment on; empty never expires.", null=True
            ),
        ),
        # Last: on PostgreSQL, altering a table after updating rows with a deferred
        # foreign key in the same transaction fails ("pending trigger events").
        migrations.RunPython(assign_realms, migrations.RunPython.noop),
    ]
