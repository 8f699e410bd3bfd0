"""An open stream ends when its credential stops holding, as a new request would be
refused: a deactivated tenant or realm, a realm whose signing key changed, a dashboard
session signed out (in another tab) or whose account was deactivated. A session user
whose roles or teams changed gets `ACCESS_CHANGED`, so the page reopens the stream with
what the user may see now. Until then such streams kept sending tickets and
notifications for up to an hour (`SSE_IDLE_TIMEOUT_SECONDS`), only the token's `exp` ended
them.

Through the real server with a real SSE client; the credential is changed in the
database while the stream is open, as an admin's action would."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session

from tenants.models import AllowedOrigin, Realm, Tenant, TenantUser
from tests.builders import World
from tests.sse_client import Frame, SseStream, list_updates_url, open_stream
from tests.tenants.test_policy_matrix import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

# The server checks every SSE_CREDENTIAL_CHECK_SECONDS (1 in the tests) and reads realms
# through its 5-second cache.
ENDS_WITHIN = 10.0


def notifications_url(base: str) -> str:
    return f"{base}/api/v2/ticketing/ticket/sse/notifications"


def opened(stream: SseStream) -> None:
    """Past the stream's opening frames."""
    assert stream.next().event == "connected"
    assert stream.next().event in ("snapshot", "count")


def error_within(stream: SseStream, seconds: float) -> Frame:
    """The stream's next frame other than a heartbeat or its opening, which must be its
    `error`, followed by the end of the stream."""
    frame = stream.next(skip=("heartbeat", "count", "snapshot"), timeout=seconds)
    assert frame.event == "error", frame
    with pytest.raises(StopIteration):
        stream.next(timeout=5)
    return frame


def deactivate_tenant(world: World) -> None:
    Tenant.objects.filter(pk=world.tenant.pk).update(active=False)


def deactivate_realm(world: World) -> None:
    Realm.objects.filter(pk=world.realm.pk).update(active=False)


def rotate_realm_secret(world: World) -> None:
    Realm.objects.filter(pk=world.realm.pk).update(secret=world.realm.secret + "-rotated")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (deactivate_tenant, "TENANT_NOT_FOUND"),
        (deactivate_realm, "REALM_NOT_FOUND"),
        (rotate_realm_secret, "INVALID_TOKEN"),
    ],
    ids=["tenant-deactivated", "realm-deactivated", "realm-key-rotated"],
)
def test_a_token_stream_ends_with_the_code_a_new_request_would_get(server, acme: World, change: Callable, code: str):
    headers = acme.headers("alice")
    with (
        open_stream("POST", list_updates_url(server.url), headers=headers, json_body={"top": 1}) as listing,
        open_stream("GET", notifications_url(server.url), headers=headers) as bell,
    ):
        opened(listing)
        opened(bell)
        change(acme)
        assert error_within(listing, ENDS_WITHIN).data["code"] == code
        assert error_within(bell, ENDS_WITHIN).data["code"] == code


CSRF_TOKEN = "a" * 32  # the list stream is a POST: a session needs the CSRF token


def alice_session(server, acme: World) -> dict[str, str]:
    """The headers of the dashboard's fetch() of a stream, signed in as alice."""
    cookie = session_cookie(server.env["SECRET_KEY"], "alice-login", staff=False, link_to=acme.users["alice"])
    return {"Cookie": f"{cookie}; csrftoken={CSRF_TOKEN}", "X-CSRFToken": CSRF_TOKEN}


def sign_out(account_name: str) -> None:
    """What signing out in another tab does: the session is gone from the store (the
    test's only one)."""
    assert get_user_model().objects.filter(username=account_name).exists()
    Session.objects.all().delete()


def deactivate_account(account_name: str) -> None:
    get_user_model().objects.filter(username=account_name).update(is_active=False)


def change_password(account_name: str) -> None:
    account = get_user_model().objects.get(username=account_name)
    account.set_password("a-new-password")
    account.save()


@pytest.mark.parametrize("change", [sign_out, deactivate_account, change_password])
def test_a_session_stream_ends_when_the_session_does(server, acme: World, change: Callable):
    headers = alice_session(server, acme)
    with (
        open_stream("POST", list_updates_url(server.url), headers=headers, json_body={"top": 1}) as listing,
        open_stream("GET", notifications_url(server.url), headers=headers) as bell,
    ):
        opened(listing)
        opened(bell)
        change("alice-login")
        assert error_within(listing, ENDS_WITHIN).data["code"] == "SESSION_ENDED"
        assert error_within(bell, ENDS_WITHIN).data["code"] == "SESSION_ENDED"


def test_a_session_stream_ends_when_its_users_teams_change(server, acme: World):
    """The team list of an agent who left team operation must stop showing its tickets:
    reopened, the stream serves the user's present teams."""
    headers = alice_session(server, acme)
    with open_stream("POST", list_updates_url(server.url, "agent"), headers=headers, json_body={"top": 1}) as listing:
        opened(listing)
        TenantUser.objects.filter(pk=acme.users["alice"].pk).update(teams=[])
        assert error_within(listing, ENDS_WITHIN).data["code"] == "ACCESS_CHANGED"


def test_a_stream_of_a_page_whose_origin_is_no_longer_allowed_ends(server, acme: World):
    """A page on acme's allowed origin reads the stream (CORS); once the origin is taken
    off the tenant's list, its requests are no longer readable there, and neither is the
    stream's data (the partner websocket closes 4403 alike)."""
    origin = "https://app.acme.example"
    headers = {**acme.headers("alice"), "Origin": origin}
    with open_stream("POST", list_updates_url(server.url), headers=headers, json_body={"top": 1}) as listing:
        opened(listing)
        AllowedOrigin.objects.filter(tenant=acme.tenant, origin=origin).delete()
        assert error_within(listing, ENDS_WITHIN).data["code"] == "ORIGIN_NOT_ALLOWED"


def test_a_stream_whose_credential_holds_stays_open(server, acme: World, globex: World):
    """Another tenant deactivated, this one's streams go on (heartbeats past several
    checks); a page of this server's own origin needs no allowed origin."""
    headers = {**acme.headers("alice"), "Origin": server.url}
    with open_stream("POST", list_updates_url(server.url), headers=headers, json_body={"top": 1}) as listing:
        opened(listing)
        deactivate_tenant(globex)
        for _ in range(int(ENDS_WITHIN) // 2):
            assert listing.next(skip=(), timeout=5).event == "heartbeat"
