"""Who a token names, through the real server: a person is (tenant, realm, sub), and a
token's claims are checked before anything is written."""

import base64
import json
import time
from datetime import timedelta
from io import StringIO

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import CommandError, call_command
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from notifications.models import Notification
from tenants.callers import caller_for_user
from tenants.models import ApiKey, Realm, TenantUser
from tenants.services import create_api_key, subject_for
from tests.builders import World, base_claims, signed
from tests.core.test_write_slots import SlowKeys
from tests.envelopes import assert_envelope
from tests.waiting import wait_for
from ticketing import services
from ticketing.models import Ticket

EVENTS = "/v2/system/events"
COUNT = "/api/v2/ticketing/ticket/notification/count"
TICKETS = "/api/v2/ticketing/ticket"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def second_realm(world: World, name: str = "partners") -> Realm:
    return Realm.objects.create(
        tenant=world.tenant,
        name=name,
        secret=f"{name}-secret-0123456789-abcdefghijklmnop",
        issuer=f"https://id.example/realms/{name}",
    )


def realm_headers(world: World, realm: Realm, claims: dict) -> dict[str, str]:
    token = signed(claims, realm.secret)
    return {"Authorization": f"Bearer {token}", "x-tenantid": str(world.tenant.id), "realmname": realm.name}


def test_same_sub_from_another_realm_is_another_person(server, acme: World):
    """A realm-B token carrying bob's `sub` must not read bob's notifications or tickets,
    nor rewrite bob's stored roles and teams."""
    bob = acme.users["bob"]
    ticket = services.create_ticket(caller=caller_for_user(bob), data={"subject": "Bob's laptop"})
    services.add_comment(caller=caller_for_user(acme.users["alice"]), ticket=ticket, body="On it")
    assert Notification.objects.filter(recipient=bob).exists()
    bob_count = httpx.get(server.url + COUNT, headers=acme.headers("bob"), timeout=10).json()["data"]
    assert bob_count["unread"] >= 1

    other = second_realm(acme)
    impostor = realm_headers(
        acme,
        other,
        base_claims(acme, "bob", iss=other.issuer, realm_access={"roles": ["agent", "admin"]}, teams=["intruders"]),
    )
    count = httpx.get(server.url + COUNT, headers=impostor, timeout=10)
    assert count.status_code == 200, count.text
    assert count.json()["data"]["unread"] == 0
    listed = httpx.post(server.url + "/api/v2/ticketing/ticket/notifications", headers=impostor, json={}, timeout=10)
    assert listed.json()["data"]["notifications"] == []

    bob.refresh_from_db()
    assert bob.roles == ["user"] and bob.teams == [] and bob.realm_id == acme.realm.pk
    stranger = TenantUser.objects.get(tenant=acme.tenant, realm=other, subject=bob.subject)
    assert stranger.pk != bob.pk and stranger.roles == ["admin", "agent"]
    # Bob's own realm still finds bob, with his notifications.
    again = httpx.get(server.url + COUNT, headers=acme.headers("bob"), timeout=10).json()["data"]
    assert again["unread"] == bob_count["unread"]


def test_end_user_of_another_realm_cannot_open_the_ticket_of_the_same_sub(server, acme: World):
    bob = acme.users["bob"]
    ticket = services.create_ticket(caller=caller_for_user(bob), data={"subject": "Private"})
    other = second_realm(acme)
    impostor = realm_headers(acme, other, base_claims(acme, "bob", iss=other.issuer, realm_access={"roles": ["user"]}))
    response = httpx.get(f"{server.url}{TICKETS}/{ticket.id}", headers=impostor, timeout=10)
    assert response.status_code == 404, response.text
    mine = httpx.get(f"{server.url}{TICKETS}/{ticket.id}", headers=acme.headers("bob"), timeout=10)
    assert mine.status_code == 200


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


