"""What config.log_redaction takes out of a log line (the server tests check that it is
applied to every handler: tests/config/test_server_edges.py)."""

from __future__ import annotations

import logging

import pytest

from config.log_redaction import REDACTED, RedactCredentials, redact
from tenants.services import create_api_key


@pytest.mark.django_db
def test_an_api_key_is_redacted_anywhere_keeping_its_prefix(acme):
    _, key = create_api_key(tenant=acme.tenant, name="crm")
    secret = key.split("_", 2)[-1]
    for text in (f"Not Found: /api/nonexistent/{key}/x", f"refused {key}.", f'{{"key": "{key}"}}'):
        cleaned = redact(text)
        assert secret not in cleaned
        assert f"{'_'.join(key.split('_', 2)[:2])}_{REDACTED}" in cleaned, cleaned


@pytest.mark.parametrize(
    "text",
    [
        "< cookie: csrftoken=CSRFSECRET4567890; sessionid=SESSIONSECRET1234567",
        "Cookie:sessionid=SESSIONSECRET1234567",
        "> set-cookie: sessionid=SESSIONSECRET1234567; HttpOnly; Path=/",
        "headers [(b'cookie', b'a=1; sessionid=SESSIONSECRET1234567')]",
        "x; sessionid=SESSIONSECRET1234567; csrftoken = CSRFSECRET4567890",
        "{'sessionid': 'SESSIONSECRET1234567', 'csrfmiddlewaretoken': 'CSRFSECRET4567890'}",
    ],
)
def test_session_and_csrf_cookies_are_redacted_with_or_without_spaces(text: str):
    cleaned = redact(text)
    assert "SESSIONSECRET1234567" not in cleaned
    assert "CSRFSECRET4567890" not in cleaned
    assert REDACTED in cleaned


def test_a_credential_header_passed_as_its_own_argument_is_redacted():
    # The websockets library at DEBUG: `"< %s: %s", name, value`.
    record = logging.LogRecord("websockets", logging.DEBUG, __file__, 1, "< %s: %s", ("cookie", "a=b; c=d"), None)
    RedactCredentials().filter(record)
    assert record.getMessage() == f"< cookie: {REDACTED}"
    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "< %s: %s", ("accept", "text/html"), None)
    RedactCredentials().filter(record)
    assert record.getMessage() == "< accept: text/html"
