"""A person deleted (admin: tenant users) while their token is still valid is made afresh
by their next request, as on their very first one: the server keeps the user it found for
a token a few seconds, and a write in that time referenced the deleted row and failed at
COMMIT with a 500. Through the real server."""

from __future__ import annotations

import httpx

from tenants.models import TenantUser
from tests.builders import World


def test_a_write_right_after_the_person_was_deleted_makes_them_afresh(server, acme: World) -> None:
    headers = acme.headers("alice")
    url = f"{server.url}/api/v2/ticketing/ticket"
    first = httpx.post(url, headers=headers, json={"subject": "VPN down", "team": "operation"}, timeout=10)
    assert first.status_code == 201, first.text

    TenantUser.objects.filter(pk=acme.users["alice"].pk).delete()

    # Within the server's few seconds of remembering the user, with the same token.
    again = httpx.post(url, headers=headers, json={"subject": "VPN still down", "team": "operation"}, timeout=10)
    assert again.status_code == 201, again.text
    alice = TenantUser.objects.get(tenant=acme.tenant, username="alice")
    assert alice.pk != acme.users["alice"].pk
    assert again.json()["data"]["requester"]["id"] == str(alice.pk)
    comment = httpx.post(
        f"{url}/{again.json()['data']['id']}/comments", headers=headers, json={"body": "Rebooted"}, timeout=10
    )
    assert comment.status_code == 201, comment.text
