"""The API contract, machine-checked: schemathesis against the schema the running server
serves (`/api/schema/`), once per kind of caller (an agent, an end user, a partner API key),
with every check it has.

The world it runs in is real: the two tenants of tests/builders.py, tickets, a comment, a
watcher and an approval made through the server, so path parameters hit real objects half
of the time (dictionaries bound to `path.*`, and to the body fields that name a user or a
ticket) and random ones otherwise.

Not fuzzed here, and why:
- the SSE streams (paths with an `/sse` segment, and `/views/counts/stream`): a stream that
  opens never ends by itself (heartbeats keep it alive until the idle timeout), so a checker
  waiting for the response would hang; their pre-stream answers are plain JSON errors covered
  by tests/ticketing/test_list_stream.py, tests/ticketing/test_ticket_stream.py,
  tests/notifications/test_stream.py and tests/ticketing/test_view_counts.py;
- the partner websocket: not an HTTP operation, so not in OpenAPI (its protocol is in the
  schema's description; tests/events/test_partner_feed.py drives it).

Bounded for CI: a few examples per operation (`MAX_EXAMPLES`), one worker, a fixed seed; each
caller's run takes 40-100 s on two cores (more when the machine is busy).

Two pins, and why: the tenant headers go with every request (also as CLI headers, because
the coverage phase's requests for undeclared methods carry generated header values and DRF
authenticates before it answers 405: a random tenant there is 404, not 405), and
`issupportrequest` is `false` (`true` is 403 for callers without the support role, before
any other check)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tenants.services import create_api_key
from tests.builders import World
from tests.conftest import ROOT, ServerProcess

pytestmark = [pytest.mark.contract, pytest.mark.slow]

API = "/api/v2/ticketing"
MAX_EXAMPLES = 6
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def _post(server: ServerProcess, path: str, headers: dict[str, str], body: dict) -> dict:
    response = httpx.post(f"{server.url}{API}{path}", json=body, headers=headers, timeout=10)
    assert response.status_code in (200, 201), response.text
    return response.json()["data"]


def _build_world(server: ServerProcess, acme: World, globex: World) -> dict[str, list[str]]:
    """Objects the fuzzer's path parameters can name: ids of tickets (one of them of the
    other tenant, which must stay invisible), approvals, notifications, and usernames."""
    alice, bob = acme.headers("alice"), acme.headers("bob")
    tickets = [
        _post(server, "/ticket", bob, {"subject": f"Printer {n} is jammed", "priority": "high"})["id"] for n in range(3)
    ]
    tickets.append(_post(server, "/ticket", alice, {"subject": "Agent ticket", "team": "operation"})["id"])
    tickets.append(_post(server, "/ticket", globex.headers("bob"), {"subject": "Globex's own ticket"})["id"])
    _post(server, f"/ticket/{tickets[0]}/comments", alice, {"body": "Looking into it @bob"})
    _post(server, f"/ticket/{tickets[0]}/watchers", alice, {"user": "carol"})
    approval = _post(server, f"/ticket/{tickets[1]}/approvals", alice, {"approver": "admin", "note": "ok?"})["id"]
    listed = httpx.get(f"{server.url}{API}/ticket/notification/list", headers=bob, timeout=10).json()["data"]
    notifications = [n["id"] for n in listed["notifications"]] or ["notif-00000000-0000-0000-0000-000000000000"]
    open_filter = {"op": "AND", "operand": [{"column": "status", "op": "EQ", "operand": "open"}]}
    views = [
        _post(server, "/views", alice, {"name": "Mine", "filter": open_filter})["id"],
        _post(server, "/views", acme.headers("admin"), {"name": "All open", "visibility": "tenant"})["id"],
        _post(server, "/views", globex.headers("admin"), {"name": "Globex's", "visibility": "tenant"})["id"],
    ]
    return {
        "tickets": tickets,
        "approvals": [approval],
        "notifications": notifications,
        "users": ["alice", "bob", "carol", "dave", "admin"],
        "skus": ["SKU-1", "LAPTOP-13"],
        "views": views,
    }


# Operations whose schema-valid input may still be refused by design: bodies that name other
# objects (a user, a ticket) that must exist in the tenant, or carry a filter whose meaning
# (columns, operators, values) the schema leaves open; a refusal is then 400 INVALID_BODY or
# 422 INVALID_FILTER (docs/api.md), which `positive_data_acceptance` is told to accept.
_REFUSED = '["2xx", "400", "401", "403", "404", "409", "422", "429"]'
# A generated `If-Match` names another version than the ticket's: 412 PRECONDITION_FAILED.
_CONDITIONAL = '["2xx", "400", "401", "403", "404", "409", "412", "422", "429"]'
REFUSED_BY_DESIGN = (  # operation names ("METHOD /path") as regular expressions
    (r"^POST /api/v2/ticketing/ticket$", _REFUSED),
    (r"^(PATCH|DELETE) /api/v2/ticketing/ticket/\{ticket_id\}$", _CONDITIONAL),
    # Every other write that moves the ticket's version takes If-Match too (a merge also
    # names a ticket that must exist and may be refused, 400).
    (r"^POST /api/v2/ticketing/ticket/\{ticket_id\}/(merge|reopen|escalate|products)$", _CONDITIONAL),
    (r"^DELETE /api/v2/ticketing/ticket/\{ticket_id\}/products/\{sku\}$", _CONDITIONAL),
    (r"^POST /api/v2/ticketing/ticket/\{ticket_id\}/(watchers|approvals)$", _REFUSED),
    (r"^POST /api/v2/ticketing/ticket/(list|notifications)$", _REFUSED),
    (r"^GET /api/v2/ticketing/ticket/notification/list$", _REFUSED),
    # Exactly one of `ids`, `all` or `before`, which the schema leaves open: a body with
    # none of them (or no body) is 400 INVALID_BODY.
    (r"^PUT /api/v2/ticketing/ticket/notification/read$", _REFUSED),
    # Saved views: a filter (as above), a team view without its team, sharing rules.
    (r"^(POST|PATCH) /api/v2/ticketing/views(/\{view_id\})?$", _REFUSED),
    # A well-formed `after_id` minted before the retention window: 410 CURSOR_EXPIRED; one
    # of a time still to come (past the clock skew allowed): 400 INVALID_QUERY.
    (r"^GET /(api/)?v2/system/events$", '["2xx", "400", "401", "403", "404", "410"]'),
    # Last, for every other write: the fuzzer sends the same few `Idempotency-Key` values
    # ("0") with different requests, which is 422 IDEMPOTENCY_KEY_REUSED by design.
    (r"^(POST|PUT|PATCH|DELETE) ", '["2xx", "401", "403", "404", "409", "422", "429"]'),
)


def _config(world: dict[str, list[str]], acme: World) -> str:
    """schemathesis.toml: dictionaries of real objects for path parameters and body
    references, the caller's tenant headers."""
    lines = []
    for name, values in world.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines += [
        "[dictionaries.tenant]",
        f'values = ["{acme.tenant.id}"]',
        "[dictionaries.realm]",
        f'values = ["{acme.realm.name}"]',
        "[dictionaries.support]",
        'values = ["false"]',
        "",
        "[parameters]",
        # Always the caller's own tenant: a random tenant id stops every request at 404
        # TENANT_NOT_FOUND before it reaches the view (tests/tenants covers those answers;
        # missing_required_header still drops each header).
        '"header.x-tenantid" = { dictionary = "tenant", probability = 1.0 }',
        '"header.realmname" = { dictionary = "realm", probability = 1.0 }',
        '"header.issupportrequest" = { dictionary = "support", probability = 1.0 }',
        '"path.ticket_id" = { dictionary = "tickets", probability = 0.5 }',
        '"path.approval_id" = { dictionary = "approvals", probability = 0.5 }',
        '"path.notification_id" = { dictionary = "notifications", probability = 0.5 }',
        '"path.user" = { dictionary = "users", probability = 0.5 }',
        '"path.sku" = { dictionary = "skus", probability = 0.5 }',
        '"path.view_id" = { dictionary = "views", probability = 0.5 }',
        '"body.into" = { dictionary = "tickets", probability = 0.8 }',
        '"body.parent" = { dictionary = "tickets", probability = 0.5 }',
        '"body.user" = { dictionary = "users", probability = 0.8 }',
        '"body.approver" = { dictionary = "users", probability = 0.8 }',
        '"body.assignee" = { dictionary = "users", probability = 0.5 }',
        '"body.requester" = { dictionary = "users", probability = 0.5 }',
        "",
    ]
    for name, statuses in REFUSED_BY_DESIGN:
        lines += [
            "[[operations]]",
            f"include-name-regex = '{name}'",
            f"checks.positive_data_acceptance.expected-statuses = {statuses}",
            "",
        ]
    return "\n".join(lines) + "\n"


