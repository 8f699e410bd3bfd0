from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('ticketing', '0009_saved_views'),
    ]

    # The SLA policies and clocks move to the sla app (sla 0002 takes them over): only
    # Django's record of the models goes, their tables stay as they are.
    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name='ticketsla',
                    name='tenant',
                ),
                migrations.RemoveField(
                    model_name='ticketsla',
                    name='ticket',
                ),
                migrations.DeleteModel(
                    name='SlaPolicy',
                ),
                migrations.DeleteModel(
                    name='TicketSla',
                ),
            ],
        ),
    ]
