from django.apps import AppConfig


class SlaConfig(AppConfig):
    name = "sla"
    verbose_name = "SLA"

    def ready(self) -> None:
        from events.recording import subscribe
        from sla import handlers

        subscribe(handlers.HANDLERS)
