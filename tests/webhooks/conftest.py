"""Fixtures of the webhook tests: a server process with webhooks allowed to reach
127.0.0.1, a scripted receiver, and the test process on the same secret keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.builders import World
from tests.conftest import ServerProcess, wait_until_database_is_quiet
from tests.webhooks.support import TEST_SECRET_KEYS, WEBHOOK_ENV, Receiver
from webhooks.models import WebhookSettings


@pytest.fixture(autouse=True)
def _webhook_settings(settings) -> None:
    settings.WEBHOOKS_SECRET_KEYS = [TEST_SECRET_KEYS]
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True


@pytest.fixture(scope="module")
def _webhook_server_process(django_db_setup: None, django_db_blocker: object) -> Iterator[ServerProcess]:
    proc = ServerProcess(**WEBHOOK_ENV).start()
    yield proc
    proc.stop()


@pytest.fixture
def webhook_server(transactional_db: None, _webhook_server_process: ServerProcess) -> Iterator[ServerProcess]:
    yield _webhook_server_process
    wait_until_database_is_quiet()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def http_allowed(acme: World) -> World:
    """acme accepts http:// endpoints (the receiver speaks plain http)."""
    WebhookSettings.objects.create(tenant=acme.tenant, allow_http=True)
    return acme
