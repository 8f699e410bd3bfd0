"""Realm keys that would make tokens forgeable or unusable are refused where a realm is
made: an HS256 secret shorter than 32 bytes (RFC 7518 section 3.2: `a` was saved, and
tokens signed with `a` accepted), an RS256 public key that is not an RSA PEM public key,
an RS256 realm with neither a key nor a JWKS URL."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client

from tenants.models import Realm
from tests.builders import World

pytestmark = pytest.mark.django_db


def pem(key: object) -> str:
    return (
        key.public_key()
        .public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )


RSA_PEM = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
SMALL_RSA_PEM = pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505  (refused)
EC_PEM = pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def realm_form(world: World, **overrides: str) -> dict[str, str]:
    return {
        "tenant": str(world.tenant.id),
        "name": "partners",
        "algorithm": "HS256",
        "secret": "",
        "public_key": "",
        "jwks_url": "",
        "issuer": "",
        "audience": "",
        "teams_claim": "teams",
        "active": "on",
        **overrides,
    }


@pytest.mark.parametrize(
    ("overrides", "field", "says"),
    [
        ({"secret": "a"}, "secret", "at least 32 bytes"),
        ({"secret": "x" * 31}, "secret", "at least 32 bytes"),
        ({"secret": ""}, "secret", "at least 32 bytes"),
        ({"algorithm": "RS256", "public_key": "not a PEM"}, "public_key", "Not a PEM public key"),
        ({"algorithm": "RS256", "public_key": RSA_PEM[:120]}, "public_key", "Not a PEM public key"),
        ({"algorithm": "RS256", "public_key": EC_PEM}, "public_key", "an RSA public key"),
        ({"algorithm": "RS256", "public_key": SMALL_RSA_PEM}, "public_key", "at least 2048 bits"),
        ({"algorithm": "RS256"}, "public_key", "a public key (PEM) or a JWKS URL"),
    ],
    ids=["one-char", "31-bytes", "empty", "garbage-pem", "cut-pem", "ec-key", "rsa-1024", "rs256-no-key"],
)
def test_admin_refuses_realm_keys_that_forge_or_break_tokens(staff: Client, acme: World, overrides, field, says):
    response = staff.post("/admin/tenants/realm/add/", realm_form(acme, **overrides), secure=True)
    assert response.status_code == 200, response.status_code
    assert says in " ".join(response.context["adminform"].form.errors[field])
    assert not Realm.objects.filter(name="partners").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        {"secret": "x" * 32},
        {"algorithm": "RS256", "public_key": RSA_PEM},
        {"algorithm": "RS256", "jwks_url": "https://id.example/realms/partners/protocol/openid-connect/certs"},
    ],
    ids=["hs256-32-bytes", "rs256-pem", "rs256-jwks"],
)
def test_admin_saves_usable_realm_keys(staff: Client, acme: World, overrides):
    response = staff.post("/admin/tenants/realm/add/", realm_form(acme, **overrides), secure=True)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Realm.objects.filter(tenant=acme.tenant, name="partners").exists()


def test_an_existing_weak_secret_is_refused_at_its_next_edit(staff: Client, acme: World):
    realm = Realm.objects.create(tenant=acme.tenant, name="partners", secret="a")
    form = realm_form(acme, secret="a", issuer="https://id.example")
    response = staff.post(f"/admin/tenants/realm/{realm.pk}/change/", form, secure=True)
    assert response.status_code == 200
    realm.refresh_from_db()
    assert realm.issuer == ""


def test_full_clean_refuses_a_short_secret_for_code_that_makes_realms(acme: World):
    with pytest.raises(ValidationError) as refused:
        Realm(tenant=acme.tenant, name="partners", secret="short").full_clean()
    assert "secret" in refused.value.message_dict


def test_load_demo_refuses_a_short_demo_realm_secret(settings):
    settings.DEBUG = True
    settings.DEMO_REALM_SECRET = "a"
    with pytest.raises(CommandError, match="DEMO_REALM_SECRET: An HS256 secret must be at least 32 bytes"):
        call_command("load_demo", tickets=0, stdout=StringIO(), stderr=StringIO())
    assert not Realm.objects.filter(tenant__slug="demo").exists()
