"""A pattern-ops index so `number LIKE 'TKT-2026-0001%'` (search by ticket number) is a
btree range scan on PostgreSQL whatever the database collation (no-op elsewhere)."""

from django.db import migrations


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS ticket_number_prefix ON ticketing_ticket (tenant_id, number varchar_pattern_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS ticket_number_prefix")


class Migration(migrations.Migration):
    dependencies = [("ticketing", "0004_ticket_products")]
    operations = [migrations.RunPython(create, drop)]
