from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from config.api_docs import ApiDocsView
from core.health import healthz, readyz
from core.metrics import metrics_view
from events.edge.handoff import edge_link
from events.views import SystemEventsView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard:tickets", permanent=False)),
    # Probes for orchestrators (core.health): no credentials, outside the API's schema.
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    # Prometheus (core.metrics): loopback or `Bearer $METRICS_TOKEN`; outside the API's schema.
    path("metrics", metrics_view, name="metrics"),
    # Pushpin's call-back for a stream it holds (events.edge; only with SSE_EDGE=pushpin):
    # between Pushpin and the workers, outside the API and its schema.
    path("edge/link/<str:token>", edge_link, name="edge-link"),
    path("dashboard/", include("ticketing.dashboard", namespace="dashboard")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    path(
        "api/docs/",
        ApiDocsView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]),
        name="api-docs",
    ),
    # Before ticketing.urls, whose `ticket/<ticket_id>` would match `ticket/notifications`.
    path("api/v2/ticketing/", include("notifications.urls")),
    path("api/v2/ticketing/", include("sla.urls")),
    path("api/v2/ticketing/", include("ticketing.urls")),
    path("api/v2/webhooks/", include("webhooks.urls")),
    path("v2/system/events", SystemEventsView.as_view(), name="system-events"),
    path("api/v2/system/events", SystemEventsView.as_view(), name="api-system-events"),
]

if settings.DEBUG:
    urlpatterns += staticfiles_urlpatterns()
else:
    # The dashboard's few JS/CSS files and the admin's are served by the app itself (the ASGI
    # server serves no files, and the service has no front-end build or CDN); put a static file
    # server in front (collectstatic to STATIC_ROOT) when the traffic calls for it.
    urlpatterns += [
        re_path(rf"^{settings.STATIC_URL.lstrip('/')}(?P<path>.*)$", serve_static, {"insecure": True}),
    ]

# Failures outside a view (URL resolution, middleware): the envelope on API paths, Django's
# pages elsewhere (core.errors).
handler400 = "core.errors.bad_request"
handler403 = "core.errors.permission_denied"
handler404 = "core.errors.page_not_found"
handler500 = "core.errors.server_error"
