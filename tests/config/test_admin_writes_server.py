"""What support staff can write in the admin, through the real server with a staff session
signed in at /admin/login/ as a browser does: every write either goes through the service
that records it (the ticket deletion, an endpoint's change) or is refused (history only
the services write, a tenant moved under its rows); bad input is a form error, never a 500."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlencode

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from events.models import Event
from sla.models import Calendar, SlaPolicy, TicketSla
from tenants.callers import caller_for_user
from tenants.models import AllowedOrigin, ApiKey, Realm, TenantUser
from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.sse_client import open_stream
from ticketing import services
from ticketing.models import Approval, Comment, SavedView, Ticket
from webhooks import services as webhook_services
from webhooks.models import Delivery, DeliveryAttempt, Endpoint, WebhookSettings


@pytest.fixture
def admin_server(transactional_db: None) -> Iterator[ServerProcess]:
    """A server of the test's own: the admin logs each change under its content type,
    which a server process caches by id, and the flush after each test of the shared
    server re-creates the content types with new ids."""
    process = ServerProcess().start()
    yield process
    process.stop()
    wait_until_database_is_quiet()


class FormFields(HTMLParser):
    """The fields the admin's change form would send back as they are."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._select: list | None = None
        self._textarea: list | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields.append((name, a.get("value") or ("on" if a.get("type") == "checkbox" else "")))
        elif tag == "select" and name:
            self._select = [name, None]
        elif tag == "option" and self._select is not None and "selected" in a:
            self._select[1] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = [name, ""]

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select is not None:
            if self._select[1] is not None:
                self.fields.append((self._select[0], self._select[1]))
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self.fields.append((self._textarea[0], self._textarea[1].lstrip("\n")))
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea[1] += data


