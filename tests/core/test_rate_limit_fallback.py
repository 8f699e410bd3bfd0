"""Redis failing does not fail requests: the limiter counts in process memory meanwhile."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from django.test import override_settings

from core.ratelimit import check_rate_limit, limiters
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
