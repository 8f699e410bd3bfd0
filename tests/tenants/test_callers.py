"""Turning the request headers into a caller: every failure has its status and code."""

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core.http import ApiError
from tenants import callers
from tenants.models import Realm, TenantUser
from tests.builders import World, base_claims, signed
from tests.envelopes import assert_envelope

EVENTS = "/v2/system/events"


def get(api, headers: dict[str, str]):
    return api.get(EVENTS, headers=headers)


@pytest.mark.django_db
class TestHeaderErrors:
    def test_valid_headers_are_accepted(self, api, acme: World):
        assert get(api, acme.headers("alice")).status_code == 200

    def test_missing_tenant_header_is_400(self, api, acme: World):
        headers = acme.headers("alice")
        del headers["x-tenantid"]
        assert_envelope(get(api, headers), 400, "MISSING_HEADER")

    @pytest.mark.parametrize("value", ["not-a-uuid", "123", "' OR 1=1 --", "0" * 40])
    def test_malformed_tenant_header_is_400(self, api, acme: World, value: str):
        assert_envelope(get(api, {**acme.headers("alice"), "x-tenantid": value}), 400, "INVALID_HEADER")

    def test_missing_realm_header_is_400(self, api, acme: World):
        headers = acme.headers("alice")
        del headers["realmname"]
        assert_envelope(get(api, headers), 400, "MISSING_HEADER")

    def test_malformed_realm_header_is_400(self, api, acme: World):
        assert_envelope(get(api, {**acme.headers("alice"), "realmname": "../etc/passwd"}), 400, "INVALID_HEADER")

    @pytest.mark.parametrize("value", ["yes", "1", "TRUE!", "maybe"])
    def test_support_flag_other_than_true_false_is_400(self, api, acme: World, value: str):
        assert_envelope(get(api, {**acme.headers("admin"), "issupportrequest": value}), 400, "INVALID_HEADER")


@pytest.mark.django_db
class TestTenantAndRealm:
    def test_unknown_tenant_is_404(self, api, acme: World):
        headers = {**acme.headers("alice"), "x-tenantid": "00000000-0000-4000-8000-000000000000"}
        assert_envelope(get(api, headers), 404, "TENANT_NOT_FOUND")

    def test_inactive_tenant_is_404(self, api, acme: World):
        acme.tenant.active = False
        acme.tenant.save()
        assert_envelope(get(api, acme.headers("alice")), 404, "TENANT_NOT_FOUND")

    def test_unknown_realm_is_404(self, api, acme: World):
        assert_envelope(get(api, {**acme.headers("alice"), "realmname": "nope"}), 404, "REALM_NOT_FOUND")

    def test_inactive_realm_is_404(self, api, acme: World):
        Realm.objects.filter(pk=acme.realm.pk).update(active=False)
        assert_envelope(get(api, acme.headers("alice")), 404, "REALM_NOT_FOUND")

    def test_realm_of_another_tenant_is_404(self, api, acme: World, globex: World):
        headers = {**acme.headers("alice"), "realmname": "other"}
        Realm.objects.create(tenant=globex.tenant, name="other", secret="x" * 40)
        assert_envelope(get(api, headers), 404, "REALM_NOT_FOUND")