class StaffBrowser:
    """A browser's session: cookies kept by hand (the server marks them Secure, which an
    HTTP client would not send back over http://127.0.0.1), the CSRF token from the page."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=15, follow_redirects=False)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, data: list[tuple[str, str]] | None = None) -> httpx.Response:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if data is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urlencode(data)
        response = self.http.request(method, path, content=body, headers=headers)
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response

    def form(self, path: str) -> tuple[httpx.Response, list[tuple[str, str]]]:
        response = self.request("GET", path)
        parser = FormFields()
        parser.feed(response.text)
        return response, parser.fields

    def post(self, path: str, fields: list[tuple[str, str]] | dict[str, str]) -> httpx.Response:
        items = list(fields.items()) if isinstance(fields, dict) else list(fields)
        items = [(k, v) for k, v in items if k != "csrfmiddlewaretoken"]
        return self.request("POST", path, [*items, ("csrfmiddlewaretoken", self.cookies["csrftoken"])])

    def change(self, path: str, **overrides: str) -> httpx.Response:
        """Send the change form back with `overrides`, as staff editing a field would."""
        _, fields = self.form(path)
        return self.post(path, [(k, v) for k, v in fields if k not in overrides] + list(overrides.items()))

    def sign_in(self, username: str, password: str) -> None:
        self.request("GET", "/admin/login/")
        response = self.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})
        assert response.status_code == 302, response.text[:500]


def new_ticket(world: World, **data: str) -> Ticket:
    return services.create_ticket(caller=caller_for_user(world.users["admin"]), data={"subject": "Printer", **data})


def new_endpoint(world: World) -> Endpoint:
    endpoint, _ = webhook_services.create_endpoint(
        tenant=world.tenant, url="https://hooks.example.com/in", event_types=[], ordered=False
    )
    return endpoint


def new_delivery(world: World) -> Delivery:
    endpoint = new_endpoint(world)
    ticket = new_ticket(world)
    event = Event.objects.get(ticket_id=ticket.id, type="tickets.ticket.created")
    return webhook_services.resend_event(endpoint=endpoint, event_id=event.id)


# --- ticketing/admin.py --------------------------------------------------------------------


def comment_add_with_body(b: StaffBrowser, acme: World, globex: World) -> None:
    new_ticket(acme)
    response = b.post("/admin/ticketing/comment/add/", {"body": "From the admin"})
    assert response.status_code == 403
    assert not Comment.objects.exists()


def comment_edit(b: StaffBrowser, acme: World, globex: World) -> None:
    ticket = new_ticket(acme)
    comment = services.add_comment(caller=caller_for_user(acme.users["alice"]), ticket=ticket, body="Original")
    response = b.change(f"/admin/ticketing/comment/{comment.pk}/change/", body="Edited silently")
    assert response.status_code == 403
    assert Comment.objects.get(pk=comment.pk).body == "Original"


def comment_delete(b: StaffBrowser, acme: World, globex: World) -> None:
    ticket = new_ticket(acme)
    comment = services.add_comment(caller=caller_for_user(acme.users["alice"]), ticket=ticket, body="Keep me")
    assert b.post(f"/admin/ticketing/comment/{comment.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Comment.objects.filter(pk=comment.pk).exists()


def approval_delete(b: StaffBrowser, acme: World, globex: World) -> None:
    ticket = new_ticket(acme)
    approval = services.request_approval(
        caller=caller_for_user(acme.users["alice"]), ticket=ticket, approver=acme.users["admin"]
    )
    assert b.post(f"/admin/ticketing/approval/{approval.pk}/delete/", {"post": "yes"}).status_code == 403
    assert b.change(f"/admin/ticketing/approval/{approval.pk}/change/").status_code == 403
    assert Approval.objects.filter(pk=approval.pk, state="pending").exists()


def ticket_save(b: StaffBrowser, acme: World, globex: World) -> None:
    ticket = new_ticket(acme)
    before = Ticket.objects.get(pk=ticket.pk)
    assert b.change(f"/admin/ticketing/ticket/{ticket.pk}/change/").status_code == 403
    after = Ticket.objects.get(pk=ticket.pk)
    assert (after.updated_at, after.version) == (before.updated_at, before.version)


def ticket_delete_with_its_history(b: StaffBrowser, acme: World, globex: World) -> None:
    ticket = new_ticket(acme)
    services.add_comment(caller=caller_for_user(acme.users["alice"]), ticket=ticket, body="Gone with it")
    services.request_approval(caller=caller_for_user(acme.users["alice"]), ticket=ticket, approver=acme.users["admin"])
    response = b.post(f"/admin/ticketing/ticket/{ticket.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Ticket.objects.filter(pk=ticket.pk).exists()
    assert Event.objects.get(ticket_id=ticket.pk, type="tickets.ticket.deleted").support


def saved_view_with_unknown_sort_column(b: StaffBrowser, acme: World, globex: World) -> None:
    fields = {
        "tenant": str(acme.tenant.id),
        "owner": str(acme.users["alice"].id),
        "name": "Mine",
        "filter": "{}",
        "sort_order": '[{"column": "nope"}]',
        "list_type": "template",
        "visibility": "private",
        "team": "",
    }
    response = b.post("/admin/ticketing/savedview/add/", fields)
    assert response.status_code == 200
    assert not SavedView.objects.exists()
    fields["sort_order"] = '[{"column": "createdAt", "order": "desc"}]'
    assert b.post("/admin/ticketing/savedview/add/", fields).status_code == 302
    assert SavedView.objects.get().sort_order == [{"column": "createdAt", "order": "DESC"}]


def saved_view_edits_reach_open_counts_streams(b: StaffBrowser, acme: World, globex: World) -> None:
    # They reached them only at the streams' periodic re-read (300 s).
    view = SavedView.objects.create(
        tenant=acme.tenant, owner=acme.users["admin"], name="Open", filter={}, visibility="tenant"
    )
    new_ticket(acme)
    counts_url = f"{b.http.base_url}/api/v2/ticketing/views/counts/stream"
    with open_stream("GET", counts_url, headers=acme.headers("alice")) as stream:
        assert stream.next().event == "connected"
        assert [(v["name"], v["count"]) for v in stream.next().data["views"]] == [("Open", 1)]
        assert b.change(f"/admin/ticketing/savedview/{view.pk}/change/", name="Renamed").status_code == 302
        frame = stream.next(skip=("heartbeat",), timeout=5)
        assert frame.event == "snapshot" and [v["name"] for v in frame.data["views"]] == ["Renamed"], frame
        assert b.post(f"/admin/ticketing/savedview/{view.pk}/delete/", {"post": "yes"}).status_code == 302
        frame = stream.next(skip=("heartbeat",), timeout=5)
        assert frame.event == "snapshot" and frame.data["views"] == [], frame


# --- sla/admin.py --------------------------------------------------------------------------


def ticket_clock_delete(b: StaffBrowser, acme: World, globex: World) -> None:
    SlaPolicy.objects.create(tenant=acme.tenant, priority="medium", response_minutes=60, resolution_minutes=600)
    ticket = new_ticket(acme, priority="medium")
    assert TicketSla.objects.filter(ticket=ticket).exists()
    assert b.post(f"/admin/sla/ticketsla/{ticket.pk}/delete/", {"post": "yes"}).status_code == 403
    assert TicketSla.objects.filter(ticket=ticket).exists()


def policy_with_another_tenants_calendar(b: StaffBrowser, acme: World, globex: World) -> None:
    theirs = Calendar.objects.create(tenant=globex.tenant, name="Globex", time_zone="UTC", working_hours={})
    fields = {
        "tenant": str(acme.tenant.id),
        "priority": "high",
        "response_minutes": "60",
        "resolution_minutes": "600",
        "warning_percent": "80",
        "calendar": str(theirs.pk),
    }
    assert b.post("/admin/sla/slapolicy/add/", fields).status_code == 200
    assert b.post("/admin/sla/slapolicy/add/", {**fields, "calendar": "", "warning_percent": "100"}).status_code == 200
    assert not SlaPolicy.objects.exists()


def calendar_moved_to_another_tenant(b: StaffBrowser, acme: World, globex: World) -> None:
    hours = {"mon": [["09:00", "17:00"]]}
    calendar = Calendar.objects.create(tenant=acme.tenant, name="Office", time_zone="UTC", working_hours=hours)
    response = b.change(f"/admin/sla/calendar/{calendar.pk}/change/", tenant=str(globex.tenant.id), name="Desk")
    assert response.status_code == 302
    calendar.refresh_from_db()
    assert (calendar.name, calendar.tenant_id) == ("Desk", acme.tenant.id)


# --- webhooks/admin.py ---------------------------------------------------------------------


def endpoint_add_with_bad_url_or_types(b: StaffBrowser, acme: World, globex: World) -> None:
    fields = {"tenant": str(acme.tenant.id), "url": "ftp://hooks.example.com/in", "event_types": "[]", "enabled": "on"}
    assert b.post("/admin/webhooks/endpoint/add/", fields).status_code == 200
    fields.update(url="https://hooks.example.com/in", event_types='["tickets.nothing_like_it"]')
    assert b.post("/admin/webhooks/endpoint/add/", fields).status_code == 200
    assert not Endpoint.objects.exists()


def endpoint_change_to_private_url(b: StaffBrowser, acme: World, globex: World) -> None:
    endpoint = new_endpoint(acme)
    path = f"/admin/webhooks/endpoint/{endpoint.pk}/change/"
    assert b.change(path, url="https://10.0.0.1/in").status_code == 200
    assert b.change(path, event_types='["nope"]').status_code == 200
    assert Endpoint.objects.get(pk=endpoint.pk).url == "https://hooks.example.com/in"


def endpoint_disabled_through_the_service(b: StaffBrowser, acme: World, globex: World) -> None:
    endpoint = new_endpoint(acme)
    _, fields = b.form(f"/admin/webhooks/endpoint/{endpoint.pk}/change/")
    response = b.post(f"/admin/webhooks/endpoint/{endpoint.pk}/change/", [f for f in fields if f[0] != "enabled"])
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert not endpoint.enabled
    assert endpoint.disabled_reason == Endpoint.DisabledReason.MANUAL
    assert endpoint.disabled_at is not None


def endpoint_moved_to_another_tenant(b: StaffBrowser, acme: World, globex: World) -> None:
    endpoint = new_endpoint(acme)
    response = b.change(f"/admin/webhooks/endpoint/{endpoint.pk}/change/", tenant=str(globex.tenant.id))
    assert response.status_code == 302
    assert Endpoint.objects.get(pk=endpoint.pk).tenant_id == acme.tenant.id


def endpoint_delete_with_its_deliveries(b: StaffBrowser, acme: World, globex: World) -> None:
    delivery = new_delivery(acme)
    response = b.post(f"/admin/webhooks/endpoint/{delivery.endpoint_id}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Endpoint.objects.exists()


def delivery_add(b: StaffBrowser, acme: World, globex: World) -> None:
    fields = {"state": "pending", "next_attempt_at_0": "2026-01-01", "next_attempt_at_1": "00:00:00"}
    assert b.post("/admin/webhooks/delivery/add/", fields).status_code == 403
    assert not Delivery.objects.exists()


def delivery_delete_or_edit(b: StaffBrowser, acme: World, globex: World) -> None:
    delivery = new_delivery(acme)
    assert b.post(f"/admin/webhooks/delivery/{delivery.pk}/delete/", {"post": "yes"}).status_code == 403
    assert b.change(f"/admin/webhooks/delivery/{delivery.pk}/change/", state="delivered").status_code == 403
    assert Delivery.objects.get(pk=delivery.pk).state == Delivery.State.PENDING


def delivery_resent(b: StaffBrowser, acme: World, globex: World) -> None:
    delivery = new_delivery(acme)
    Delivery.objects.filter(pk=delivery.pk).update(
        state=Delivery.State.FAILED, next_attempt_at=timezone.now() + timedelta(days=1)
    )
    response = b.post("/admin/webhooks/delivery/", {"action": "resend", "_selected_action": str(delivery.pk)})
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.PENDING
    assert delivery.next_attempt_at <= timezone.now()


def attempt_delete(b: StaffBrowser, acme: World, globex: World) -> None:
    attempt = DeliveryAttempt.objects.create(
        endpoint=new_endpoint(acme),
        event_type="ping",
        webhook_id="msg_1",
        started_at=timezone.now(),
        outcome=DeliveryAttempt.Outcome.SUCCESS,
    )
    assert b.post(f"/admin/webhooks/deliveryattempt/{attempt.pk}/delete/", {"post": "yes"}).status_code == 403
    assert DeliveryAttempt.objects.filter(pk=attempt.pk).exists()


def webhook_settings_moved_to_another_tenant(b: StaffBrowser, acme: World, globex: World) -> None:
    settings = WebhookSettings.objects.create(tenant=acme.tenant, allow_http=True)
    response = b.change(f"/admin/webhooks/webhooksettings/{settings.pk}/change/", tenant=str(globex.tenant.id))
    assert response.status_code == 302
    assert WebhookSettings.objects.get(pk=settings.pk).tenant_id == acme.tenant.id


def webhook_http_turned_off_under_http_endpoints(b: StaffBrowser, acme: World, globex: World) -> None:
    # The endpoints went on receiving in plain text: the URL is checked when saved only.
    settings = WebhookSettings.objects.create(tenant=acme.tenant, allow_http=True)
    endpoint, _ = webhook_services.create_endpoint(
        tenant=acme.tenant, url="http://hooks.example.com/h", event_types=[], ordered=False
    )
    page = f"/admin/webhooks/webhooksettings/{settings.pk}"
    refused = b.post(f"{page}/change/", {"tenant": str(acme.tenant.id)})  # the box unticked
    assert refused.status_code == 200 and "http://hooks.example.com/h" in refused.text
    assert WebhookSettings.objects.get(pk=settings.pk).allow_http
    assert b.request("GET", f"{page}/delete/").status_code == 403
    Endpoint.objects.filter(pk=endpoint.pk).update(url="https://hooks.example.com/h")
    assert b.post(f"{page}/change/", {"tenant": str(acme.tenant.id)}).status_code == 302
    assert not WebhookSettings.objects.get(pk=settings.pk).allow_http


# --- tenants/admin.py ----------------------------------------------------------------------


def realm_moved_to_another_tenant(b: StaffBrowser, acme: World, globex: World) -> None:
    realm = Realm.objects.create(tenant=acme.tenant, name="partners", secret="s" * 32)
    TenantUser.objects.create(tenant=acme.tenant, realm=realm, subject="p-1", username="partner-1")
    response = b.change(f"/admin/tenants/realm/{realm.pk}/change/", tenant=str(globex.tenant.id), issuer="idp")
    assert response.status_code == 302
    realm.refresh_from_db()
    assert (realm.issuer, realm.tenant_id) == ("idp", acme.tenant.id)


def origin_moved_to_another_tenant(b: StaffBrowser, acme: World, globex: World) -> None:
    origin = AllowedOrigin.objects.get(tenant=acme.tenant)
    response = b.change(f"/admin/tenants/allowedorigin/{origin.pk}/change/", tenant=str(globex.tenant.id))
    assert response.status_code == 302
    assert AllowedOrigin.objects.get(pk=origin.pk).tenant_id == acme.tenant.id


def local_user_moved_to_another_tenant(b: StaffBrowser, acme: World, globex: World) -> None:
    local = TenantUser.objects.create(tenant=acme.tenant, subject="local-1", username="front-desk", roles=["agent"])
    response = b.change(f"/admin/tenants/tenantuser/{local.pk}/change/", tenant=str(globex.tenant.id))
    assert response.status_code == 302
    assert TenantUser.objects.get(pk=local.pk).tenant_id == acme.tenant.id


def user_delete(b: StaffBrowser, acme: World, globex: World) -> None:
    carol = acme.users["carol"]
    ticket = new_ticket(acme)
    Ticket.objects.filter(pk=ticket.pk).update(assignee=carol)
    assert b.post(f"/admin/tenants/tenantuser/{carol.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Ticket.objects.get(pk=ticket.pk).assignee_id == carol.pk


def local_users_added(b: StaffBrowser, acme: World, globex: World) -> None:
    for username in ("desk-1", "desk-2"):
        fields = {"tenant": str(acme.tenant.id), "username": username, "roles": '["agent"]', "teams": "[]"}
        assert b.post("/admin/tenants/tenantuser/add/", fields).status_code == 302
    fields.update(username="desk-3", roles='"agent"')
    assert b.post("/admin/tenants/tenantuser/add/", fields).status_code == 200
    assert TenantUser.objects.filter(username__startswith="desk-").count() == 2


def api_key_with_scopes_not_a_list(b: StaffBrowser, acme: World, globex: World) -> None:
    for scopes in ('"events:read webhooks"', '["everything"]', "5"):
        fields = {"tenant": str(acme.tenant.id), "name": "CRM", "scopes": scopes}
        assert b.post("/admin/tenants/apikey/add/", fields).status_code == 200
    assert not ApiKey.objects.exists()


def api_key_created_is_shown_once_and_never_in_a_cookie(b: StaffBrowser, acme: World, globex: World) -> None:
    # The success message holds the whole key: kept in the session (server side), not in a
    # signed but readable `messages` cookie.
    fields = {"tenant": str(acme.tenant.id), "name": "CRM", "scopes": '["events:read"]'}
    created = b.post("/admin/tenants/apikey/add/", fields)
    assert created.status_code == 302, created.text[:500]
    shown = b.request("GET", created.headers["location"])
    key = ApiKey.objects.get()
    full = shown.text.split("it will not be shown again: ", 1)[1].split("<", 1)[0].strip()
    assert full.startswith(f"tk_{key.prefix}_"), full
    for response in (created, shown):
        set_cookies = response.headers.get_list("set-cookie")
        assert not any(cookie.startswith("messages=") for cookie in set_cookies), set_cookies
        assert not any(full in cookie for cookie in set_cookies), set_cookies
    assert "messages" not in b.cookies
    assert "it will not be shown again" not in b.request("GET", created.headers["location"]).text


CASES: list[Callable[[StaffBrowser, World, World], None]] = [
    comment_add_with_body,
    comment_edit,
    comment_delete,
    approval_delete,
    ticket_save,
    ticket_delete_with_its_history,
    saved_view_with_unknown_sort_column,
    saved_view_edits_reach_open_counts_streams,
    ticket_clock_delete,
    policy_with_another_tenants_calendar,
    calendar_moved_to_another_tenant,
    endpoint_add_with_bad_url_or_types,
    endpoint_change_to_private_url,
    endpoint_disabled_through_the_service,
    endpoint_moved_to_another_tenant,
    endpoint_delete_with_its_deliveries,
    delivery_add,
    delivery_delete_or_edit,
    delivery_resent,
    attempt_delete,
    webhook_settings_moved_to_another_tenant,
    webhook_http_turned_off_under_http_endpoints,
    realm_moved_to_another_tenant,
    origin_moved_to_another_tenant,
    local_user_moved_to_another_tenant,
    user_delete,
    local_users_added,
    api_key_with_scopes_not_a_list,
    api_key_created_is_shown_once_and_never_in_a_cookie,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_admin_write_goes_through_its_service_or_is_refused(
    case: Callable[[StaffBrowser, World, World], None], admin_server: ServerProcess, acme: World, globex: World
) -> None:
    password = uuid.uuid4().hex
    get_user_model().objects.create_superuser("support", "support@example.com", password)
    browser = StaffBrowser(admin_server.url)
    browser.sign_in("support", password)
    case(browser, acme, globex)
