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
