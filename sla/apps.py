from django.apps import AppConfig


class SlaConfig(AppConfig):
    name = "sla"
    verbose_name = "SLA"

    def ready(self) -> None:
        from events.recording import subscribe
        from sla import handlers

        for handler, types in handlers.HANDLERS.items():
            subscribe(handler, types=types)