BAD_CLAIMS = {
    "exp_far_beyond_year_9999": {"exp": 1e30},
    "exp_infinite": {"exp": float("inf")},
    "sub_over_255": {"sub": "s" * 256},
    "sub_with_nul": {"sub": "kc-\x00-42"},
    "sub_with_control_character": {"sub": "kc-\x07-42"},
    "sub_with_lone_surrogate": {"sub": "kc-\ud800"},
    "sub_not_a_string": {"sub": 42},
    "username_object": {"preferred_username": {"first": "eve"}},
    "username_with_nul": {"preferred_username": "eve\x00"},
    "username_over_255": {"preferred_username": "e" * 256},
    "name_list": {"name": ["Eve", "Intruder"]},
    "name_over_255": {"name": "E" * 300},
    "email_number": {"email": 12},
    "email_over_254": {"email": "e" * 250 + "@x.example"},
    "team_with_nul": {"teams": ["oper\x00ation"]},
    "role_with_nul": {"realm_access": {"roles": ["agent", "ag\x00ent"]}},
}


@pytest.mark.parametrize("overrides", BAD_CLAIMS.values(), ids=BAD_CLAIMS.keys())
def test_validly_signed_token_with_unusable_claims_is_401_and_writes_nothing(server, acme: World, overrides):
    claims = base_claims(acme, "eve", **{"sub": "kc-eve-new", **overrides})
    token = signed(claims, acme.realm.secret)
    users_before = TenantUser.objects.count()
    for path, method in ((TICKETS, "POST"), (COUNT, "GET"), (EVENTS, "GET")):
        response = httpx.request(
            method, server.url + path, headers=acme.raw_headers(token), json={"subject": "x"}, timeout=10
        )
        assert_envelope(response, 401, "INVALID_TOKEN")
    assert TenantUser.objects.count() == users_before
    assert not Ticket.objects.exists()


def test_token_with_header_nested_thousands_deep_is_401(server, acme: World):
    header = '{"alg":"HS256","typ":"JWT","x":' + "[" * 3000 + "]" * 3000 + "}"
    payload = json.dumps(base_claims(acme, "alice")).encode()
    token = f"{_b64(header.encode())}.{_b64(payload)}.{_b64(b'signature')}"
    response = httpx.get(server.url + COUNT, headers=acme.raw_headers(token), timeout=10)
    assert_envelope(response, 401, "INVALID_TOKEN")


@pytest.mark.parametrize(
    ("claims", "status", "code"),
    [
        # An identity provider whose clock runs a few seconds ahead of this server's.
        ({"iat": 5}, 200, None),
        ({"nbf": 5, "iat": 5}, 200, None),
        ({"iat": 3600}, 401, "INVALID_TOKEN"),
        ({"nbf": 3600}, 401, "INVALID_TOKEN"),
        # The skew is not a grace period after `exp` (JWT_LEEWAY_SECONDS, 0).
        ({"exp": -5}, 401, "TOKEN_EXPIRED"),
    ],
    ids=["iat-5s-ahead", "nbf-5s-ahead", "iat-1h-ahead", "nbf-1h-ahead", "exp-5s-past"],
)
def test_a_token_from_a_clock_a_little_ahead_is_accepted(server, acme: World, claims: dict, status: int, code):
    """`iat` and `nbf` may be JWT_CLOCK_SKEW_SECONDS (60) ahead of the server's clock; a
    token used the moment it was issued by a provider one second ahead was 401 INVALID_TOKEN."""
    now = int(time.time())
    token = signed(base_claims(acme, **{name: now + offset for name, offset in claims.items()}), acme.realm.secret)
    response = httpx.get(server.url + COUNT, headers=acme.raw_headers(token), timeout=10)
    if code is None:
        assert response.status_code == status, response.text
    else:
        assert_envelope(response, status, code)


UNUSABLE_JWK = {"kty": "EC", "kid": "k1", "crv": "P-256", "x": "AAAA", "y": "BBBB"}


