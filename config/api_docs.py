"""The API's documentation page (Swagger UI over the OpenAPI schema)."""

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views import View
from drf_spectacular.views import SpectacularSwaggerView


# Apart from config.openapi, which DRF imports as its schema class while
# drf_spectacular.views is still being imported.
class ApiDocsView(SpectacularSwaggerView):
    """The Swagger UI page. `OPTIONS` gets Django's plain answer (200, `Allow`, no body):
    DRF's metadata answer was rendered by the page's HTML template renderer, which has
    no template for it (a 500, with a traceback in the log, for anyone who asked)."""

    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return View.options(self, request, *args, **kwargs)
