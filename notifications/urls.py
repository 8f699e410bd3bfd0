"""Included before ticketing.urls: `ticket/<ticket_id>` would otherwise take
`ticket/notifications`."""

from django.urls import path

from notifications import streams, views

urlpatterns = [
    path("ticket/notifications", views.NotificationListView.as_view(), name="notification-list"),
    path("ticket/notification/list", views.NotificationListQueryView.as_view(), name="notification-list-get"),
    path("ticket/notification/count", views.NotificationCountView.as_view(), name="notification-count"),
    path("ticket/notification/read", views.NotificationReadView.as_view(), name="notification-read"),
    path(
        "ticket/notification/<str:notification_id>", views.NotificationDetailView.as_view(), name="notification-detail"
    ),
    path("ticket/sse/notifications", streams.notification_stream, name="notification-stream"),
    path("user/preference", views.PreferenceView.as_view(), name="user-preference"),
]
