"""Production mode (DEBUG off): `check --deploy` is clean, and the real server sends
Secure cookies, HSTS (over https, here through a TLS-terminating proxy's
X-Forwarded-Proto), a Content-Security-Policy under which the dashboard, the admin and
Swagger UI still work in Chromium, and redirects plain http to https."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.builders import World
from tests.conftest import ROOT, ServerProcess, wait_until_database_is_quiet
from tests.ticketing.test_dashboard_browser import (  # noqa: F401  (fixtures)
    browser,
    create,
    link_login,
    new_context,
    sign_in,
)

pytestmark = pytest.mark.django_db(transaction=True)

# The knobs a plain-http test server turns off; a production environment sets none of them.
DEV_OVERRIDES = (
    "DEBUG",
    "SECURE_SSL_REDIRECT",
    "SECURE_COOKIES",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
    "CONTENT_SECURITY_POLICY",
    "CONTENT_SECURITY_POLICY_REPORT_ONLY",
)


def production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DEV_OVERRIDES}
    return {
        **env,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "tickets.example.com",
        **extra,
    }


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings(transactional_db):
    result = check_deploy(production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNING" not in result.stderr


def test_check_deploy_reports_a_plain_http_override(transactional_db):
    """The test servers' overrides are what check --deploy would flag in production."""
    result = check_deploy(production_env(SECURE_COOKIES="0", SECURE_SSL_REDIRECT="0"))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "security.W008" in output and "security.W012" in output and "security.W016" in output


@pytest.fixture(scope="module")
def _proxied_process(django_db_setup: None, django_db_blocker: object) -> Iterator[ServerProcess]:
    """Production settings behind a TLS-terminating proxy (the test plays the proxy)."""
    proc = ServerProcess(
        SECURE_SSL_REDIRECT="1", SECURE_PROXY_SSL_HEADER="1", SECRET_KEY=secrets.token_urlsafe(64)
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def proxied(transactional_db: None, _proxied_process: ServerProcess) -> Iterator[ServerProcess]:
    yield _proxied_process
    wait_until_database_is_quiet()


HTTPS = {"X-Forwarded-Proto": "https"}


def cookie_attributes(response: httpx.Response, name: str) -> set[str]:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


def test_over_https_cookies_are_secure_and_hsts_csp_and_frame_headers_are_sent(proxied, acme: World):
    client = httpx.Client(base_url=proxied.url, headers=HTTPS, timeout=10)
    login_page = client.get("/dashboard/login/")
    assert login_page.status_code == 200
    assert {"secure", "samesite"} <= cookie_attributes(login_page, "csrftoken")
    hsts = login_page.headers["strict-transport-security"]
    assert re.fullmatch(r"max-age=(\d+); includeSubDomains; preload", hsts)
    assert int(hsts.split("=")[1].split(";")[0]) >= 31_536_000
    csp = login_page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert login_page.headers["x-frame-options"] == "DENY"
    assert login_page.headers["x-content-type-options"] == "nosniff"
    # Every page has its own nonce.
    assert client.get("/dashboard/login/").headers["content-security-policy"] != csp

    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("acme-alice", password="a-long-test-password-1")
    signed_in = client.post(
        "/dashboard/login/",
        data={
            "username": "acme-alice",
            "password": "a-long-test-password-1",
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
        # httpx sends no Secure cookie over the http hop to the "proxy"; a browser would.
        headers={
            "Cookie": f"csrftoken={client.cookies['csrftoken']}",
            "Referer": f"https://127.0.0.1:{proxied.port}/dashboard/login/",
            "Origin": f"https://127.0.0.1:{proxied.port}",
        },
    )
    assert signed_in.status_code == 302, signed_in.text
    assert {"secure", "httponly"} <= cookie_attributes(signed_in, "sessionid")
    client.close()


def test_plain_http_is_redirected_to_https_and_the_api_still_answers_over_https(proxied, acme: World):
    plain = httpx.get(f"{proxied.url}/api/v2/ticketing/ticket/notification/count", timeout=10)
    assert plain.status_code == 301
    assert plain.headers["location"].startswith("https://")
    assert "strict-transport-security" not in plain.headers  # only ever sent over https
    api = httpx.get(
        f"{proxied.url}/api/v2/ticketing/ticket/notification/count",
        headers={**acme.headers("alice"), **HTTPS},
        timeout=10,
    )
    assert api.status_code == 200, api.text
    assert api.headers["strict-transport-security"].startswith("max-age=")


def test_the_plain_http_test_server_keeps_secure_cookies_and_sends_no_hsts(server, acme: World):
    """DEBUG off over http://127.0.0.1 (the suite's servers): cookies stay Secure, no redirect."""
    response = httpx.get(f"{server.url}/dashboard/login/", timeout=10)
    assert response.status_code == 200
    assert "secure" in cookie_attributes(response, "csrftoken")
    assert "strict-transport-security" not in response.headers
    assert "content-security-policy" in response.headers


@pytest.mark.browser
def test_dashboard_admin_and_swagger_ui_work_under_the_csp_in_chromium(server, acme: World, new_context):  # noqa: F811
    """Signed in over http://127.0.0.1 with Secure cookies, every page renders and runs its
    scripts with no Content-Security-Policy violation."""
    link_login(acme, "alice")
    link_login(acme, "admin", staff=True)
    ticket = create(server.url, acme, subject="Under the policy")
    context = new_context()
    page = context.new_page()
    page.add_init_script(
        """window.__cspViolations = [];
        document.addEventListener('securitypolicyviolation',
          e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"""
    )
    sign_in(page, server.url, acme, "alice")  # the list's stream is live: its scripts ran
    expect(page.locator(f'#rows tr[data-id="{ticket["id"]}"]')).to_be_visible()
    assert page.evaluate("window.__cspViolations") == []
    page.goto(f"{server.url}/dashboard/tickets/{ticket['id']}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    assert page.evaluate("window.__cspViolations") == []

    page.goto(f"{server.url}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Ticketing service API", timeout=15_000)
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.evaluate("window.__cspViolations") == []

    admin = new_context().new_page()
    admin.add_init_script(
        """window.__cspViolations = [];
        document.addEventListener('securitypolicyviolation',
          e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"""
    )
    admin.goto(f"{server.url}/admin/ticketing/ticket/")
    admin.get_by_label("Username").fill("acme-admin")
    admin.get_by_label("Password").fill("browser-test-password")
    admin.get_by_role("button", name="Log in").click()
    expect(admin.locator("#result_list")).to_contain_text("Under the policy")
    # The admin's own scripts run (select-all checkbox, actions bar).
    admin.locator("#action-toggle").check()
    expect(admin.locator(".action-counter")).to_contain_text("1 of 1 selected")
    assert admin.evaluate("window.__cspViolations") == []
