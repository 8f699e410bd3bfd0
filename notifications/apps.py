from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from events.edge.channels import register_kind
        from events.recording import subscribe
        from notifications import handlers
        from notifications.streams import NotificationStream, notification_frames, user_of_spec

        subscribe(handlers.HANDLERS)
        # The notification stream can be held by the stream edge: one channel per user.
        register_kind(NotificationStream.kind, build=user_of_spec, frame=notification_frames, private=True)
