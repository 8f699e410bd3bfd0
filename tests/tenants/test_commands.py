"""The operator commands of the tenants app."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.builders import World

pytestmark = pytest.mark.django_db


def test_issue_token_prints_only_a_token_that_the_api_accepts(api, acme: World):
    out = StringIO()
    call_command("issue_token", tenant="acme", user="alice", stdout=out)
    token = out.getvalue().strip()
    assert token.count(".") == 2 and "\n" not in token
    assert api.get("/v2/system/events", headers=acme.raw_headers(token)).status_code == 200


def test_issue_token_headers_format_prints_the_three_headers(api, acme: World):
    out = StringIO()
    call_command(
        "issue_token",
        tenant=str(acme.tenant.id),
        user="carol",
        roles="agent",
        teams="network",
        format="headers",
        stdout=out,
    )
    lines = out.getvalue().strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["Authorization", "x-tenantid", "realmname"]
    headers = dict(line.split(": ", 1) for line in lines)
    assert api.get("/v2/system/events", headers=headers).status_code == 200


def test_issue_token_for_an_unknown_tenant_says_so(acme: World):
    with pytest.raises(CommandError, match="No tenant"):
        call_command("issue_token", tenant="nope", user="alice", stdout=StringIO())


def test_expired_ttl_gives_a_token_the_api_refuses(api, acme: World):
    out = StringIO()
    call_command("issue_token", tenant="acme", user="alice", ttl=-10, stdout=out)
    response = api.get("/v2/system/events", headers=acme.raw_headers(out.getvalue().strip()))
    assert response.status_code == 401 and response.json()["error"]["code"] == "TOKEN_EXPIRED"