def _credentials(role: str, acme: World) -> str:
    if role == "agent":
        return f"Authorization: Bearer {acme.token('alice')}"
    if role == "user":
        return f"Authorization: Bearer {acme.token('bob')}"
    _, key = create_api_key(tenant=acme.tenant, name="contract test")
    # The `Authorization: ApiKey` form, so schemathesis's auth checks (which drop or spoil the
    # Authorization header) see it; `X-API-Key` has its own tests in tests/events.
    return f"Authorization: ApiKey {key}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("role", ["agent", "user", "partner"])
def test_served_schema_holds_for_every_kind_of_caller(
    role: str, server: ServerProcess, acme: World, globex: World, tmp_path: Path
) -> None:
    world = _build_world(server, acme, globex)
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(world, acme))
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{server.url}/api/schema/",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-response-time",
        "5",
        "--request-timeout",
        "10",
        "--workers",
        "1",
        "--seed",
        "20261202",
        "--exclude-path-regex",
        "/sse(/|$)|/views/counts/stream",
        "--header",
        _credentials(role, acme),
        # Also as CLI headers (see the module docstring).
        "--header",
        f"x-tenantid: {acme.tenant.id}",
        "--header",
        f"realmname: {acme.realm.name}",
        "--no-color",
        "--generation-database",
        "none",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    assert result.returncode == 0, (
        f"schemathesis found problems as {role}:\n{result.stdout[-20000:]}{result.stderr[-3000:]}"
    )
