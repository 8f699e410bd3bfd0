from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core.metrics import register_database_collector
        from webhooks.metrics import WebhookCollector

        register_database_collector(WebhookCollector())
