"""The OpenAPI schema is complete and generates cleanly: no drf-spectacular warning or
error, every API route of the URL conf documented, the callers' headers and security
schemes, the envelopes, the statuses, the SSE streams and the websocket."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from django.urls import URLPattern, URLResolver, get_resolver

from tests.conftest import ROOT, ServerProcess

API_PREFIXES = ("api/v2/", "v2/system/")


def _generate(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    target = tmp_path / "schema.yaml"
    env = {**os.environ, "DEBUG": "1", "SECRET_KEY": os.environ.get("SECRET_KEY", "schema-test")}
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(target)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    schema = yaml.safe_load(target.read_text()) if target.exists() else {}
    return result, schema


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    return _generate(tmp_path_factory.mktemp("schema"))


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]


def _routes(patterns: list[Any], prefix: str = "") -> list[str]:
    routes = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            routes += _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            routes.append(route)
    return routes


def test_schema_generates_without_any_warning_or_error(generated: tuple) -> None:
    result, schema = generated
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "Warning" not in output and "Error" not in output, output[-5000:]
    assert schema["openapi"].startswith("3.")


def test_every_api_route_of_the_url_conf_is_documented(generated: tuple) -> None:
    _, schema = generated
    documented = {path.lstrip("/").replace("{", "<").replace("}", ">") for path in schema["paths"]}
    routes = {
        re.sub(r"<\w+:", "<", route)  # <str:ticket_id>, <sku:sku>: the parameter's name only
        for route in _routes(get_resolver().url_patterns)
        if route.startswith(API_PREFIXES) and "<path>" not in route
    }
    assert routes, "no API routes found"
    assert routes <= documented, sorted(routes - documented)


def test_security_schemes_are_bearer_jwt_and_both_partner_key_forms(generated: tuple) -> None:
    _, schema = generated
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["partnerApiKey"] | {"description": ""} == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "",
    }
    assert schemes["partnerApiKeyAuthorization"]["name"] == "Authorization"
    events = schema["paths"]["/v2/system/events"]["get"]
    # Any one of them (a list of alternatives), not all three at once.
    assert events["security"] == [{"bearerAuth": []}, {"partnerApiKey": []}, {"partnerApiKeyAuthorization": []}]
    ticket = schema["paths"]["/api/v2/ticketing/ticket"]["post"]
    assert ticket["security"] == [{"bearerAuth": []}]


def test_every_ticketing_operation_takes_the_tenant_headers(generated: tuple) -> None:
    _, schema = generated
    for path, method, op in _operations(schema):
        headers = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "header"}
        if path.startswith("/api/v2/ticketing/"):
            assert headers["x-tenantid"]["required"] is True, (method, path)
            assert headers["x-tenantid"]["schema"]["format"] == "uuid"
            assert headers["realmname"]["required"] is True, (method, path)
            assert "issupportrequest" in headers, (method, path)
        else:
            assert set(headers) >= {"x-tenantid", "realmname"}, (method, path)
            assert not headers["x-tenantid"].get("required"), "an API key needs no tenant header"


def test_errors_use_the_error_envelope_and_successes_the_success_envelope(generated: tuple) -> None:
    _, schema = generated
    components = schema["components"]["schemas"]
    assert set(components["ErrorEnvelope"]["properties"]) == {"success", "error", "timestamp"}
    assert set(components["ErrorBody"]["properties"]) == {"code", "message", "details"}
    assert set(components["TicketEnvelope"]["properties"]) >= {"success", "data", "timestamp"}
    for path, method, op in _operations(schema):
        for status, response in op["responses"].items():
            content = response.get("content", {})
            if status.startswith(("4", "5")):
                ref = content["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorEnvelope", (method, path, status)
            elif status == "200" and "text/event-stream" not in content and "/system/events" not in path:
                ref = content["application/json"]["schema"]["$ref"]
                assert ref.endswith("Envelope"), (method, path, ref)


def test_every_operation_lists_the_statuses_any_caller_can_get(generated: tuple) -> None:
    _, schema = generated
    for path, method, op in _operations(schema):
        statuses = set(op["responses"])
        assert {"400", "401", "403", "404", "503"} <= statuses, (method, path, statuses)
        if method in ("post", "put", "patch"):
            assert {"413", "415"} <= statuses, (method, path, statuses)
        assert any(s.startswith("2") for s in statuses), (method, path)
    assert "410" in schema["paths"]["/v2/system/events"]["get"]["responses"]
    assert "422" in schema["paths"]["/api/v2/ticketing/ticket/list"]["post"]["responses"]
    assert "204" in schema["paths"]["/api/v2/ticketing/ticket/{ticket_id}"]["delete"]["responses"]


def test_streams_are_event_streams_with_their_event_types_described(generated: tuple) -> None:
    _, schema = generated
    streams = {
        ("/api/v2/ticketing/ticket/sse/list/updates", "post"): ("snapshot", "created", "updated", "deleted"),
        ("/api/v2/ticketing/ticket/sse/notifications", "get"): ("notification", "count"),
    }
    for (path, method), kinds in streams.items():
        op = schema["paths"][path][method]
        ok = op["responses"]["200"]
        assert list(ok["content"]) == ["text/event-stream"], path
        text = op["description"] + ok["description"]
        for kind in (*kinds, "connected", "heartbeat", "error"):
            assert f"`{kind}" in text, (path, kind)
        assert "429" in op["responses"] and "503" in op["responses"]
        assert any(p["name"] == "Last-Event-ID" for p in op["parameters"])


def test_description_documents_the_partner_websocket(generated: tuple) -> None:
    _, schema = generated
    description = schema["info"]["description"]
    assert "/v2/system/events/ws" in description
    for code in ("4401", "4403", "4404", "4400", "4408", "4410", "1012"):
        assert code in description
    assert '"action": "subscribe"' in description


def test_request_bodies_refuse_unknown_fields_as_the_server_does(generated: tuple) -> None:
    _, schema = generated
    components = schema["components"]["schemas"]
    for name in ("TicketWriteRequest", "TicketListBodyRequest", "CommentWriteRequest", "SlaPolicyRequest"):
        assert components[name]["additionalProperties"] is False, name
    assert components["TicketListBodyRequest"]["properties"]["top"]["maximum"] == 200


def test_the_running_server_serves_the_same_schema(server: ServerProcess, generated: tuple) -> None:
    _, schema = generated
    response = httpx.get(f"{server.url}/api/schema/", timeout=10)
    assert response.status_code == 200
    served = yaml.safe_load(response.text)
    assert set(served["paths"]) == set(schema["paths"])
    assert served["components"]["securitySchemes"] == schema["components"]["securitySchemes"]


# Every error code the code raises with a status, literally: `ApiError(404, "TICKET_NOT_FOUND", ...`
# (also split over lines) and DatabaseUnavailable's `__init__(503, "SERVICE_UNAVAILABLE", ...`.
RAISED_CODE = re.compile(r'(?:ApiError|__init__)\(\s*(\d{3}),\s*"([A-Z][A-Z_]+)"')
# core.errors' answer to a DRF ValidationError, which no view lets through (see
# config.openapi.ERROR_CODES); documenting it would promise clients a code they never get.
# And the codes an open stream ends with when its credential or its page's origin stops
# holding (events.sse, events.consumers): `error` frames and close reasons, never a response.
NEVER_ANSWERED = {"VALIDATION_ERROR", "SESSION_ENDED", "ACCESS_CHANGED", "ORIGIN_NOT_ALLOWED"}


def _codes_the_code_raises() -> dict[int, set[str]]:
    raised: dict[int, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        top = path.relative_to(ROOT).parts[0]
        if top.startswith(".") or top in {"tests", "node_modules"}:
            continue
        for status, code in RAISED_CODE.findall(path.read_text()):
            raised[int(status)].add(code)
    return raised


def test_the_schema_lists_every_error_code_the_code_raises_and_no_other(generated: tuple) -> None:
    """The per-status code lists are checked against the source, so a new code (or one
    that is gone) fails here instead of leaving the documented contract stale."""
    from config.openapi import ERROR_CODES
    from core.errors import STATUS_CODES

    raised = _codes_the_code_raises()
    assert raised[401] and raised[404], "the scan found no raised codes"
    for status, documented in ERROR_CODES.items():
        must = raised[status] - NEVER_ANSWERED
        may = must | {STATUS_CODES[status]}  # the code of a bare status (Http404, DRF's 406/415 ...)
        assert must <= set(documented), (status, sorted(must - set(documented)))
        assert set(documented) <= may, (status, sorted(set(documented) - may))
        assert len(set(documented)) == len(documented), (status, documented)

    _, schema = generated
    descriptions: dict[str, str] = defaultdict(str)
    for _, _, op in _operations(schema):
        for status, response in op["responses"].items():
            descriptions[status] += response.get("description", "")
    for status, documented in ERROR_CODES.items():
        for code in documented:
            assert f"`{code}`" in descriptions[str(status)], (status, code)
