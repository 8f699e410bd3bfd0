"""`GET /events/`: the stream (channel `bench`); `POST /publish`: send the body to it."""

import django_eventstream
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django_eventstream import send_event


@csrf_exempt
def publish(request: HttpRequest) -> HttpResponse:
    # The body is already JSON: sent as it is, as the other peers send theirs.
    send_event("bench", "message", request.body.decode(), json_encode=False)
    return HttpResponse(status=204)


urlpatterns = [
    path("events/", include(django_eventstream.urls), {"channels": ["bench"]}),
    path("publish", publish),
]
