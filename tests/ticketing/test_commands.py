"""The operator commands of the ticketing app: the demo loader."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "options",
    [
        {"admin_password": "own-admin-pw", "user_password": "own-user-pw"},  # the published realm secret
        {},  # ... and the published passwords
    ],
)
def test_load_demo_refuses_the_published_demo_secret_when_debug_is_off(settings, options):
    from tenants.models import Tenant

    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG is off"):
        call_command("load_demo", tickets=0, stdout=StringIO(), **options)
    assert not Tenant.objects.filter(slug="demo").exists()


def test_load_demo_refuses_the_published_passwords_even_with_an_own_secret(settings):
    from tenants.models import Tenant

    settings.DEBUG = False
    settings.DEMO_REALM_SECRET = "an-own-demo-secret-0123456789-abcdefghijklmn"
    with pytest.raises(CommandError, match="--admin-password"):
        call_command("load_demo", tickets=0, stdout=StringIO())
    assert not Tenant.objects.filter(slug="demo").exists()


def test_load_demo_runs_in_development_with_the_published_credentials(settings):
    from tenants.models import Tenant

    settings.DEBUG = True
    call_command("load_demo", tickets=0, stdout=StringIO())
    assert Tenant.objects.filter(slug="demo").exists()


def test_quickstart_prints_a_silent_stream_curl_and_a_token_issued_for_its_port(settings):
    import jwt

    settings.DEBUG = True
    call_command("load_demo", tickets=0, base_url="http://127.0.0.1:8123", stdout=StringIO())
    out = StringIO()
    call_command("quickstart", base_url="http://127.0.0.1:8123", stdout=out)
    printed = out.getvalue()
    stream = printed.split("Watch the live ticket list")[1].splitlines()[1].strip()
    assert stream.startswith("curl -sN -X POST 'http://127.0.0.1:8123/api/v2/ticketing/ticket/sse/list/updates")
    token = printed.split("Authorization: Bearer ")[1].split("'")[0]
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "http://127.0.0.1:8123/realms/demo"


@pytest.mark.parametrize(
    "value",
    ["notaurl", "127.0.0.1:8000", "ftp://127.0.0.1", "http://", "http://host:99999", "http://h/?q=1", "http:/x"],
)
def test_load_demo_refuses_a_base_url_that_is_not_an_absolute_http_url(settings, value):
    from tenants.models import Tenant

    settings.DEBUG = True
    with pytest.raises(CommandError, match=r"argument --base-url: .*absolute http"):
        call_command("load_demo", "--tickets", "0", "--base-url", value, stdout=StringIO())
    # Given as call_command does (without the option's type): refused the same.
    with pytest.raises(CommandError, match=r"--base-url: .*absolute http"):
        call_command("load_demo", tickets=0, base_url=value, stdout=StringIO())
    assert not Tenant.objects.filter(slug="demo").exists()


def test_load_demo_warns_when_it_moves_the_issuer_of_live_tokens(settings):
    from tenants.models import Realm

    settings.DEBUG = True
    first = StringIO()
    call_command("load_demo", "--tickets", "0", "--base-url", "https://desk.example/", stdout=StringIO(), stderr=first)
    assert first.getvalue() == ""  # a new realm: no token was issued for another issuer
    assert Realm.objects.get(tenant__slug="demo").issuer == "https://desk.example/realms/demo"
    same = StringIO()
    call_command("load_demo", "--tickets", "0", "--base-url", "https://desk.example", stdout=StringIO(), stderr=same)
    assert same.getvalue() == ""
    moved = StringIO()
    call_command("load_demo", "--tickets", "0", "--base-url", "http://127.0.0.1:8001", stdout=StringIO(), stderr=moved)
    assert moved.getvalue() == (
        "warning: the demo realm's issuer changed from https://desk.example/realms/demo to "
        "http://127.0.0.1:8001/realms/demo; tokens issued for the old issuer are refused from now on "
        "(issue new ones).\n"
    )


def test_quickstart_prints_the_demo_passwords_only_where_they_sign_in(settings):
    settings.DEBUG = True
    call_command("load_demo", tickets=0, stdout=StringIO())
    published = StringIO()
    call_command("quickstart", stdout=published)
    assert "password demo1234;" in published.getvalue()
    assert "(user: admin, password: admin)" in published.getvalue()

    from django.contrib.auth import get_user_model

    for account in get_user_model().objects.filter(username__in=["admin", "alice"]):
        account.set_password("an-own-password-0123")
        account.save()
    own = StringIO()
    call_command("quickstart", stdout=own)
    printed = own.getvalue()
    assert "password: admin" not in printed and "password admin" not in printed and "demo1234" not in printed
    assert "(user: admin, password: the --admin-password given to load_demo)" in printed
    assert "(end users), the --user-password given to load_demo;" in printed


def test_quickstart_defaults_to_where_the_demo_realm_says_the_service_is(settings):
    import jwt

    settings.DEBUG = True
    call_command("load_demo", "--tickets", "0", "--base-url", "http://127.0.0.1:8123", stdout=StringIO())
    out = StringIO()
    call_command("quickstart", stdout=out)
    printed = out.getvalue()
    assert "==> The service is starting on http://127.0.0.1:8123\n" in printed
    assert "curl -s 'http://127.0.0.1:8123/v2/system/events" in printed
    token = printed.split("Authorization: Bearer ")[1].split("'")[0]
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "http://127.0.0.1:8123/realms/demo"


@pytest.mark.parametrize("value", ["notaurl", "ftp://x", "http://"])
def test_quickstart_refuses_a_base_url_that_is_not_an_absolute_http_url(settings, value):
    settings.DEBUG = True
    call_command("load_demo", tickets=0, stdout=StringIO())
    with pytest.raises(CommandError, match=r"argument --base-url: .*absolute http"):
        call_command("quickstart", "--base-url", value, stdout=StringIO())


@pytest.mark.parametrize(("value", "refused"), [("2592000", False), ("2592001", True), ("99999999999999", True)])
def test_issue_token_caps_the_ttl_at_30_days(settings, value, refused):
    settings.DEBUG = True
    call_command("load_demo", tickets=0, stdout=StringIO())
    if refused:
        with pytest.raises(CommandError, match=r"argument --ttl: .*at most 2592000 seconds \(30 days\)"):
            call_command("issue_token", "--tenant", "demo", "--user", "alice", "--ttl", value, stdout=StringIO())
    else:
        out = StringIO()
        call_command("issue_token", "--tenant", "demo", "--user", "alice", "--ttl", value, stdout=out)
        assert out.getvalue().count(".") == 2
