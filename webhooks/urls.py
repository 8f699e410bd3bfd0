from django.urls import path

from webhooks import views

urlpatterns = [
    path("endpoints", views.EndpointsView.as_view(), name="webhook-endpoints"),
    path("endpoints/<str:endpoint_id>", views.EndpointView.as_view(), name="webhook-endpoint"),
    path(
        "endpoints/<str:endpoint_id>/rotate-secret",
        views.RotateSecretView.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
    path("endpoints/<str:endpoint_id>/deliveries", views.DeliveriesView.as_view(), name="webhook-endpoint-deliveries"),
    path("endpoints/<str:endpoint_id>/resend", views.ResendView.as_view(), name="webhook-endpoint-resend"),
    path("endpoints/<str:endpoint_id>/recover", views.RecoverView.as_view(), name="webhook-endpoint-recover"),
    path("endpoints/<str:endpoint_id>/ping", views.PingView.as_view(), name="webhook-endpoint-ping"),
]
