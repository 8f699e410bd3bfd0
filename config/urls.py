from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from events.views import SystemEventsView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]),
        name="api-docs",
    ),
    # Before ticketing.urls, whose `ticket/<ticket_id>` would match `ticket/notifications`.
    path("api/v2/ticketing/", include("notifications.urls")),
    path("api/v2/ticketing/", include("ticketing.urls")),
    path("v2/system/events", SystemEventsView.as_view(), name="system-events"),
    path("api/v2/system/events", SystemEventsView.as_view(), name="api-system-events"),
]

if settings.DEBUG:
    urlpatterns += staticfiles_urlpatterns()
