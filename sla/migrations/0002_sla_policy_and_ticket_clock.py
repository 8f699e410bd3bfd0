import datetime
import django.db.models.deletion
from django.db import migrations, models


MOVED = ("slapolicy", "ticketsla")


def move_content_types(apps, schema_editor, source="ticketing", target="sla"):
    content_types = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model in MOVED:
        # A row for the new label exists already if post_migrate ran in between (a fresh
        # database that migrated sla to 0001 only, then here): the old row wins, it is
        # the one permissions and admin history point at.
        content_types.objects.using(db).filter(app_label=target, model=model).delete()
        content_types.objects.using(db).filter(app_label=source, model=model).update(app_label=target)


def move_content_types_back(apps, schema_editor):
    move_content_types(apps, schema_editor, source="sla", target="ticketing")


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('sla', '0001_initial'),
        ('tenants', '0004_tenant_tier'),
        ('ticketing', '0010_move_sla_to_sla_app'),
    ]

    # The SLA policies and ticket clocks, moved here from the ticketing app (ticketing
    # 0010): their tables exist already, under the names they keep (db_table); the rows of
    # django_content_type follow, so admin permissions and history stay theirs.
    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='SlaPolicy',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('priority', models.CharField(choices=[('low', 'Low'), ('medium', 'Medium'), ('high', 'High'), ('urgent', 'Urgent')], max_length=10)),
                        ('response_minutes', models.PositiveIntegerField(help_text='Time to the first response.')),
                        ('resolution_minutes', models.PositiveIntegerField(help_text='Time to resolution.')),
                        ('warning_percent', models.PositiveSmallIntegerField(default=80, help_text='Warn when this share (1-99 %) of the time to a target has passed.')),
                        ('calendar', models.ForeignKey(blank=True, help_text='Business hours the targets count in; none: 24x7.', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='policies', to='sla.calendar')),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='sla_policies', to='tenants.tenant')),
                    ],
                    options={
                        'verbose_name': 'SLA policy',
                        'verbose_name_plural': 'SLA policies',
                        'db_table': 'ticketing_slapolicy',
                        'ordering': ['tenant', 'priority'],
                        'constraints': [models.UniqueConstraint(fields=('tenant', 'priority'), name='sla_policy_unique_per_priority'), models.CheckConstraint(condition=models.Q(('warning_percent__gte', 1), ('warning_percent__lte', 99)), name='sla_warning_percent_range')],
                    },
                ),
                migrations.CreateModel(
                    name='TicketSla',
                    fields=[
                        ('ticket', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='sla', serialize=False, to='ticketing.ticket')),
                        ('response_due', models.DateTimeField()),
                        ('response_warn_at', models.DateTimeField()),
                        ('responded_at', models.DateTimeField(blank=True, null=True)),
                        ('response_warned_at', models.DateTimeField(blank=True, null=True)),
                        ('response_breached_at', models.DateTimeField(blank=True, null=True)),
                        ('resolution_due', models.DateTimeField()),
                        ('resolution_warn_at', models.DateTimeField()),
                        ('resolved_at', models.DateTimeField(blank=True, null=True)),
                        ('resolution_warned_at', models.DateTimeField(blank=True, null=True)),
                        ('resolution_breached_at', models.DateTimeField(blank=True, null=True)),
                        ('paused_at', models.DateTimeField(blank=True, null=True)),
                        ('paused_for', models.DurationField(default=datetime.timedelta(0))),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenants.tenant')),
                    ],
                    options={
                        'verbose_name': 'ticket SLA',
                        'db_table': 'ticketing_ticketsla',
                        'indexes': [models.Index(condition=models.Q(('responded_at__isnull', True), ('response_warned_at__isnull', True)), fields=['response_warn_at'], name='sla_response_warn'), models.Index(condition=models.Q(('responded_at__isnull', True), ('response_breached_at__isnull', True)), fields=['response_due'], name='sla_response_due'), models.Index(condition=models.Q(('resolution_warned_at__isnull', True), ('resolved_at__isnull', True)), fields=['resolution_warn_at'], name='sla_resolution_warn'), models.Index(condition=models.Q(('resolution_breached_at__isnull', True), ('resolved_at__isnull', True)), fields=['resolution_due'], name='sla_resolution_due')],
                    },
                ),
            ],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
