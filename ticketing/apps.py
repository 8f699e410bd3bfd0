from django.apps import AppConfig


class TicketingConfig(AppConfig):
    name = "ticketing"
    verbose_name = "Ticketing"

    def ready(self) -> None:
        from ticketing import signals  # noqa: F401  (records ticket changes in the event log)
