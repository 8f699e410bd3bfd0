from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from events.recording import subscribe
        from notifications import handlers

        subscribe(handlers.HANDLERS)