@pytest.mark.django_db
class TestTokens:
    def test_missing_token_is_401(self, api, acme: World):
        headers = acme.headers("alice")
        del headers["Authorization"]
        assert_envelope(get(api, headers), 401, "MISSING_TOKEN")

    @pytest.mark.parametrize("tenant", ["00000000-0000-4000-8000-000000000000", "known"])
    @pytest.mark.parametrize("realm", ["nosuchrealm", "known"])
    def test_missing_token_is_401_whether_tenant_and_realm_exist_or_not(self, api, acme: World, tenant, realm):
        # Headers are checked before any lookup: a 404 for an unknown tenant or realm here
        # told anyone without a token which tenants and realms exist (docs/api.md).
        headers = acme.headers("alice")
        del headers["Authorization"]
        if tenant != "known":
            headers["x-tenantid"] = tenant
        if realm != "known":
            headers["realmname"] = realm
        assert_envelope(get(api, headers), 401, "MISSING_TOKEN")

    @pytest.mark.parametrize("value", ["Bearer", "Basic abc", "Bearer not-a-jwt", "Token a.b.c", "Bearer a.b"])
    def test_malformed_authorization_is_401(self, api, acme: World, value: str):
        assert_envelope(get(api, {**acme.headers("alice"), "Authorization": value}), 401, "INVALID_TOKEN")

    def test_expired_token_is_401_token_expired(self, api, acme: World):
        token = signed(base_claims(acme, exp=int(time.time()) - 5), acme.realm.secret)
        assert_envelope(get(api, acme.raw_headers(token)), 401, "TOKEN_EXPIRED")

    def test_a_token_accepted_before_is_refused_once_it_expires(self, api, acme: World):
        # A token that passed is remembered (tenants.callers), but not beyond its expiry.
        expires = int(time.time()) + 2
        headers = acme.raw_headers(signed(base_claims(acme, exp=expires), acme.realm.secret))
        assert get(api, headers).status_code == 200
        time.sleep(max(0.0, expires - time.time()) + 0.2)
        assert_envelope(get(api, headers), 401, "TOKEN_EXPIRED")

    def test_a_token_accepted_before_is_refused_once_the_realm_changes_its_key(self, api, acme: World, monkeypatch):
        # The realm itself is not kept, so its new key is read on the next request.
        monkeypatch.setattr(callers, "_REALM_CACHE_SECONDS", 0.0)
        old_headers = acme.raw_headers(signed(base_claims(acme), acme.realm.secret))
        assert get(api, old_headers).status_code == 200
        new_secret = "rotated-realm-secret-0123456789abcdefghij"
        Realm.objects.filter(pk=acme.realm.pk).update(secret=new_secret)
        assert_envelope(get(api, old_headers), 401, "INVALID_TOKEN")
        assert get(api, acme.raw_headers(signed(base_claims(acme), new_secret))).status_code == 200

    def test_a_token_accepted_before_is_checked_again_once_the_realm_reads_teams_elsewhere(
        self, api, acme: World, monkeypatch
    ):
        monkeypatch.setattr(callers, "_REALM_CACHE_SECONDS", 0.0)
        headers = acme.raw_headers(signed(base_claims(acme, groups=["bad\u0000team"]), acme.realm.secret))
        assert get(api, headers).status_code == 200  # `teams` is read; `groups` is ignored
        Realm.objects.filter(pk=acme.realm.pk).update(teams_claim="groups")
        # Now `groups` is the teams claim, and its entry has a character no column stores.
        assert_envelope(get(api, headers), 401, "INVALID_TOKEN")

    def test_an_open_streams_check_is_answered_from_the_caches_while_they_hold(self, api, acme: World):
        """A stream's periodic check of its token needs no database thread while the realm
        and the token's claims are remembered, and does once the realm must be read again."""
        caller = callers.resolve_caller({name.lower(): value for name, value in acme.headers("alice").items()})
        assert callers.stream_caller_check_is_cached(caller)
        callers.check_stream_caller(caller)  # holds, from the caches alone
        callers.clear_realm_cache()
        assert not callers.stream_caller_check_is_cached(caller)
        callers.check_stream_caller(caller)  # reads the realm again (through a thread)
        assert callers.stream_caller_check_is_cached(caller)
        Realm.objects.filter(pk=acme.realm.pk).update(secret="rotated-realm-secret-0123456789abcdefghij")
        callers.clear_realm_cache()
        with pytest.raises(ApiError) as refused:
            callers.check_stream_caller(caller)
        assert refused.value.code == "INVALID_TOKEN"

    def test_the_streams_of_one_token_keep_one_copy_of_it(self, api, acme: World):
        """An open stream keeps its caller's token for its credential checks; a user's
        several streams (every request bringing its own copy of the header) keep the one
        string remembered with the token's claims, not a copy each (memory per stream,
        docs/benchmarks.md)."""
        headers = acme.headers("alice")
        first, second = (
            callers.resolve_caller({name.lower(): "".join(value) for name, value in headers.items()}) for _ in range(2)
        )
        assert first.token == second.token == headers["Authorization"].removeprefix("Bearer ")
        assert first.token is second.token

    def test_wrongly_signed_token_is_401(self, api, acme: World):
        token = signed(base_claims(acme), "some-other-secret-0123456789abcdefghij")
        assert_envelope(get(api, acme.raw_headers(token)), 401, "INVALID_TOKEN")

    def test_alg_none_token_is_401(self, api, acme: World):
        token = signed(base_claims(acme), None, algorithm="none")
        assert_envelope(get(api, acme.raw_headers(token)), 401, "INVALID_TOKEN")

    def test_token_from_another_realm_is_401(self, api, acme: World, globex: World):
        token = globex.token("alice")
        assert_envelope(get(api, acme.raw_headers(token)), 401, "INVALID_TOKEN")

    def test_token_with_wrong_issuer_is_401(self, api, acme: World):
        token = signed(base_claims(acme, iss="https://evil.example/realms/acme"), acme.realm.secret)
        assert_envelope(get(api, acme.raw_headers(token)), 401, "INVALID_TOKEN")

    def test_token_without_expiry_is_401(self, api, acme: World):
        claims = base_claims(acme)
        del claims["exp"]
        assert_envelope(get(api, acme.raw_headers(signed(claims, acme.realm.secret))), 401, "INVALID_TOKEN")

    def test_token_without_known_role_is_403(self, api, acme: World):
        token = signed(base_claims(acme, realm_access={"roles": ["offline_access"]}), acme.realm.secret)
        assert_envelope(get(api, acme.raw_headers(token)), 403, "MISSING_ROLE")

    def test_support_request_without_support_role_is_403(self, api, acme: World):
        headers = {**acme.headers("alice"), "issupportrequest": "true"}
        assert_envelope(get(api, headers), 403, "SUPPORT_ROLE_REQUIRED")

    def test_support_request_with_support_role_is_allowed(self, api, acme: World):
        assert get(api, {**acme.headers("admin"), "issupportrequest": "true"}).status_code == 200

    def test_rs256_realm_verifies_with_its_public_key(self, api, acme: World):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_pem = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        Realm.objects.create(
            tenant=acme.tenant,
            name="kc",
            algorithm="RS256",
            public_key=public_pem,
            issuer="https://kc.example/realms/kc",
        )
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        claims = base_claims(acme, iss="https://kc.example/realms/kc")
        headers = {**acme.raw_headers(signed(claims, private_pem, algorithm="RS256")), "realmname": "kc"}
        assert get(api, headers).status_code == 200


@pytest.mark.django_db
class TestUserRecord:
    def test_unknown_subject_creates_the_user_from_the_token(self, api, acme: World):
        claims = base_claims(
            acme,
            sub="kc-subject-42",
            preferred_username="erin",
            name="Erin Example",
            email="erin@acme.example",
            realm_access={"roles": ["agent"]},
            teams=["/support/l2"],
        )
        assert get(api, acme.raw_headers(signed(claims, acme.realm.secret))).status_code == 200
        erin = TenantUser.objects.get(tenant=acme.tenant, subject="kc-subject-42")
        assert (erin.username, erin.name, erin.email, erin.roles, erin.teams) == (
            "erin",
            "Erin Example",
            "erin@acme.example",
            ["agent"],
            ["l2"],
        )

    def test_changed_claims_refresh_the_user(self, api, acme: World):
        claims = base_claims(acme, "alice", name="Alice Renamed", realm_access={"roles": ["agent", "admin"]})
        assert get(api, acme.raw_headers(signed(claims, acme.realm.secret))).status_code == 200
        alice = TenantUser.objects.get(pk=acme.users["alice"].pk)
        assert alice.name == "Alice Renamed" and alice.roles == ["admin", "agent"]
