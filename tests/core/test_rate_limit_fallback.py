"""The limiter in process: Redis failing does not fail requests (it counts in process memory
meanwhile), and what it remembers of refused callers stays bounded."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from django.test import override_settings

from core.ratelimit import RECENT_REFUSALS_MAX, RecentRefusals, Verdict, check_rate_limit, limiters
from tests.conftest import free_port


def caller() -> SimpleNamespace:
    return SimpleNamespace(tenant=SimpleNamespace(pk=uuid.uuid4(), slug="acme"), user=SimpleNamespace(pk=uuid.uuid4()))


def test_unreachable_redis_falls_back_to_counting_in_memory():
    nobody = caller()
    with override_settings(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", RATE_LIMIT_PER_USER="2/minute", RATE_LIMITS_ENABLED=True
    ):
        limiters.reset()
        try:
            verdicts = [check_rate_limit(nobody) for _ in range(3)]
        finally:
            limiters.reset()
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert [v.remaining for v in verdicts] == [1, 0, 0]
    assert verdicts[2].refusal().status == 429 and verdicts[2].refusal().headers["Retry-After"]


def test_limits_can_be_turned_off():
    with override_settings(RATE_LIMITS_ENABLED=False):
        assert check_rate_limit(caller()) is None


def test_a_client_rotating_tokens_past_its_limit_cannot_grow_the_memory_of_refusals():
    """Each refused credential is remembered until its window ends (core.ratelimit.RecentRefusals),
    at most RECENT_REFUSALS_MAX of them: a flood of new tokens, each refused once, keeps
    the process's memory bounded and the newest refusals known."""
    refusals = RecentRefusals()
    verdict = Verdict(allowed=False, limit=2, remaining=0, reset_seconds=60, scope="user")
    for n in range(RECENT_REFUSALS_MAX + 10):
        refusals.note({"authorization": f"Bearer token-{n}"}, verdict)
    assert len(refusals._until) <= RECENT_REFUSALS_MAX
    assert refusals.holds({"authorization": f"Bearer token-{RECENT_REFUSALS_MAX + 9}"})
    assert not refusals.holds({"authorization": "Bearer never-refused"})


def test_a_refusal_is_known_by_its_credential_or_tenant_and_forgotten_once_let_through():
    refusals = RecentRefusals()
    tenant = uuid.uuid4()
    # A session is its session cookie, whatever other cookies come and go.
    session = {"x-tenantid": str(tenant), "cookie": "sessionid=abc; theme=dark"}
    refusals.note(session, Verdict(allowed=False, limit=2, remaining=0, reset_seconds=60, scope="user"))
    assert refusals.holds({"cookie": "theme=light; sessionid=abc"})
    assert not refusals.holds({"x-tenantid": str(tenant), "cookie": "sessionid=other"})  # a user's bucket only
    # A tenant's bucket is known by the tenant named (any spelling), whatever the credentials.
    refusals.note({"x-tenantid": str(tenant), "authorization": "Bearer a"}, Verdict(False, 5, 0, 60, "tenant"))
    assert refusals.holds({"x-tenantid": str(tenant).upper(), "authorization": "Bearer b"})
    assert not refusals.holds({"x-tenantid": str(uuid.uuid4()), "authorization": "Bearer b"})
    # Let through again (its window ended sooner in the shared count): forgotten.
    refusals.forget({"x-tenantid": str(tenant), "authorization": "Bearer b"})
    assert not refusals.holds({"x-tenantid": str(tenant), "authorization": "Bearer b"})
    # The refused request's own credentials were remembered too, until they are let through.
    assert refusals.holds({"authorization": "Bearer a"})
    refusals.forget({"authorization": "Bearer a"})
    assert not refusals.holds({"authorization": "Bearer a"})
