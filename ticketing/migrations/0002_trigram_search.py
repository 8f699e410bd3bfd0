"""Trigram indexes for `search` and LIKE on PostgreSQL (no-op elsewhere).

Django's icontains on PostgreSQL compares UPPER("col"::text), so the indexes are on that
exact expression."""

from django.db import migrations

SEARCH_COLUMNS = ("subject", "description", "number")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in SEARCH_COLUMNS:
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS ticket_{column}_trgm ON ticketing_ticket '
            f'USING gin (UPPER("{column}"::text) gin_trgm_ops)'
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in SEARCH_COLUMNS:
        schema_editor.execute(f"DROP INDEX IF EXISTS ticket_{column}_trgm")


class Migration(migrations.Migration):
    dependencies = [("ticketing", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