@pytest.mark.parametrize("key", ["", "not a PEM", "jwks"], ids=["empty", "malformed", "jwks-without-usable-key"])
def test_a_token_of_an_rs256_realm_whose_key_is_unusable_is_401(server, acme: World, key: str):
    """An admin's mistake in the realm's key (RS256 with no key and no JWKS URL, or a
    pasted key that is not a PEM), or an identity provider publishing no key this server
    can use, answered every request of the realm with a 500."""
    keys = SlowKeys(UNUSABLE_JWK, delay=0) if key == "jwks" else None
    Realm.objects.create(
        tenant=acme.tenant,
        name="keycloak",
        algorithm=Realm.Algorithm.RS256,
        public_key="" if keys else key,
        jwks_url=keys.url if keys else "",
    )
    token = jwt.encode(base_claims(acme, "bob"), RSA_KEY, algorithm="RS256", headers={"kid": "k1"})
    try:
        assert_refused(server, acme, token)
    finally:
        if keys:
            keys.close()


def assert_refused(server, acme: World, token: str) -> None:
    """Refused as a token the realm cannot verify, on a read and a write, writing nothing."""
    headers = {"Authorization": f"Bearer {token}", "x-tenantid": str(acme.tenant.id), "realmname": "keycloak"}
    assert_envelope(httpx.get(server.url + COUNT, headers=headers, timeout=10), 401, "INVALID_TOKEN")
    created = httpx.post(server.url + TICKETS, headers=headers, json={"subject": "x"}, timeout=10)
    assert_envelope(created, 401, "INVALID_TOKEN")
    assert not TenantUser.objects.filter(tenant=acme.tenant, realm__name="keycloak").exists()


def test_good_profile_claims_are_stored(server, acme: World):
    claims = base_claims(acme, "erin", sub="kc-erin", name="Erin Ü. Example", email="erin@acme.example")
    response = httpx.get(server.url + COUNT, headers=acme.raw_headers(signed(claims, acme.realm.secret)), timeout=10)
    assert response.status_code == 200, response.text
    erin = TenantUser.objects.get(tenant=acme.tenant, realm=acme.realm, subject="kc-erin")
    assert (erin.username, erin.name, erin.email) == ("erin", "Erin Ü. Example", "erin@acme.example")


# --- partner API key expiry -------------------------------------------------------------


