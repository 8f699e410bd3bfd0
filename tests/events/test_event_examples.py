"""docs/events.md shows one real event of each ticket type. A partner builds its parser
from them, so each example must have the fields the service records today, no more and no
fewer: the examples' shapes (the keys at every level) are compared with the events of the
same life of a ticket made through the running server and read from the partner API."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from tests.builders import World

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
API = "/api/v2/ticketing"


def documented_examples() -> dict[str, dict[str, Any]]:
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", DOC.read_text(), flags=re.DOTALL)]
    return {example["type"]: example for example in examples if "type" in example}


def shape(value: Any) -> Any:
    """The keys at every level of `value` (a list by its first item); None and scalars
    alike, since an example's `null` may be another event's object."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def differences(documented: Any, recorded: Any, path: str = "") -> list[str]:
    if isinstance(documented, dict) and isinstance(recorded, dict):
        found = [f"{path}.{key}: recorded, not documented" for key in recorded.keys() - documented.keys()]
        found += [f"{path}.{key}: documented, not recorded" for key in documented.keys() - recorded.keys()]
        for key in documented.keys() & recorded.keys():
            found += differences(documented[key], recorded[key], f"{path}.{key}")
        return found
    if isinstance(documented, list) and isinstance(recorded, list) and documented and recorded:
        return differences(documented[0], recorded[0], f"{path}[0]")
    return []  # a null against an object, or an empty list: the values differ, not the shape


def call(server, world: World, user: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    response = httpx.request(method, f"{server.url}{API}/{path}", headers=world.headers(user), json=body, timeout=15)
    assert response.status_code < 300, (method, path, response.status_code, response.text[:300])
    return response.json().get("data") or {} if response.content else {}


def test_each_example_has_the_fields_of_a_recorded_event_of_its_type(server, acme: World):
    parent = call(server, acme, "alice", "POST", "ticket", {"subject": "Office move"})
    ticket = call(
        server,
        acme,
        "bob",
        "POST",
        "ticket",
        {
            "subject": "Unable to access VPN",
            "description": "Since this morning.",
            "priority": "high",
            "category": "Network",
        },
    )
    tid = ticket["id"]
    change = {"team": "operation", "customer": "Acme Corp", "parent": parent["id"]}
    call(server, acme, "alice", "PATCH", f"ticket/{tid}", change)
    call(server, acme, "alice", "PATCH", f"ticket/{tid}", {"assignee": str(acme.users["alice"].id)})
    call(server, acme, "alice", "PATCH", f"ticket/{tid}", {"status": "closed"})
    call(server, acme, "alice", "POST", f"ticket/{tid}/reopen")
    call(server, acme, "alice", "PATCH", f"ticket/{tid}", {"status": "cancelled"})
    call(server, acme, "alice", "POST", f"ticket/{tid}/comments", {"body": "Resetting the VPN profile now."})
    call(server, acme, "alice", "POST", f"ticket/{tid}/products", {"sku": "VPN-TOKEN", "name": "Hardware VPN token"})
    call(server, acme, "alice", "DELETE", f"ticket/{tid}/products/VPN-TOKEN")
    call(server, acme, "admin", "DELETE", f"ticket/{tid}")

    response = httpx.get(f"{server.url}/v2/system/events?limit=1000", headers=acme.headers("alice"), timeout=15)
    assert response.status_code == 200, response.text
    recorded: dict[str, dict[str, Any]] = {}
    for event in response.json()["result"]:
        if event["payload"].get("ticket", {}).get("id") == tid:
            recorded.setdefault(event["type"], event)

    examples = documented_examples()
    assert len(examples) >= 10 and set(examples) <= set(recorded), (sorted(examples), sorted(recorded))
    wrong = {
        kind: found
        for kind, example in examples.items()
        if (found := differences(shape(example), shape(recorded[kind]), kind))
    }
    assert not wrong, json.dumps(wrong, indent=1)