def test_expired_api_key_is_refused_with_api_key_expired(server, acme: World):
    _, expired = create_api_key(tenant=acme.tenant, name="old", expires_at=timezone.now() - timedelta(seconds=1))
    _, current = create_api_key(tenant=acme.tenant, name="new", expires_at=timezone.now() + timedelta(days=1))
    assert_envelope(httpx.get(server.url + EVENTS, headers={"X-API-Key": expired}, timeout=10), 401, "API_KEY_EXPIRED")
    assert_envelope(
        httpx.get(server.url + "/api" + EVENTS, headers={"Authorization": f"ApiKey {expired}"}, timeout=10),
        401,
        "API_KEY_EXPIRED",
    )
    assert httpx.get(server.url + EVENTS, headers={"X-API-Key": current}, timeout=10).status_code == 200
    ws_url = server.url.replace("http://", "ws://") + EVENTS + "/ws"
    with (
        connect(ws_url, additional_headers={"X-API-Key": expired}, open_timeout=5) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4401


def test_key_expiring_while_in_use_is_refused_from_then_on(server, acme: World):
    key, full = create_api_key(tenant=acme.tenant, name="short", expires_at=timezone.now() + timedelta(seconds=2))
    assert httpx.get(server.url + EVENTS, headers={"X-API-Key": full}, timeout=10).status_code == 200

    def refused() -> httpx.Response | None:
        response = httpx.get(server.url + EVENTS, headers={"X-API-Key": full}, timeout=10)
        return response if response.status_code != 200 else None

    response = wait_for(refused, timeout=10, interval=0.3, message="the key was still accepted after it expired")
    assert_envelope(response, 401, "API_KEY_EXPIRED")
    assert key.expires_at <= timezone.now()


@pytest.mark.django_db
def test_create_api_key_command_sets_the_expiry(acme: World):
    out, err = StringIO(), StringIO()
    call_command("create_api_key", tenant="acme", name="crm", expires_in="30d", stdout=out, stderr=err)
    key = ApiKey.objects.get(tenant=acme.tenant, name="crm")
    expected = timezone.now() + timedelta(days=30)
    assert abs((key.expires_at - expected).total_seconds()) < 60
    assert "expires" in err.getvalue()
    call_command("create_api_key", tenant="acme", name="forever", stdout=StringIO(), stderr=StringIO())
    assert ApiKey.objects.get(name="forever").expires_at is None


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["30", "-1d", "0d", "10y", "soon"])
def test_create_api_key_command_refuses_a_bad_duration(acme: World, value: str):
    with pytest.raises(CommandError):
        call_command("create_api_key", tenant="acme", name="crm", expires_in=value, stdout=StringIO())
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_admin_shows_and_edits_the_expiry(client, acme: World, django_user_model):
    staff = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(staff)
    key, _ = create_api_key(tenant=acme.tenant, name="crm")
    page = client.get(f"/admin/tenants/apikey/{key.pk}/change/", secure=True)
    assert page.status_code == 200 and b'name="expires_at_0"' in page.content
    response = client.post(
        f"/admin/tenants/apikey/{key.pk}/change/",
        {"name": "crm", "expires_at_0": "2030-01-02", "expires_at_1": "03:04:05"},
        secure=True,
    )
    assert response.status_code == 302, response.content[:2000]
    key.refresh_from_db()
    assert key.expires_at is not None and key.expires_at.year == 2030
    listing = client.get("/admin/tenants/apikey/", secure=True)
    assert b"Expires at" in listing.content or b"expires" in listing.content.lower()


def test_demo_loader_users_keep_working_with_tokens(server, settings):
    """load_demo's people belong to the demo realm, so the demo realm's tokens find them
    (and do not create a second alice)."""
    settings.DEMO_REALM_SECRET = "a-test-only-demo-secret-0123456789-abcdefghij"
    call_command(
        "load_demo",
        tickets=0,
        admin_password="x-admin-pw",
        user_password="x-user-pw",
        stdout=StringIO(),
        stderr=StringIO(),
    )
    realm = Realm.objects.get(tenant__slug="demo", name="demo")
    alice = TenantUser.objects.get(tenant=realm.tenant, username="alice")
    assert alice.realm_id == realm.pk and alice.subject == subject_for(realm.tenant, "alice")
    token = StringIO()
    call_command("issue_token", tenant="demo", user="alice", stdout=token)
    headers = {
        "Authorization": f"Bearer {token.getvalue().strip()}",
        "x-tenantid": str(realm.tenant.id),
        "realmname": "demo",
    }
    assert httpx.get(server.url + COUNT, headers=headers, timeout=10).status_code == 200
    assert TenantUser.objects.filter(tenant=realm.tenant, username__startswith="alice").count() == 1


def test_issue_token_takes_the_subject_of_the_user_of_its_own_realm_only(acme: World):
    """A token of the second realm for "alice" must not carry the `sub` (and profile) of
    the main realm's alice: she is another person there."""
    from tenants.services import issue_token

    TenantUser.objects.filter(pk=acme.users["alice"].pk).update(subject="kc-alice-main", name="Alice of Main")
    partners = second_realm(acme)

    def claims_of(token: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))

    main = claims_of(issue_token(realm=acme.realm, username="alice", roles=["agent"], teams=[]))
    other = claims_of(issue_token(realm=partners, username="alice", roles=["user"], teams=[]))
    assert (main["sub"], main["name"]) == ("kc-alice-main", "Alice of Main")
    assert other["sub"] == subject_for(acme.tenant, "alice") and other["name"] != "Alice of Main"
